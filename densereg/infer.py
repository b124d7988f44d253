"""Inference: images → per-pixel UV fields (``UVMap``), and Fig. 8-style panels.

    python -m densereg.infer IMAGE... --checkpoint runs/synthetic/densereg-cpu/last.pt --out DIR

Any image size works: each image is padded to a multiple of the network's output stride (so trunk features
stay aligned with pixels), run in batches under ``torch.inference_mode``, decoded at the padded size and
cropped back. ``image_scale`` (from the training config unless given) resizes inputs first, as in training.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from densereg import datasets


@dataclass
class UVMap:
    """The dense estimate for one image, at the image's resolution.

    Attributes:
        u, v: ``H×W`` float32, NaN on background (eq. 3 decode, ``q + r``).
        u_q, v_q: bin-centre decode only (the ``q`` rows of the K ablation).
        fg_prob: ``H×W`` foreground probability; ``mask`` = ``fg_prob > 0.5``.
        depth: ``H×W`` normalised depth or None when the model has no depth head.
    """

    u: np.ndarray
    v: np.ndarray
    u_q: np.ndarray
    v_q: np.ndarray
    fg_prob: np.ndarray
    mask: np.ndarray
    depth: np.ndarray | None = None


def _pad_to(image: np.ndarray, multiple: int) -> np.ndarray:
    h, w = image.shape[:2]
    ph, pw = -h % multiple, -w % multiple
    if ph == 0 and pw == 0:
        return image
    return cv2.copyMakeBorder(image, 0, ph, 0, pw, cv2.BORDER_REFLECT_101 if min(h, w) > 1 else cv2.BORDER_CONSTANT)


def predict(model, images, batch_size: int = 8, image_scale: float = 1.0, device=None) -> list[UVMap]:
    """Dense UV estimates for a list of ``H×W×3`` uint8 RGB images (any sizes).

    Args:
        model: a ``DenseRegNet`` (put in eval mode here).
        images: a list of images or a single image.
        batch_size: images per forward pass (images of equal padded size are batched together).
        image_scale: resize factor applied before the network (use the training config's ``image_scale``);
            outputs are resized back to each image's own size.
        device: torch device; default the model's.
    """
    single = isinstance(images, np.ndarray) and images.ndim == 3
    images = [images] if single else list(images)
    model.eval()
    device = device or next(model.parameters()).device
    stride = model.output_stride
    prepared = []
    for img in images:
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"expected H×W×3 uint8 RGB, got {img.dtype} {img.shape}")
        if image_scale != 1.0:
            h, w = img.shape[:2]
            img = cv2.resize(img, (max(1, round(w * image_scale)), max(1, round(h * image_scale))),
                             interpolation=cv2.INTER_AREA if image_scale < 1 else cv2.INTER_LINEAR)
        prepared.append((img.shape[:2], _pad_to(img, stride)))
    results: list[UVMap | None] = [None] * len(images)
    order = sorted(range(len(images)), key=lambda i: prepared[i][1].shape[:2])
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            groups: dict[tuple, list[int]] = {}
            for i in chunk:
                groups.setdefault(prepared[i][1].shape[:2], []).append(i)
            for shape, idx in groups.items():
                x = torch.from_numpy(np.stack([prepared[i][1] for i in idx])).permute(0, 3, 1, 2).to(device)
                out = model.decode(model(x, upsample=False), size=shape)
                out = {k: v.float().cpu().numpy() for k, v in out.items()}
                for j, i in enumerate(idx):
                    (h, w), orig = prepared[i][0], images[i].shape[:2]
                    fields = {k: out[k][j, :h, :w] for k in out}
                    results[i] = _to_uvmap(fields, orig)
    return results[0] if single else results


def _to_uvmap(fields: dict, size: tuple[int, int]) -> UVMap:
    """Resize decoded fields back to the original image size (nearest for UV: no blending with NaN)."""
    h, w = size

    def fit(a, interp=cv2.INTER_NEAREST):
        a = a.astype(np.float32)
        return a if a.shape == (h, w) else cv2.resize(a, (w, h), interpolation=interp)

    fg = fit(fields["fg_prob"], cv2.INTER_LINEAR)
    mask = fg > 0.5
    get = lambda k: np.where(mask, fit(fields[k]), np.nan).astype(np.float32)  # noqa: E731
    return UVMap(u=get("u"), v=get("v"), u_q=get("u_q"), v_q=get("v_q"), fg_prob=fg, mask=mask,
                 depth=get("depth") if "depth" in fields else None)


def uv_to_rgb(u: np.ndarray, v: np.ndarray | None = None) -> np.ndarray:
    """Colour-code a UV channel (or two) for display: jet colormap, black background."""
    import matplotlib

    cmap = matplotlib.colormaps["jet"]
    rgb = (cmap(np.nan_to_num(u, nan=0.0))[..., :3] * 255).astype(np.uint8)
    rgb[~np.isfinite(u)] = 0
    return rgb


def panel(image: np.ndarray, est: UVMap, gt=None) -> np.ndarray:
    """A Fig. 8-style strip: input, estimated u, estimated v, and GT u, v when known."""
    tiles = [image, uv_to_rgb(est.u), uv_to_rgb(est.v)]
    if gt is not None:
        tiles += [uv_to_rgb(gt.u), uv_to_rgb(gt.v)]
    return np.concatenate(tiles, axis=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m densereg.infer", description="Dense UV estimates.")
    parser.add_argument("images", nargs="+", type=Path)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--image-scale", type=float, default=None, help="default: the training config's")
    args = parser.parse_args(argv)
    from densereg import groundtruth
    from densereg.train import load_model

    model, cfg = load_model(args.checkpoint)
    scale = args.image_scale if args.image_scale is not None else cfg.image_scale
    args.out.mkdir(parents=True, exist_ok=True)
    for path in args.images:
        image = datasets.read_image(path)
        est = predict(model, image, image_scale=scale)
        gt = None
        fitting = path.with_suffix(".mat")
        if fitting.is_file():   # the synthetic benchmark and 300W-LP keep the fitting beside the image
            gt = groundtruth.render_fitting(datasets.read_fitting(fitting), *image.shape[:2])
        out = args.out / f"{path.stem}_densereg.png"
        datasets.write_image(out, panel(image, est, gt))
        print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
