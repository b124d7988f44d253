"""Export a trained DenseReg checkpoint for shipping: weights only, in float16 or int8, the read-out's needs kept.

    python -m densereg.nn.export runs/synthetic/densereg-transfer/last.pt --out densereg/weights/transfer-int8.pt \
        --dtype int8

A training checkpoint carries the optimiser's state (twice the weights again for Adam) and the RNG state to
resume with; neither is needed to predict. The export keeps the model's state dict (floating-point tensors cast
to float16, integer buffers as they are), the resolved config, the training data's fingerprint, the PCA shape
model and, for ears, the reference landmarks, and adds ``exported``: the source file's sha256 and the dtype.
``DenseReg.load`` reads it like any checkpoint (``weights_only=True``); ``load_state_dict`` casts the weights
back to float32, so the network computes in float32 and differs from the source only by the rounding of its
weights (:func:`max_difference` measures it on an image).

``int8`` stores every convolution and linear weight (the tensors of two or more dimensions) as int8 with one
symmetric scale per output channel (``model_scales``: ``w ≈ q · max|w_c| / 127``), the rest in float16;
``checkpoint.load_model`` multiplies them back (``checkpoint.dequantized``). It halves the float16 file, which
is what lets the ``transfer`` network (2.8 M weights: 5.6 MB in float16) ship under 5 MB; the read-out's change
is measured, not assumed (``python -m benchmarks.run sim2real`` on both files).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import torch

from densereg.nn import checkpoint

DROPPED = ("optimizer", "torch_rng", "scheduler")   # what only a resumed training needs


def export_checkpoint(src, out, dtype: torch.dtype = torch.float16) -> Path:
    """Write the shipping form of the DenseReg checkpoint ``src`` to ``out`` (atomically); returns ``out``.

    Raises:
        FileNotFoundError, ValueError: as ``checkpoint.read_checkpoint`` (names the file).
    """
    src = Path(src)
    state = checkpoint.read_checkpoint(src)
    if state["config"].get("task", "densereg") != "densereg":
        raise ValueError(f"{src}: a {state['config'].get('task')} checkpoint, not a DenseReg one")
    model, scales = {}, {}
    for k, v in state["model"].items():
        if not torch.is_floating_point(v):
            model[k] = v
        elif dtype == torch.int8 and v.dim() >= 2:
            peak = v.float().abs().amax(dim=tuple(range(1, v.dim()))).clamp_min(1e-12)
            scales[k] = peak / 127.0
            model[k] = torch.round(v.float() / scales[k].reshape(-1, *([1] * (v.dim() - 1)))).to(torch.int8)
        else:
            model[k] = v.to(torch.float16 if dtype == torch.int8 else dtype)
    kept = {k: v for k, v in state.items() if k not in DROPPED and k not in ("model", "format", "model_scales")}
    kept["model"] = model
    if scales:
        kept["model_scales"] = scales
    kept["exported"] = {"from_sha256": hashlib.sha256(src.read_bytes()).hexdigest(), "dtype": str(dtype)}
    return checkpoint.save_checkpoint(out, kept)


def max_difference(src, out, size: int = 128, seed: int = 0) -> float:
    """The largest absolute difference between the two checkpoints' network outputs on one random image."""
    a, _ = checkpoint.load_model(src)
    b, _ = checkpoint.load_model(out)
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        ya, yb = a(x), b(x)
    pairs = zip(ya.values(), yb.values()) if isinstance(ya, dict) else [(ya, yb)]
    return max(float((p - q).abs().max()) for p, q in pairs)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m densereg.nn.export", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="a DenseReg training checkpoint (last.pt)")
    parser.add_argument("--out", type=Path, required=True, help="the exported file")
    parser.add_argument("--dtype", choices=("float16", "int8", "float32"), default="float16")
    args = parser.parse_args(argv)
    try:
        out = export_checkpoint(args.checkpoint, args.out, getattr(torch, args.dtype))
    except (FileNotFoundError, ValueError) as e:
        print(f"densereg.nn.export: error: {e}", file=sys.stderr)
        return 2
    size = out.stat().st_size
    print(f"{out}: {size / 1e6:.2f} MB ({args.dtype}; from {args.checkpoint}, "
          f"{args.checkpoint.stat().st_size / 1e6:.2f} MB); largest output difference on a random image: "
          f"{max_difference(args.checkpoint, out):.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
