"""The K ablation of Fig. 5: quantised regression with K bins per axis, decoded as ``q`` and ``q + r``.

    python -m benchmarks.run fig5 --source synthetic --preset cpu [--ks 1,5,10,20,40,60]
    (also: python -m benchmarks.experiments.kablation [same options])

For each K a network is trained under ``runs/<source>/fig5/K<K>-<preset>/`` (an artefact of the harness:
reused only while its config and training data are unchanged, ``benchmarks.baselines.networks``);
K = 1 is plain regression (the paper's baseline). Each is evaluated on the test images that have fittings
(:data:`EVAL_SETS`: the synthetic 300-W test set, or on real data 300W-LP's test split) by
the per-pixel Euclidean UV error over ground-truth foreground pixels (``dense_metrics.uv_error``; a foreground pixel
the network calls background counts as +inf), pooled over all images, summarised as the AUC of its CED on
[0, 0.1] — our reading of Fig. 5 (DESIGN.md). ``q`` rows decode each pixel to its bin centre, ``q+r`` rows add
the regressed residual. A second AUC uses the larger of the two axis errors (``max-axis``), the reading under
which the paper's K = 5 ``q`` value (0.319) is attainable; both are written.

Rows go to ``results/fig5_runs.csv`` (one per K × decode with the checkpoint's identity and the provenance
stamp, ``benchmarks.records``; replaced on re-run of the same key), read by ``benchmarks.report``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import dense_metrics, records
from benchmarks.baselines import networks
from benchmarks.baselines.artefacts import seed_dir
from benchmarks.context import add_common, resolve_data
from densereg.data import datasets, formats, groundtruth

PAPER_KS = (1, 5, 10, 20, 40, 60)
# The evaluation images with dense GT, per data source: the synthetic test set has fittings beside its images; on
# real data only 300W-LP has fittings, and its test split is what no network trains on (the 300-W test images).
EVAL_SETS = {"synthetic": ("300w", "test"), "real": ("300w-lp", "test")}


def train_for_k(K: int, source: str, preset: str, runs: Path, iterations: int | None = None,
                root: Path | None = None, seed: int = 0) -> tuple:
    """Train (or resume / reuse) the K-bin model of ``seed`` (its artefacts under ``artefacts.seed_dir``);
    returns (checkpoint artefact, training seconds this call)."""
    variant = "regression" if K == 1 else "q+r"
    cfg = networks.make_config(preset, K=K, variant=variant, source=source, iterations=iterations)
    main_cfg = networks.make_config(preset, source=source, iterations=iterations)
    cache = seed_dir(Path(runs) / source, seed)
    if cfg == main_cfg:   # the main DenseReg model (K = 10, q+r) is this K's model: reuse it, do not retrain
        out = cache / (f"densereg-{preset}" + ("" if iterations is None else f"-it{iterations}"))
        overrides = {}
    else:
        out = cache / "fig5" / (f"K{K}-{preset}" + ("" if iterations is None else f"-it{iterations}"))
        overrides = {"K": K, "variant": variant}
    start = time.perf_counter()
    artefact = networks.ensure_network(preset, out, root=root, source=source, iterations=iterations, seed=seed,
                                       **overrides)
    return artefact, time.perf_counter() - start


def _train_job(job):
    K, args = job
    return K, train_for_k(K, args.source, args.preset, args.runs, args.iterations, args.root,
                          getattr(args, "seed", 0))


def train_all(ks: list[int], args) -> dict[int, tuple[Path, float]]:
    """Train every K's network, ``args.parallel`` at a time (separate processes, one core each)."""
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    parallel = max(1, min(args.parallel or os.cpu_count() or 1, len(ks)))
    if parallel == 1:
        return dict(_train_job((K, args)) for K in ks)
    # spawn: no forked thread-pool state; an executor's workers are not daemonic, so training may start its
    # own data-loader processes.
    with ProcessPoolExecutor(parallel, mp_context=multiprocessing.get_context("spawn")) as pool:
        return dict(pool.map(_train_job, [(K, args) for K in ks]))


