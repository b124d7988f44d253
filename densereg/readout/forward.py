"""The batched forward pass: images of any kind and size → per-pixel UV fields (``UVMap``).

    python -m densereg.readout.forward --bench [--size 300] [--batch 1] [--bf16] [--csv results/speed.csv]

Any image size works: each image is resized by the model's training ``image_scale`` (read from its config by
the caller, never defaulted here), padded to a multiple of the network's output stride (so trunk features
stay aligned with pixels), run in batches under ``torch.inference_mode`` through the network's inference form
(BatchNorm folded into the convolutions, channels-last: ``densereg.nn.inference``, the fastest exact candidate
that ``benchmarks/experiments/speed.py`` measured), decoded at the padded size, cropped and resized back to the
image's own size. :func:`as_rgb` turns every accepted input kind (path, grey, RGBA,
menpo ``Image``, torch tensor) into the ``H×W×3`` uint8 RGB the network takes, with an error that names the
input when it cannot.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from densereg.data import formats
from densereg.nn.inference import inference_form
from densereg.nn.inputs import prepare_image


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


# ------------------------------------------------------------------------------------------------ inputs


def _describe(image) -> str:
    shape = getattr(image, "shape", None)
    dtype = getattr(image, "dtype", None)
    return f"{type(image).__name__}" + (f" {dtype} {tuple(shape)}" if shape is not None else "")


def _from_array(a: np.ndarray, what: str, channels_first: bool) -> np.ndarray:
    """H×W, H×W×C or (channels_first) C×H×W pixels → H×W×3 uint8; float values must lie in [0, 1]."""
    if a.ndim == 3 and channels_first:
        a = np.moveaxis(a, 0, -1)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4) or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{what}: expected H×W (grey), H×W×3 (RGB) or H×W×4 (RGBA) pixels, got shape {a.shape}")
    if a.dtype == np.uint8:
        pass
    elif np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
            raise ValueError(f"{what}: float pixels must be finite and in [0, 1] "
                             f"(got range {np.nanmin(a):.3g}..{np.nanmax(a):.3g}); pass uint8 for 0..255")
        a = np.round(a * 255).astype(np.uint8)
    else:
        raise ValueError(f"{what}: pixels must be uint8 (0..255) or float in [0, 1], got {a.dtype}")
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return np.ascontiguousarray(a[:, :, :3])     # RGBA: the alpha is dropped


def as_rgb(image, what: str = "image") -> np.ndarray:
    """One input of any accepted kind as ``H×W×3`` uint8 RGB.

    Accepted: a path (``str`` / ``os.PathLike``, read by ``densereg.data.formats.read_image``); a NumPy array
    ``H×W`` (grey), ``H×W×3`` (RGB) or ``H×W×4`` (RGBA, alpha dropped), uint8 or float in [0, 1]; a menpo
    ``Image`` (anything with ``.pixels``, channels-first float in [0, 1]; menpo is not imported); a torch
    tensor ``C×H×W`` or ``H×W×C`` (channels-first when the first axis has 1, 3 or 4 entries and the last does
    not; a 3-D tensor ambiguous that way is read channels-first, torch's convention).

    Raises:
        ValueError: the input is of an unsupported kind or shape; the message starts with ``what``.
        densereg.data.formats.DatasetError: a path that cannot be read or decoded (names the file).
    """
    if isinstance(image, (str, os.PathLike)):
        return formats.read_image(image)
    if isinstance(image, torch.Tensor):
        tensor = image.detach().cpu()
        if tensor.dtype in (torch.bfloat16, torch.float16):   # half precision: exact in float32, NumPy lacks bf16
            tensor = tensor.float()
        try:
            a = tensor.numpy()
        except (TypeError, RuntimeError) as exc:
            raise ValueError(f"{what}: unsupported torch tensor of dtype {tensor.dtype} ({exc})") from exc
        chw = a.ndim == 3 and a.shape[0] in (1, 3, 4) and (a.shape[2] not in (1, 3, 4) or a.shape[0] <= a.shape[2])
        return _from_array(a, f"{what} (torch tensor {tuple(a.shape)})", channels_first=chw)
    if isinstance(image, np.ndarray):
        return _from_array(image, f"{what} ({_describe(image)})", channels_first=False)
    pixels = getattr(image, "pixels", None)
    if isinstance(pixels, np.ndarray):              # a menpo Image: channels first, float in [0, 1]
        return _from_array(pixels, f"{what} ({type(image).__name__} with pixels {pixels.shape})",
                           channels_first=pixels.ndim == 3)
    raise ValueError(f"{what}: unsupported input {_describe(image)}; expected a path, an H×W(×3|×4) array, "
                     "a menpo Image or a torch tensor")


def as_batch(images) -> tuple[list[np.ndarray], bool]:
    """``(list of H×W×3 uint8 images, single)``: a list/tuple is a batch, anything else a single input."""
    if isinstance(images, (list, tuple)):
        return [as_rgb(img, f"input {i}") for i, img in enumerate(images)], False
    return [as_rgb(images, "input")], True


# ------------------------------------------------------------------------------------------------ forward


def predict(model, images, image_scale: float, batch_size: int = 8, device=None, then=None, workers: int = 0):
    """Dense UV estimates for ``H×W×3`` uint8 RGB images of any sizes (or ``then`` of each).

    Args:
        model: a ``DenseRegNet`` (put in eval mode here).
        images: a list of images, or a single ``H×W×3`` array (then a single ``UVMap`` is returned).
        image_scale: resize factor applied before the network; it must be the model's training config's
            ``image_scale`` (``DenseReg`` passes it; there is deliberately no default). Outputs are resized
            back to each image's own size.
        batch_size: images per forward pass (images of equal padded size are batched together).
        device: torch device; default the model's.
        then: a per-image read-out applied to each ``UVMap`` (e.g. ``find_faces``); its results are returned
            in place of the maps.
        workers: CPU threads for the per-image work after the network (the resize back to the image's size
            and ``then``). With ``workers`` > 0 that work of one batch runs while the next batch is on the
            network, which is what keeps a GPU busy; every image goes through the same functions, so the
            results are identical to ``workers=0`` (everything inline, the default).
    """
    single = isinstance(images, np.ndarray) and images.ndim == 3
    images = [images] if single else list(images)
    model.eval()
    device = device or next(model.parameters()).device
    net = inference_form(model)     # BatchNorm folded, channels-last: equal outputs, faster (see the module)
    stride = model.output_stride
    prepared = [prepare_image(img, stride, image_scale) for img in images]
    results: list = [None] * len(images)
    order = sorted(range(len(images)), key=lambda i: prepared[i][1].shape[:2])

    def finish(fields, size):
        uvmap = _to_uvmap(fields, size)
        return uvmap if then is None else then(uvmap)

    pool = ThreadPoolExecutor(workers, thread_name_prefix="densereg-readout") if workers > 0 else None
    with torch.inference_mode(), (pool or contextlib.nullcontext()):
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            groups: dict[tuple, list[int]] = {}
            for i in chunk:
                groups.setdefault(prepared[i][1].shape[:2], []).append(i)
            for shape, idx in groups.items():
                x = torch.from_numpy(np.stack([prepared[i][1] for i in idx])).permute(0, 3, 1, 2).to(device)
                out = net.decode(net(x, upsample=False), size=shape)
                out = {k: v.float().cpu().numpy() for k, v in out.items()}
                for j, i in enumerate(idx):
                    (h, w), orig = prepared[i][0], images[i].shape[:2]
                    fields = {k: out[k][j, :h, :w] for k in out}
                    results[i] = pool.submit(finish, fields, orig) if pool else finish(fields, orig)
        if pool:
            results = [r.result() for r in results]
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


# ------------------------------------------------------------------------------------------------ display


def uv_to_rgb(u: np.ndarray) -> np.ndarray:
    """Colour-code one UV channel for display: jet colormap, black background."""
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


# ------------------------------------------------------------------------------------------------ speed


BENCH_MODELS = {  # name -> DenseRegNet arguments; "cpu" is the cpu training preset's network
    "cpu (resnet18 w32 OS8)": dict(backbone="resnet18", width=32, output_stride=8),
    "resnet18 OS8": dict(backbone="resnet18", output_stride=8),
    "resnet50 OS8": dict(backbone="resnet50", output_stride=8),
    "resnet101 OS8 (paper)": dict(backbone="resnet101", output_stride=8),
}


def benchmark(size: int = 300, batch: int = 1, repeats: int = 5, bf16: bool = False) -> list[dict]:
    """Inference images/s of each ``BENCH_MODELS`` network at ``size×size`` on the current device.

    Times what ``predict`` runs, forward (the inference form: BatchNorm folded, channels-last) + decode at
    input resolution, after one warm-up batch. Rows use the columns of ``results/speed.csv``.
    """
    import platform

    from densereg.nn.model import DenseRegNet

    device = "cuda" if torch.cuda.is_available() else "cpu"
    where = (f"cuda: {torch.cuda.get_device_name()}" if device == "cuda"
             else f"cpu: {platform.processor() or platform.machine()} ({os.cpu_count()} cores)")
    rows = []
    for name, kw in BENCH_MODELS.items():
        model = inference_form(DenseRegNet(K=10, **kw).to(device).eval())
        x = torch.randint(0, 255, (batch, 3, size, size), dtype=torch.uint8, device=device)
        x = x.contiguous(memory_format=torch.channels_last)
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
        rows.append({"figure": "inference", "candidate": "library path", "value": round(batch / seconds, 2),
                     "unit": "images/s", "model": name, "size": size, "batch": batch,
                     "dtype": "bf16" if bf16 else "fp32", "threads": torch.get_num_threads(),
                     "load": round(os.getloadavg()[0], 2), "device": where,
                     "note": f"densereg.readout.forward --bench ({1000 * seconds / batch:.1f} ms/image)"})
        print(f"{name:<24s} {size}x{size} batch {batch}: {rows[-1]['value']:8.2f} images/s "
              f"({1000 * seconds / batch:.1f} ms/image), load {rows[-1]['load']}")
    return rows


def append_rows(path: Path, rows: list[dict]) -> None:
    """Add ``rows`` (stamped with the date) to the CSV ``path``, rewritten atomically; every column is kept."""
    old = list(csv.DictReader(path.open())) if path.exists() else []
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    columns = list(dict.fromkeys([c for r in old for c in r] + [c for r in rows for c in r] + ["date"]))
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, columns, restval="")
    writer.writeheader()
    writer.writerows(old + [{**row, "date": stamp} for row in rows])
    formats.atomic_write_bytes(path, text.getvalue().encode())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m densereg.readout.forward",
                                     description="Network inference speed (forward + decode).")
    parser.add_argument("--bench", action="store_true", required=True)
    parser.add_argument("--size", type=int, default=300)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--csv", type=Path, default=None, help="append the rows to this CSV")
    a = parser.parse_args(argv)
    rows = benchmark(a.size, a.batch, bf16=a.bf16)
    if a.csv:
        append_rows(a.csv, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())

