"""Per-image time of the AAM and MDM fitters, each before and after its change, interleaved.

    python -m benchmarks.experiments.fit_speed --root DATA --aam runs/synthetic/aam.pkl \
        --mdm runs/synthetic/mdm-cpu/mdm.pt [--limit 12] [--rounds 3] [--csv results/speed.csv]

Each fitter refines the same starts: the MDM mean shape aligned to each test face's ground-truth box jittered
as :mod:`benchmarks.experiments.mdm_alone` does (5 % of the side). Times are wall clock and this process's CPU
time per image, measured in interleaved rounds because the machine is shared; the load average is printed
beside each figure. MDM is timed two ways: ``mdm (2 threads)``, the fit as it ran in the main process before
(torch's default threads), and ``mdm``, the fitter now (one thread for a few images; ``MDMFitter._fit``); the
largest difference between their landmarks is printed.

AAM is timed two ways too: ``aam (as published)``, menpofit's own Wiberg loop and patch gradient, and ``aam``,
the fitter now: the gradient in one vectorised call and the loop at the sampled pixels only
(``benchmarks.baselines.aam_wiberg``), equal up to rounding (the largest difference is printed). Where the
published loop's time went (cProfile, 12 faces, BLAS on one thread): about a fifth in menpo's
``PCAModel.instance``, the appearance instance rebuilt at every pixel of every patch each iteration, a sixth in
the projections onto and out of the appearance subspace, an eighth in the patch extraction, the rest in the
gradient, the steepest-descent images and the shape model's alignment. The sampled loop removes the instance
and the whole-patch gradient; the projections and the patch extraction remain.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.baselines.mdm_frame import align_to_box
from benchmarks.experiments.mdm_alone import jittered_boxes

TARGET = "half the per-image time before (issue 16)"


def _time(fn, images, starts):
    wall, cpu = time.perf_counter(), time.process_time()
    out = np.stack([fn(im, s) for im, s in zip(images, starts)])
    n = len(images)
    return out, (time.perf_counter() - wall) / n, (time.process_time() - cpu) / n


def run(root, aam_path, mdm_path, limit=12, rounds=3):
    """Rows of per-image times (``benchmarks.records.SCHEMAS["speed"]``), printed as they are measured."""
    from benchmarks.baselines.aam import AAMFitter
    from benchmarks.baselines.mdm import MDMFitter
    from densereg.data import datasets

    samples = datasets.load_dataset("300w", root, "test")[:limit]
    images = [s.image() for s in samples]
    fitter = MDMFitter.load(mdm_path)
    starts = [align_to_box(fitter.mean, b) for b in jittered_boxes([s.landmarks for s in samples], 0.05, 0)]
    threads = torch.get_num_threads()

    def mdm_before(image, shape):        # the fit as the main process ran it before: torch's default threads
        return fitter._fit_frames([image], np.asarray(shape)[None], [0])[-1][0]

    methods = {"mdm (2 threads)": mdm_before, "mdm": fitter}
    before = {"mdm": "mdm (2 threads)"}          # each fitter now -> the same fit as it ran before
    if aam_path is not None:
        methods["aam (as published)"] = AAMFitter.load(aam_path, as_published=True)
        methods["aam"] = AAMFitter.load(aam_path)
        before["aam"] = "aam (as published)"
    for fn in methods.values():
        fn(images[0], starts[0])          # warm-up
    times = {k: {"wall": [], "cpu": [], "load": []} for k in methods}
    outputs = {}
    for _ in range(rounds):
        for name, fn in methods.items():
            torch.set_num_threads(threads)
            outputs[name], wall, cpu = _time(fn, images, starts)
            times[name]["wall"].append(wall)
            times[name]["cpu"].append(cpu)
            times[name]["load"].append(round(os.getloadavg()[0], 2))
    diff = {k: float(np.abs(outputs[k] - outputs[b]).max()) for k, b in before.items()}
    rows = []
    print(f"fitting {len(images)} synthetic test faces from jittered GT boxes, {rounds} interleaved rounds; "
          f"target: {TARGET}")
    for name, t in times.items():
        wall, cpu, load = (statistics.median(t[k]) for k in ("wall", "cpu", "load"))
        ratio = ""
        if name in before:
            ratio = statistics.median(b / a for a, b in zip(t["wall"], times[before[name]]["wall"]))
        extra = (f", x{ratio:.1f} vs {before[name]} (wall, same rounds), max |Δ| {diff[name]:.1e} px"
                 if ratio != "" else "")
        print(f"  {name:<20s} {1000 * wall:8.1f} ms/image wall, {1000 * cpu:7.1f} ms CPU{extra}; load {load}")
        rows.append({"figure": "fit", "candidate": name, "value": round(1000 * wall, 1), "unit": "ms/image",
                     "cpu_ms": round(1000 * cpu, 1), "ratio": round(ratio, 2) if ratio != "" else "",
                     "threads": 1 if name == "mdm" else threads, "load": load, "target": TARGET,
                     "note": f"{len(images)} synthetic test faces"
                             + (f"; max |d| {diff[name]:.1e} px vs {before[name]}" if ratio != "" else "")})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.experiments.fit_speed",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="data root holding 300W/ (synthetic or real)")
    parser.add_argument("--aam", type=Path, default=None, help="trained AAM pickle (omit to skip AAM)")
    parser.add_argument("--mdm", type=Path, required=True, help="trained MDM checkpoint")
    parser.add_argument("--limit", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--csv", type=Path, default=None, help="append the rows to this CSV (results/speed.csv)")
    args = parser.parse_args(argv)
    rows = run(args.root, args.aam, args.mdm, args.limit, args.rounds)
    if args.csv:
        from benchmarks.experiments.speed import device_name
        from benchmarks.records import append_speed_rows

        append_speed_rows(args.csv, rows, device_name())
    return 0


if __name__ == "__main__":
    sys.exit(main())
