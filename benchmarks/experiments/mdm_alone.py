"""MDM alone, from a jittered ground-truth box, beside the mean shape and AAM from the same start.

    python -m benchmarks.experiments.mdm_alone --root DATA --preset cpu [--aam runs/synthetic/aam.pkl] [--limit 200]

Before MDM is used as a fitter after DenseReg (Table 2), this checks that it works as MDM: every test face is
initialised as MDM initialises from a detection, with the training mean shape aligned to a box, here the face's
ground-truth landmark box with each corner moved by seeded Gaussian noise (``--jitter`` × the box side,
clipped at 3σ: the law of training's ``box_noise``; the image index and ``--seed`` seed it). From that one
start it scores:

* ``mean-shape``: the start itself (what shape knowledge alone gives once the face is located);
* ``mdm`` after each of its descent steps (``step`` 1..4; the last is MDM's answer), with the fraction of
  images whose error that step lowered, and whether the mean error falls at every step;
* ``aam`` (with ``--aam``): the patch AAM of :mod:`benchmarks.baselines.aam` fitted from the same shapes.

Errors are the 68-point mean point-to-point distance over the outer-eye-corner distance; AUC and failure at 0.1
and 0.08 as in :mod:`benchmarks.metrics`. Rows go to ``results/mdm_alone.csv`` (``--out``), keyed by source,
preset, checkpoint, method, step, jitter, seed (of the jitter; ``train_seed`` is MDM's) and n; a re-run
replaces its own rows. The checkpoint is
``--checkpoint`` or ``<runs>/<source>/mdm-<preset>/mdm.pt``, trained on the training split when absent
(resumed when unfinished).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks import metrics
from benchmarks.baselines import mdm
from benchmarks.baselines.mdm_frame import align_to_box
from densereg.data import datasets
from densereg.data.formats import atomic_write_bytes

KEY = ["source", "preset", "checkpoint", "method", "step", "jitter", "seed", "n"]


def jittered_boxes(gts, jitter, seed):
    """Each GT landmark box ``(x0, y0, x1, y1)`` with every corner coordinate moved by N(0, jitter × side).

    The noise of image ``i`` comes from ``default_rng([seed, i])`` only, so a subset (``--limit``) sees the
    same starts as the full set.
    """
    boxes = []
    for i, gt in enumerate(gts):
        box = datasets.landmarks_box(gt)
        side = np.tile(box[2:] - box[:2], 2)
        noise = np.clip(np.random.default_rng([seed, i]).standard_normal(4), -3, 3) * jitter
        boxes.append(box + noise * side)
    return np.array(boxes)


def step_statistics(step_errors):
    """Per step: mean and median error, and the fraction of images the step improved.

    Args:
        step_errors: ``(steps + 1, n)`` errors; row 0 is the start, row k the estimate after step k.

    Returns:
        list of dicts (one per row) with ``mean``, ``median`` and ``improved`` (NaN for the start).
    """
    out = []
    for k, errors in enumerate(step_errors):
        improved = float(np.mean(errors < step_errors[k - 1])) if k else float("nan")
        out.append({"mean": float(np.mean(errors)), "median": float(np.median(errors)), "improved": improved})
    return out


def monotone(step_errors):
    """Whether the mean error falls at every step (row 0, the start, included)."""
    means = np.asarray(step_errors).mean(axis=1)
    return bool(np.all(np.diff(means) < 0))


def evaluate(samples, fitter, initial, aam=None, batch=32, progress=True):
    """Errors of the start, of MDM after each step and of AAM (when given) on ``samples``.

    Args:
        samples: annotated test samples; fitter: :class:`benchmarks.baselines.mdm.MDMFitter`;
        initial: ``(n, 68, 2)`` starting shapes in image pixels; aam: an AAM fitter or None.

    Returns:
        dict with ``steps`` (``(steps + 1, n)`` errors, row 0 the start), ``aam`` (``(n,)`` or None) and
        ``seconds`` per image of MDM and of AAM.
    """
    gts = np.stack([s.landmarks for s in samples])
    estimates, tick = [], time.perf_counter()
    for lo in range(0, len(samples), batch):
        images = [s.image() for s in samples[lo:lo + batch]]
        estimates.append(fitter.fit_steps(images, initial[lo:lo + batch]))
    mdm_seconds = (time.perf_counter() - tick) / len(samples)
    estimates = np.concatenate(estimates, axis=1)
    steps = np.stack([metrics.nme(initial, gts)] + [metrics.nme(e, gts) for e in estimates])
    aam_errors, aam_seconds = None, float("nan")
    if aam is not None:
        tick, fitted = time.perf_counter(), []
        iterator = samples
        if progress:
            from tqdm import tqdm
            iterator = tqdm(samples, desc="AAM", unit="img", file=sys.stderr)
        for sample, shape in zip(iterator, initial):
            fitted.append(aam(sample.image(), shape))
        aam_seconds = (time.perf_counter() - tick) / len(samples)
        aam_errors = metrics.nme(np.stack(fitted), gts)
    return {"steps": steps, "aam": aam_errors, "mdm_seconds": mdm_seconds, "aam_seconds": aam_seconds}


def rows_of(result, meta):
    """The CSV rows of one evaluation: ``mean-shape``, ``mdm`` per step and ``aam``, each with ``meta``."""
    stats = step_statistics(result["steps"])
    falls = monotone(result["steps"])
    rows = []

    def row(method, step, errors, extra):
        summary = metrics.summarise(errors)
        rows.append({**meta, "method": method, "step": step,
                     **{k: summary[k] for k in ("auc_0.1", "failure_0.1", "auc_0.08", "failure_0.08", "mean",
                                                "median")}, **extra})

    row("mean-shape", 0, result["steps"][0], {"improved": float("nan"), "monotone": "", "seconds": 0.0})
    for k in range(1, len(result["steps"])):
        row("mdm", k, result["steps"][k], {"improved": stats[k]["improved"], "monotone": str(falls),
                                           "seconds": result["mdm_seconds"]})
    if result["aam"] is not None:
        row("aam", 0, result["aam"], {"improved": float(np.mean(result["aam"] < result["steps"][0])),
                                      "monotone": "", "seconds": result["aam_seconds"]})
    return rows


def write_rows(path, rows):
    """Merge ``rows`` into the CSV at ``path``: a row with the same :data:`KEY` replaces the older one."""
    path = Path(path)
    new = pd.DataFrame(rows)
    if path.is_file():
        old = pd.read_csv(path, dtype={"checkpoint": str})
        merged = pd.concat([old, new], ignore_index=True)
        merged["step"] = merged["step"].astype(int)
        new = merged.drop_duplicates(subset=KEY, keep="last")
    text = io.StringIO()
    new.to_csv(text, index=False, float_format="%.6g")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, text.getvalue().encode())
    return path


def _file_id(path):
    """The first 10 hex digits of the file's SHA-256: which trained artefact a row scored."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:10]


