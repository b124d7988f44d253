"""Fig. 6: Helen test images beside their ground-truth parts and each method's, face-cropped, as one PNG.

    python -m benchmarks.run helen --method deeplab --source synthetic --figure

Drawn by ``benchmarks.experiments.segmentation`` once both methods have rows for a source and preset.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from benchmarks import records
from densereg.geometry.template import PARTS
from densereg.readout.parts import PART_COLOURS, colourise

FIGURE_IMAGES = 4


def figure_indices(n_samples: int, count: int = FIGURE_IMAGES) -> tuple[int, ...]:
    """Evenly spread sample indices for the figure (the same ones for every method)."""
    return tuple(int(i) for i in np.unique(np.linspace(0, n_samples - 1, min(count, n_samples)).round()))


def face_window(box: np.ndarray, shape: tuple[int, int], margin: float = 0.4) -> tuple[slice, slice]:
    """Rows and columns of a square window around a face box grown by ``margin`` per side, for display.

    The panel shows the face, as the paper's Fig. 6 does; the box only says where the face is.
    """
    x0, y0, x1, y1 = np.asarray(box, float)
    half = max(x1 - x0, y1 - y0) * (0.5 + margin)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    h, w = shape
    rows = slice(max(0, int(cy - half)), min(h, int(np.ceil(cy + half))))
    cols = slice(max(0, int(cx - half)), min(w, int(np.ceil(cx + half))))
    return rows, cols


def draw_figure(path: Path, panels: list[tuple], title: str, heads=("image", "GT", "DenseReg", "DeepLab-v2")) -> Path:
    """Fig. 6: one row per image with (image, GT, DenseReg, DeepLab-v2) parts, written atomically as PNG.

    Args:
        path: the PNG to write.
        panels: ``(image, gt, densereg, deeplab)`` per row; label images are ``H×W`` class ids.
        title: names the data source and preset.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    fig, axes = plt.subplots(len(panels), 4, figsize=(8, 2.1 * len(panels) + 0.9), squeeze=False)
    for r, row in enumerate(panels):
        for c, tile in enumerate(row):
            ax = axes[r, c]
            ax.imshow(tile if c == 0 else colourise(tile), interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(heads[c], fontsize=9)
    fig.legend(handles=[Patch(color=PART_COLOURS[i] / 255, label=name.replace("_", " "))
                        for i, name in enumerate(PARTS)], loc="lower center", ncol=4, fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.07, 1, 0.95))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    records.atomic_write_bytes(path, buffer.getvalue())
    return path


def write_figure(path: Path, samples: list, keep: tuple[int, ...], kept: dict,
                 predictions: dict[str, dict], title: str, names: dict | None = None) -> Path:
    """Fig. 6 for samples ``keep``: their image and GT (``kept[i][:2]``) and each method's labels, face-cropped.

    Args:
        predictions: ``{"densereg": {i: labels}, "deeplab": {i: labels}}``.
    """
    panels = []
    for i in keep:
        image, gt = kept[i][0], kept[i][1]
        window = face_window(samples[i].box, image.shape[:2])
        tiles = (image, gt, predictions["densereg"][i], predictions["deeplab"][i])
        panels.append(tuple(tile[window] for tile in tiles))
    names = names or {"densereg": "DenseReg", "deeplab": "DeepLab-v2"}
    return draw_figure(path, panels, title, ("image", "GT", names["densereg"], names["deeplab"]))
