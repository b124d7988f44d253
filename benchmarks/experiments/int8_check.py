"""Int8 static quantisation of a trained DenseReg: its read-out error beside float32, and its CPU time.

    python -m benchmarks.experiments.int8_check --checkpoint runs/synthetic/densereg-cpu/last.pt \
        --root data/synthetic [--limit 16] [--csv results/speed.csv]

The candidate of ``benchmarks.experiments.speed`` that needs a trained network: the BatchNorm-folded trunk and
heads quantised to int8 by PyTorch's FX post-training static quantisation (x86 backend: oneDNN/FBGEMM VNNI
kernels), calibrated on 8 images of the test split *after* the evaluated ones (``--limit`` onwards), then
decoded in float as usual. Both models read landmarks on the first ``--limit`` test faces (the evaluated face
picked by its GT box, as the harness does); the rows state each one's AUC@0.1 and mean error, the largest
per-image change and the CPU seconds per image (one torch thread). Int8 is not the library's default: see the
README's speed notes for the verdict this measurement gave.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks import metrics


class _Heads(torch.nn.Module):
    """Trunk + heads without the uint8 branch of ``TrunkNet.trunk`` (FX cannot trace a dtype test)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        n = self.net
        f = n.backbone.features((x - n.mean) / n.std)
        return n.cls_u(f), n.cls_v(f), n.res_u(f), n.res_v(f)


def quantised_forward(model, calibration):
    """A ``DenseReg(forward=...)`` callable running an int8 copy of ``model``'s network, calibrated on images."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    from densereg.nn.inference import fold_batchnorm
    from densereg.nn.inputs import prepare_image
    from densereg.readout.forward import _to_uvmap

    scale, stride = model.config.image_scale, model.net.output_stride

    def tensor(img):
        (h, w), padded = prepare_image(img, stride, scale)
        return (h, w), padded, torch.from_numpy(padded[None]).permute(0, 3, 1, 2).float() / 255.0

    example = tensor(calibration[0])[2]
    prepared = prepare_fx(_Heads(fold_batchnorm(model.net)).eval(), get_default_qconfig_mapping("x86"), (example,))
    with torch.no_grad():
        for img in calibration:
            prepared(tensor(img)[2])
    quantised = convert_fx(prepared)

    def forward(images):
        maps = []
        for img in images:
            (h, w), padded, x = tensor(img)
            with torch.no_grad():
                out = dict(zip(("logits_u", "logits_v", "res_u", "res_v"), quantised(x)))
            decoded = model.net.decode(out, size=padded.shape[:2])
            maps.append(_to_uvmap({k: v[0, :h, :w].float().numpy() for k, v in decoded.items()}, img.shape[:2]))
        return maps

    return forward


def run(checkpoint, root, limit=16):
    """Rows comparing the float32 and int8 read-outs (``benchmarks.records.SCHEMAS["speed"]``)."""
    from densereg.data import datasets
    from densereg.readout.predictor import DenseReg

    torch.set_num_threads(1)
    model = DenseReg.load(checkpoint, device="cpu")
    samples = datasets.load_dataset("300w", root, "test")
    test, calibration = samples[:limit], [s.image() for s in samples[limit:limit + 8]]
    int8 = DenseReg(None, model.config, model.template, model.shape_model, model.identity, "cpu",
                    forward=quantised_forward(model, calibration))
    gts = np.stack([s.landmarks for s in test])
    found = {}
    for name, m in (("fp32", model), ("int8 static (x86)", int8)):
        start, preds = time.process_time(), []
        for s in test:
            p = m.landmarks(s.image(), box=s.box)
            preds.append(np.full((68, 2), np.inf) if p is None else p)
        found[name] = (metrics.nme(np.stack(preds), gts), (time.process_time() - start) / len(test))
    base = found["fp32"][0]
    rows = []
    for name, (errors, seconds) in found.items():
        s = metrics.summarise(errors)
        change = np.abs(np.where(np.isfinite(errors) & np.isfinite(base), errors - base, 0)).max()
        print(f"{name:<18s} AUC@0.1 {s['auc_0.1']:.4f}, mean NME {s['mean']:.4f}, misses {s['n_inf']}, largest "
              f"per-image change {change:.4f}; {1000 * seconds:.1f} CPU ms/image (1 thread); "
              f"load {os.getloadavg()[0]:.2f}")
        rows.append({"figure": "int8", "candidate": name, "value": round(s["auc_0.1"], 4), "unit": "AUC@0.1",
                     "cpu_ms": round(1000 * seconds, 1), "model": "cpu preset checkpoint", "batch": 1,
                     "dtype": "int8" if "int8" in name else "fp32", "threads": 1,
                     "load": round(os.getloadavg()[0], 2),
                     "note": f"{len(test)} synthetic test faces; mean NME {s['mean']:.4f}; largest per-image "
                             f"NME change {change:.4f}"})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.experiments.int8_check",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--root", type=Path, required=True, help="data root holding 300W/")
    parser.add_argument("--limit", type=int, default=16)
    parser.add_argument("--csv", type=Path, default=None, help="append the rows to this CSV (results/speed.csv)")
    args = parser.parse_args(argv)
    rows = run(args.checkpoint, args.root, args.limit)
    if args.csv:
        from benchmarks.experiments.speed import device_name
        from benchmarks.records import append_speed_rows

        append_speed_rows(args.csv, rows, device_name())
    return 0


if __name__ == "__main__":
    sys.exit(main())