def _train_seconds(checkpoint):
    """Wall seconds of the training iterations, summed from the log beside the checkpoint (NaN without it)."""
    log = Path(checkpoint).parent / mdm.LOG_NAME
    return float(pd.read_csv(log)["seconds"].sum()) if log.is_file() else float("nan")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.experiments.mdm_alone",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="data root in the 300-W layout (read only)")
    parser.add_argument("--source", default="synthetic", help="label of the data in the rows (default synthetic)")
    parser.add_argument("--preset", default="cpu", choices=sorted(mdm.PRESETS), help="MDM preset (default cpu)")
    parser.add_argument("--checkpoint", type=Path, help="MDM checkpoint (default RUNS/SOURCE/mdm-PRESET/mdm.pt, "
                                                        "trained when absent)")
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="artefact folder (default runs)")
    parser.add_argument("--aam", type=Path, help="a trained AAM pickle (benchmarks.baselines.aam_train); "
                                                 "without it the AAM rows are left out")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, help="first N test images only")
    parser.add_argument("--jitter", type=float, default=0.05, help="box-corner noise, fraction of the side")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--out", type=Path, default=Path("results/mdm_alone.csv"))
    parser.add_argument("--quiet", action="store_true")
    return parser.parse_args(argv)


def main(argv=None):
    """Evaluate and print the rows; returns the exit status."""
    import torch

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    checkpoint = args.checkpoint or args.runs / args.source / f"mdm-{args.preset}" / mdm.CHECKPOINT_NAME
    config = mdm.make_config(args.preset)
    if args.checkpoint is None and not (checkpoint.is_file()
                                        and mdm.load_checkpoint(checkpoint)["step"] >= config.iterations):
        from benchmarks.baselines import mdm_train
        train = [s for s in datasets.load_dataset("300w", args.root, "train") if s.landmarks is not None]
        mdm_train.train_mdm(train, checkpoint.parent, config, progress=not args.quiet)
    fitter = mdm.MDMFitter.load(checkpoint)
    samples = datasets.load_dataset("300w", args.root, args.split)
    samples = samples[:args.limit] if args.limit else samples
    gts = np.stack([s.landmarks for s in samples])
    initial = np.stack([align_to_box(fitter.mean, b) for b in jittered_boxes(gts, args.jitter, args.seed)])
    aam = None
    if args.aam is not None:
        from benchmarks.baselines.aam import AAMFitter
        aam = AAMFitter.load(args.aam)
    result = evaluate(samples, fitter, initial, aam, progress=not args.quiet)
    state = mdm.load_checkpoint(checkpoint)
    meta = {"source": args.source, "preset": args.preset, "checkpoint": _file_id(checkpoint),
            "iterations": int(state["step"]), "train_seed": state["config"].seed,
            "train_seconds": round(_train_seconds(checkpoint), 1), "split": args.split,
            "jitter": args.jitter, "seed": args.seed, "n": len(samples)}
    rows = rows_of(result, meta)
    for row in rows:
        row["aam_model"] = _file_id(args.aam) if row["method"] == "aam" else ""
    path = write_rows(args.out, rows)
    from tabulate import tabulate
    shown = ["method", "step", "auc_0.1", "failure_0.1", "mean", "median", "improved", "seconds"]
    print(tabulate([[r[k] for k in shown] for r in rows], headers=shown, floatfmt=".4f"))
    print(f"mean error falls at every MDM step: {monotone(result['steps'])}; rows in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
