"""Inference: images → per-pixel UV fields (``UVMap``), and Fig. 8-style panels.

    python -m densereg.readout.forward IMAGE... --checkpoint runs/synthetic/densereg-cpu/last.pt --out DIR
    python -m densereg.readout.forward --bench [--size 300] [--batch 1] [--bf16] [--csv results/speed.csv]

Any image size works: each image is padded to a multiple of the network's output stride (so trunk features
stay aligned with pixels), run in batches under ``torch.inference_mode``, decoded at the padded size and
cropped back. ``image_scale`` (from the training config unless given) resizes inputs first, as in training.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from densereg.data import formats


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


def prepare_image(img: np.ndarray, stride: int, image_scale: float = 1.0) -> tuple[tuple[int, int], np.ndarray]:
    """Check, rescale by ``image_scale`` and pad an image to a multiple of ``stride``.

    Returns:
        ``((h, w), padded)``: the size after rescaling (the valid part of the padded image) and the image.
    """
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected H×W×3 uint8 RGB, got {img.dtype} {img.shape}")
    if image_scale != 1.0:
        h, w = img.shape[:2]
        img = cv2.resize(img, (max(1, round(w * image_scale)), max(1, round(h * image_scale))),
                         interpolation=cv2.INTER_AREA if image_scale < 1 else cv2.INTER_LINEAR)
    return img.shape[:2], _pad_to(img, stride)


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
    prepared = [prepare_image(img, stride, image_scale) for img in images]
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


BENCH_MODELS = {  # name -> DenseRegNet arguments; "cpu" is the cpu training preset's network
    "cpu (resnet18 w32 OS8)": dict(backbone="resnet18", width=32, output_stride=8),
    "resnet18 OS8": dict(backbone="resnet18", output_stride=8),
    "resnet50 OS8": dict(backbone="resnet50", output_stride=8),
    "resnet101 OS8 (paper)": dict(backbone="resnet101", output_stride=8),
}


def benchmark(size: int = 300, batch: int = 1, repeats: int = 5, bf16: bool = False) -> list[dict]:
    """Inference images/s of each ``BENCH_MODELS`` network at ``size×size`` on the current device.

    Times forward + decode at input resolution (what ``predict`` does), after one warm-up batch.
    """
    import time

    import platform

    from densereg.nn.model import DenseRegNet

    device = "cuda" if torch.cuda.is_available() else "cpu"
    where = (f"cuda: {torch.cuda.get_device_name()}" if device == "cuda"
             else f"cpu: {platform.processor() or platform.machine()} ({os.cpu_count()} cores)")
    rows = []
    for name, kw in BENCH_MODELS.items():
        model = DenseRegNet(K=10, **kw).to(device).eval()
        x = torch.randint(0, 255, (batch, 3, size, size), dtype=torch.uint8, device=device)
        with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            model.decode(model(x, upsample=False), size=(size, size))
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(repeats):
                model.decode(model(x, upsample=False), size=(size, size))
            if device == "cuda":
                torch.cuda.synchronize()
        seconds = (time.perf_counter() - start) / repeats
        rows.append({"model": name, "size": size, "batch": batch, "bf16": bf16,
                     "images_per_s": round(batch / seconds, 2), "ms_per_image": round(1000 * seconds / batch, 1),
                     "threads": torch.get_num_threads(), "device": where})
        print(f"{name:<24s} {size}x{size} batch {batch}: {rows[-1]['images_per_s']:8.2f} images/s "
              f"({rows[-1]['ms_per_image']} ms/image)")
    return rows


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "--bench":
        bench = argparse.ArgumentParser(prog="python -m densereg.readout.forward --bench")
        bench.add_argument("--bench", action="store_true")
        bench.add_argument("--size", type=int, default=300)
        bench.add_argument("--batch", type=int, default=1)
        bench.add_argument("--bf16", action="store_true")
        bench.add_argument("--csv", type=Path, default=None, help="append the rows to this CSV")
        a = bench.parse_args(argv)
        rows = benchmark(a.size, a.batch, bf16=a.bf16)
        if a.csv:
            import csv
            import time

            old = list(csv.DictReader(a.csv.open())) if a.csv.exists() else []
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            tmp = a.csv.with_name(a.csv.name + ".tmp")
            with tmp.open("w", newline="") as f:   # rewrite + rename: never a half-written CSV
                writer = csv.DictWriter(f, list(rows[0]) + ["date"], extrasaction="ignore")
                writer.writeheader()
                writer.writerows(old + [{**row, "date": stamp} for row in rows])
            os.replace(tmp, a.csv)
        return 0
    parser = argparse.ArgumentParser(prog="python -m densereg.readout.forward", description="Dense UV estimates.")
    parser.add_argument("images", nargs="+", type=Path)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--image-scale", type=float, default=None, help="default: the training config's")
    args = parser.parse_args(argv)
    from densereg.data import groundtruth
    from densereg.nn.train import load_model

    model, cfg = load_model(args.checkpoint)
    scale = args.image_scale if args.image_scale is not None else cfg.image_scale
    args.out.mkdir(parents=True, exist_ok=True)
    for path in args.images:
        image = formats.read_image(path)
        est = predict(model, image, image_scale=scale)
        gt = None
        fitting = path.with_suffix(".mat")
        if fitting.is_file():   # the synthetic benchmark and 300W-LP keep the fitting beside the image
            gt = groundtruth.render_fitting(formats.read_fitting(fitting), *image.shape[:2])
        out = args.out / f"{path.stem}_densereg.png"
        formats.write_image(out, panel(image, est, gt))
        print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
