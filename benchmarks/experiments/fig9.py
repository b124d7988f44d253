"""Fig. 9: faces re-rendered in 3D from a per-pixel depth field, the estimate beside the ground truth.

    python -m benchmarks.run fig9 --source synthetic          (drawn by benchmarks.experiments.depth)

The paper shows "3D renderings obtained using estimated depth values". We build them with our own z-buffer
(``densereg.geometry.rasterize``): every foreground pixel of a face becomes a vertex ``(column, row, relief·z)``,
neighbouring pixels are joined into triangles, the surface is turned about the vertical axis (:data:`YAW`) and
rasterised with Lambertian shading from per-pixel normals. The regressed UV is carried along as a texture (a
checkerboard of :data:`CHECKS` squares per UV axis), so the rendering shows the dense correspondence on the
recovered surface too. The squares are deliberately not 1/K wide: their edges would coincide with the bin
edges of the K = 10 decode, the values it reaches least often, and thin lines there would mostly vanish.

Normalised depth has no metric scale (it spans [0, 1] over each face), so both renderings of a face use one
relief: :data:`RELIEF` × the larger side of its ground-truth foreground box, the ratio of depth to width of a
face seen from the front. The estimate and the ground truth of a face are therefore drawn with equal scale,
pose and light, and differ only by their depth (and UV, and foreground) fields.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from densereg.data.formats import atomic_write_bytes
from densereg.geometry import rasterize as raster

YAW = 40.0          # degrees the surface is turned about the vertical axis (a three-quarter view)
RELIEF = 0.6        # depth span of a face in units of the larger side of its foreground box
MAX_STEP = 0.08     # a larger depth step (in units of the face's range) between neighbouring pixels is an edge
LIGHT = np.array([-0.4, 0.5, 1.0]) / np.linalg.norm([-0.4, 0.5, 1.0])   # (x right, y up, z to the viewer)
SKIN, CHECK, BACKGROUND = np.array([0.86, 0.80, 0.74]), np.array([0.55, 0.62, 0.86]), 1.0
CHECKS = 12         # checkerboard squares per UV axis on the rendered surface


def pixel_mesh(mask: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    """``(rows, cols)`` of the foreground pixels (the vertices, row-major) and the ``(T, 3)`` triangles joining
    them: two per 2×2 block of pixels, each kept when its three corners are foreground."""
    mask = np.asarray(mask, bool)
    index = np.full(mask.shape, -1, np.int64)
    rows, cols = np.nonzero(mask)
    index[rows, cols] = np.arange(rows.size)
    a, b = index[:-1, :-1], index[:-1, 1:]      # top-left, top-right
    c, d = index[1:, :-1], index[1:, 1:]        # bottom-left, bottom-right
    tris = [np.stack([a, b, c], -1).reshape(-1, 3), np.stack([b, d, c], -1).reshape(-1, 3),
            np.stack([a, b, d], -1).reshape(-1, 3), np.stack([a, d, c], -1).reshape(-1, 3)]
    # Where all four are present the first two triangles tile the block; the other two diagonal halves are
    # only for blocks with exactly three corners (so a face's edge is not left ragged).
    full = ((a >= 0) & (b >= 0) & (c >= 0) & (d >= 0)).reshape(-1)
    keep = [full, full] + [~full, ~full]
    out = np.concatenate([t[k & (t >= 0).all(1)] for t, k in zip(tris, keep)])
    return (rows, cols), out


def _slope(z: np.ndarray, axis: int) -> np.ndarray:
    """∂z along ``axis``: central differences, one-sided where a neighbour is background (NaN), 0 where both are."""
    ahead = np.roll(z, -1, axis)
    behind = np.roll(z, 1, axis)
    edge = [slice(None)] * 2
    edge[axis] = -1
    ahead[tuple(edge)] = np.nan
    edge[axis] = 0
    behind[tuple(edge)] = np.nan
    fwd, bwd = ahead - z, z - behind
    both = np.isfinite(fwd) & np.isfinite(bwd)
    return np.where(both, (fwd + bwd) / 2, np.where(np.isfinite(fwd), fwd, np.where(np.isfinite(bwd), bwd, 0.0)))


def normals(z: np.ndarray) -> np.ndarray:
    """``H×W×3`` unit normals ``(x right, y up, z to the viewer)`` of the height field ``z`` (pixel units, NaN
    off the surface): one-sided differences at the surface's edge, so no slope is made up across it."""
    z = np.asarray(z, np.float64)
    # y up = −row, so ∂z/∂y = −∂z/∂row; the normal of z(x, y) is (−∂z/∂x, −∂z/∂y, 1).
    n = np.stack([-_slope(z, 1), _slope(z, 0), np.ones_like(z)], -1)
    return n / np.linalg.norm(n, axis=-1, keepdims=True)