def evaluate(checkpoint: Path, samples: list[datasets.Sample], batch_size: int = 8) -> dict[str, dict]:
    """Per-pixel UV errors of a checkpoint on ``samples`` (which need fittings), for both decodes."""
    from densereg.nn import train
    from densereg.readout import forward as infer

    model, cfg = train.load_model(checkpoint)
    errors = {"q": [], "q+r": []}
    cheb = {"q": [], "q+r": []}
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        images = [s.image() for s in chunk]
        maps = infer.predict(model, images, batch_size=batch_size, image_scale=cfg.image_scale)
        for s, img, est in zip(chunk, images, maps):
            gt = groundtruth.dense_gt(s, image_shape=img.shape[:2])
            for decode, (pu, pv) in {"q": (est.u_q, est.v_q), "q+r": (est.u, est.v)}.items():
                errors[decode].append(dense_metrics.uv_error(pu, pv, gt.u, gt.v, gt.mask))
                du = np.abs(pu[gt.mask] - gt.u[gt.mask])
                dv = np.abs(pv[gt.mask] - gt.v[gt.mask])
                cheb[decode].append(np.nan_to_num(np.maximum(du, dv), nan=np.inf))
    out = {}
    for decode in errors:
        e, c = np.concatenate(errors[decode]), np.concatenate(cheb[decode])
        auc, fail = dense_metrics.uv_auc(e)
        auc_c, _ = dense_metrics.uv_auc(c)
        out[decode] = {"auc": auc, "failure": fail, "auc_maxaxis": auc_c, "n_pixels": int(e.size),
                       "n_images": len(samples)}
    return out


def add_arguments(parser):
    """The options of the Fig. 5 command (``benchmarks.run fig5``), beside ``context.add_common``."""
    parser.add_argument("--preset", default=None, choices=list(networks.PRESETS),
                        help="network preset (default: cpu on synthetic data, paper on real)")
    parser.add_argument("--ks", default=",".join(map(str, PAPER_KS)), help="comma-separated K values")
    parser.add_argument("--iterations", type=int, default=None, help="override the preset's iterations")
    parser.add_argument("--eval-dataset", default=None,
                        help="dataset scored (default: 300w on synthetic data, 300w-lp on real; see EVAL_SETS)")
    parser.add_argument("--eval-split", default=None, help="its split (default: test)")
    parser.add_argument("--parallel", type=int, default=None,
                        help="networks trained at once, one core each (default: the number of cores)")


def run(args) -> int:
    """Fig. 5: train every K, score both decodes on the images with fittings, write one row per K × decode."""
    source, root = resolve_data("300W", args.source, args.root)
    args.source, args.root = source, root   # the spawned trainers see the resolved data
    args.preset = args.preset if args.preset in networks.PRESETS else ("cpu" if source == "synthetic" else "paper")
    eval_dataset = args.eval_dataset or EVAL_SETS[source][0]
    eval_split = args.eval_split or EVAL_SETS[source][1]
    samples = datasets.load_dataset(eval_dataset, root, eval_split)
    samples = [s for s in samples if "fitting" in s.extras][: args.limit]
    if not samples:
        raise formats.DatasetError(
            f"{eval_dataset}/{eval_split} under {root} has no images with 3D fittings: the per-pixel UV "
            "error of Fig. 5 needs dense ground truth (300W-LP-style fittings)")
    print(f"[fig5] data source: {source} ({root}); preset {args.preset}; {len(samples)} evaluation images "
          f"({eval_dataset}/{eval_split})", file=sys.stderr)
    ks = [int(k) for k in args.ks.split(",")]
    checkpoints = train_all(ks, args)
    preset = args.preset if args.iterations is None else f"{args.preset}+iterations={args.iterations}"
    table = Path(args.results) / "fig5_runs.csv"
    for K in ks:
        artefact, seconds = checkpoints[K]
        t0 = time.perf_counter()
        result = evaluate(artefact.path, samples)
        eval_s = time.perf_counter() - t0
        cfg = artefact.config or {}
        rows = []
        for decode, r in result.items():
            if K == 1 and decode == "q":
                continue       # one bin: the bin centre is the constant 0.5, not a row of Fig. 5
            rows.append({"K": K, "decode": decode, "auc": f"{r['auc']:.4f}", "failure": f"{r['failure']:.4f}",
                         "auc_maxaxis": f"{r['auc_maxaxis']:.4f}", "n_pixels": r["n_pixels"],
                         "n_images": r["n_images"], "iterations": cfg.get("iterations", ""),
                         "train_seconds": f"{seconds:.0f}", "eval_seconds": f"{eval_s:.0f}", "source": source,
                         "preset": preset, "seed": cfg.get("seed", 0), "artefacts": f"densereg={artefact.identity}",
                         **records.stamp(records.device_description())})
            print(f"[fig5] K={K:<3d} {decode:<4s} AUC {r['auc']:.4f} (max-axis {r['auc_maxaxis']:.4f}) "
                  f"over {r['n_pixels']} pixels", file=sys.stderr)
        records.write_run(table, rows, records.SCHEMAS["kablation"])
    print(f"[fig5] rows in {table}; data source: {source}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.experiments.kablation``: the same as ``python -m benchmarks.run fig5``."""
    from benchmarks.baselines.artefacts import ArtefactError
    from benchmarks.context import DataRootError

    parser = argparse.ArgumentParser(prog="python -m benchmarks.experiments.kablation",
                                     description=__doc__.split("\n\n")[1])
    add_common(parser)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (formats.DatasetError, DataRootError, ArtefactError) as exc:
        print(f"[fig5] error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