def relief(depth: np.ndarray, mask: np.ndarray, scale: float, u: np.ndarray | None = None,
           v: np.ndarray | None = None, yaw: float = YAW) -> np.ndarray:
    """An ``H×W×3`` float image in [0, 1]: the depth field as a shaded surface turned by ``yaw`` degrees.

    Args:
        depth: ``H×W`` normalised depth (larger = closer), used where ``mask`` and finite.
        mask: ``H×W`` bool pixels of the surface.
        scale: pixels per unit of normalised depth (the relief).
        u, v: optional ``H×W`` UV drawn as a checkerboard texture on the surface.
        yaw: rotation about the vertical axis through the surface's centroid, degrees (positive: the
            surface's right side turns away from the viewer).
    """
    h, w = depth.shape
    fg = np.asarray(mask, bool) & np.isfinite(depth)
    canvas = np.full((h, w, 3), BACKGROUND)
    if fg.sum() < 3:
        return canvas
    z = np.where(fg, depth * scale, np.nan)
    (rows, cols), tris = pixel_mesh(fg)
    zv = z[rows, cols]
    # A depth jump between neighbouring pixels is an occluding edge (the jaw over the neck), not a surface: no
    # triangle spans it, or it would be drawn as a curtain.
    tris = tris[np.ptp(zv[tris], axis=1) <= MAX_STEP * scale]
    if not len(tris):
        return canvas
    n = normals(z)[rows, cols]
    x, zz = cols.astype(np.float64), zv.astype(np.float64)
    cx, cz = x.mean(), zz.mean()
    t = np.radians(yaw)
    xr = cx + (x - cx) * np.cos(t) + (zz - cz) * np.sin(t)
    zr = -(x - cx) * np.sin(t) + (zz - cz) * np.cos(t)
    nr = np.stack([n[:, 0] * np.cos(t) + n[:, 2] * np.sin(t), n[:, 1],
                   -n[:, 0] * np.sin(t) + n[:, 2] * np.cos(t)], -1)
    shade = 0.25 + 0.75 * np.clip(nr @ LIGHT, 0.0, 1.0)
    attrs = [shade]
    if u is not None and v is not None:
        attrs += [np.asarray(u, np.float64)[rows, cols], np.asarray(v, np.float64)[rows, cols]]
    r = raster.rasterize(np.stack([xr, rows.astype(np.float64), zr], -1), tris, np.stack(attrs, -1), h, w)
    lit = r.attr[..., 0][..., None] * SKIN
    if len(attrs) == 3:
        uu, vv = np.nan_to_num(r.attr[..., 1]), np.nan_to_num(r.attr[..., 2])
        odd = ((np.floor(uu * CHECKS) + np.floor(vv * CHECKS)) % 2 == 1)[..., None]
        lit = np.where(odd, r.attr[..., 0][..., None] * CHECK, lit)
    canvas[r.mask] = np.clip(lit[r.mask], 0.0, 1.0)
    return canvas


def view_yaw(depth: np.ndarray, mask: np.ndarray, scale: float) -> float:
    """The yaw (±:data:`YAW`) that turns a surface towards the viewer: against the mean sideways tilt of its
    normals, so a face already seen from its side is shown nearer the front rather than edge-on."""
    fg = np.asarray(mask, bool) & np.isfinite(depth)
    if not fg.any():
        return YAW
    sideways = normals(np.where(fg, depth * scale, np.nan))[fg][:, 0].mean()
    return -YAW if sideways > 0 else YAW


def face_relief_scale(gt_mask: np.ndarray) -> float:
    """Pixels per unit of normalised depth for a face: :data:`RELIEF` × the larger side of its GT box."""
    rows, cols = np.nonzero(gt_mask)
    if rows.size == 0:
        return 1.0
    return RELIEF * max(np.ptp(rows) + 1, np.ptp(cols) + 1)


def draw_figure(path: Path, panels: list[dict], title: str) -> Path:
    """Fig. 9 as one PNG (written atomically): per face, the image, the ground-truth rendering, the rendering
    from the estimated depth, and the per-pixel absolute depth error.

    Args:
        panels: dicts with ``image`` (crop), ``gt`` and ``est`` (renderings, ``H×W×3`` in [0, 1]), ``error``
            (``H×W`` absolute depth error, NaN off the GT foreground) and ``caption`` (that face's errors).
        title: names the data source, preset and checkpoint.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heads = ("image", "GT depth + UV, in 3D", "estimated depth + UV, in 3D", "|depth error| (face's range)")
    fig, axes = plt.subplots(len(panels), 4, figsize=(9, 2.3 * len(panels) + 0.9), squeeze=False,
                             layout="constrained")
    for r, p in enumerate(panels):
        for c, key in enumerate(("image", "gt", "est", "error")):
            ax = axes[r, c]
            if key == "error":
                im = ax.imshow(p[key], cmap="magma", vmin=0.0, vmax=0.2, interpolation="nearest")
            else:
                ax.imshow(p[key], interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(heads[c], fontsize=8)
        axes[r, 0].set_ylabel(p["caption"], fontsize=7)
    fig.colorbar(im, ax=axes[-1, :].tolist(), orientation="horizontal", fraction=0.05, shrink=0.5,
                 label="|estimated − GT depth|, in units of the face's depth range (errors > 0.2 and "
                       "face pixels not estimated: the top colour)")
    fig.suptitle(title, fontsize=9)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return path
