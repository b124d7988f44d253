"""Monocular depth (paper Sec. 4.5, Fig. 9): the depth branch trained, measured, and its effect on the others.

    python -m benchmarks.run fig9 --source synthetic [--preset cpu] [--seed S] [--baseline cached|train|skip]
    (also: python -m benchmarks.experiments.depth [same options])

The paper adds "another branch ... a 1x1 convolution layer after the final shared convolutional layer" that
regresses the z-buffered depth of the fitted template, normalised to Z ∈ [0, 1], and reports no number: "there
is no existing result in literature that would allow a quantitative comparison". On data with fittings we can
measure it, and we test its one claim, that the branch "does not affect the performance of other branches".

**The branch's form.** The released root ``deploy.prototxt`` has a 2-class face/non-face classifier
(``Face_Z``) and a 2-channel regressor (``Regression_Z``, channel 1 read) with ``depth = Regression_Z[1] ×
argmax(Face_Z)``. Ours (``densereg.nn.model.DenseRegNet(depth=True)``) is one 1×1 regression channel on the
shared features, smooth-L1 on the ground-truth foreground, read where the UV classifiers say "face". Their
class 0 is already a face/non-face decision trained on the same pixels, so a second one would only let depth
and UV disagree about where the face is; one mask for every output keeps them consistent, and the branch is
then exactly the "1x1 convolution" the paper describes.

**What is scored** (on :data:`benchmarks.experiments.kablation.EVAL_SETS`: the synthetic 300-W test set, or
300W-LP's test split on real data), for the depth model and for the model without depth of the same seed (the
Table 2 network, ``<runs>/<source>[/seed<S>]/densereg-<preset>``):

* depth (the depth model only): absolute and scale-and-shift-invariant per-pixel errors over the GT foreground,
  in units of the face's depth range (``benchmarks.depth_metrics``), with a flat-face floor for scale;
* the other branches: the per-pixel UV error AUC of Fig. 5 (``q+r``, ``dense_metrics.uv_error``) and the
  landmark AUC@0.1 / failure of Table 2's DenseReg row (``DenseReg.landmarks(image, box)``, error over the
  outer-eye distance; a face not found scores +inf).

``--baseline cached`` (default) scores the model without depth when its checkpoint is already in the cache
(``./reproduce.sh table2`` makes it) and says so when it is not; ``train`` trains it; ``skip`` leaves it out;
``only`` scores it alone (e.g. its seeds beyond those of the depth model, for the seed spread).
Rows go to ``results/fig9_runs.csv`` (one per model and seed, provenance stamped, ``benchmarks.records``),
per-image numbers to ``results/errors/``, the figure to ``results/figures/fig9_<source>.png``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import dense_metrics, depth_metrics, metrics, records
from benchmarks.baselines import networks
from benchmarks.baselines.artefacts import ArtefactError, seed_dir
from benchmarks.context import DataRootError, add_common, resolve_data
from benchmarks.experiments import fig9
from benchmarks.experiments.fig6 import face_window, figure_indices
from benchmarks.experiments.kablation import EVAL_SETS
from densereg.data import datasets, formats, groundtruth

MODELS = {False: "DenseReg", True: "DenseReg+depth"}   # the rows: without and with the depth branch
BASELINE_MODES = ("cached", "train", "skip", "only")
PER_IMAGE_COLUMNS = ("name", "landmark_error", "uv_auc", "depth_abs_mean", "depth_ssi_mean", "depth_coverage")


def model_dir(runs: Path, source: str, preset: str, seed: int, depth: bool) -> Path:
    """Where the harness trains a model: the Table 2 network's folder, or ``-depth`` beside it."""
    return seed_dir(Path(runs) / source, seed) / (f"densereg-{preset}" + ("-depth" if depth else ""))


def ensure_model(args, depth: bool, checkpoint: Path | None):
    """The checkpoint artefact of the model with/without depth for ``args.seed`` (trained when missing)."""
    out = model_dir(args.runs, args.source, args.preset, args.seed, depth)
    overrides = {"depth": True} if depth else {}
    return networks.ensure_network(args.preset, out if checkpoint is None else Path(checkpoint).parent,
                                   root=args.root, source=args.source, seed=args.seed, checkpoint=checkpoint,
                                   **overrides)


def evaluate(checkpoint: Path, samples: list, root: Path, figure: tuple[int, ...] = (), batch: int = 8,
             progress: bool = True) -> tuple[dict, list[dict], dict]:
    """Score one checkpoint on ``samples`` (which need fittings and landmarks).

    Returns:
        ``(summary, per_image, kept)``: the row's numbers; one dict per image (:data:`PER_IMAGE_COLUMNS`);
        ``{index: (image, gt, uvmap)}`` for the ``figure`` indices.
    """
    from tqdm import tqdm

    from densereg import DenseReg

    model = DenseReg.load(checkpoint, device="cpu", data_root=root)
    has_depth = bool(model.config.depth)
    uv_err, lm_err, per_image, kept = [], [], [], {}
    pooled = {"abs": [], "ssi": [], "flat": []}
    for start in tqdm(range(0, len(samples), batch), desc="fig9", disable=not progress):
        chunk = samples[start:start + batch]
        images = [s.image() for s in chunk]
        maps = model.uv(images)
        shapes = model.landmarks(images, box=[np.asarray(s.box, float) for s in chunk])
        for offset, (s, img, est, shape) in enumerate(zip(chunk, images, maps, shapes)):
            gt = groundtruth.dense_gt(s, image_shape=img.shape[:2])
            e_uv = dense_metrics.uv_error(est.u, est.v, gt.u, gt.v, gt.mask)
            e_lm = float(metrics.nme(shape, s.landmarks, norm="outer-eye"))
            uv_err.append(e_uv)
            lm_err.append(e_lm)
            row = {"name": s.name, "landmark_error": f"{e_lm:.6g}",
                   "uv_auc": f"{dense_metrics.uv_auc(e_uv)[0]:.4f}" if e_uv.size else ""}
            if has_depth and gt.mask.any():
                d = depth_metrics.depth_errors(est.depth, gt.depth, gt.mask)
                pooled["abs"].append(d["abs"])
                pooled["ssi"].append(d["ssi"])
                pooled["flat"].append(depth_metrics.flat_errors(gt.depth, gt.mask))
                seen = np.isfinite(d["abs"])
                row.update(depth_abs_mean=f"{d['abs'][seen].mean():.4f}" if seen.any() else "",
                           depth_ssi_mean=f"{d['ssi'][seen].mean():.4f}" if seen.any() else "",
                           depth_coverage=f"{seen.mean():.4f}")
            per_image.append(row)
            if start + offset in figure:
                kept[start + offset] = (img, gt, est)
    uv_auc, uv_fail = dense_metrics.uv_auc(np.concatenate(uv_err))
    lm_auc, lm_fail = metrics.auc_and_failure(np.asarray(lm_err), max_error=0.1)
    summary = {"landmark_auc": f"{lm_auc:.6f}", "landmark_failure": f"{lm_fail:.6f}", "uv_auc": f"{uv_auc:.4f}",
               "uv_failure": f"{uv_fail:.4f}", "n_images": len(samples),
               "n_pixels": int(sum(e.size for e in uv_err))}
    if has_depth:
        for name in ("abs", "ssi"):
            s = depth_metrics.summarise(np.concatenate(pooled[name]))
            summary.update({f"depth_{name}_{k}": f"{s[k]:.4f}" for k in ("mean", "median", "auc")})
            summary["depth_coverage"] = f"{s['coverage']:.4f}"
        summary["flat_ssi_mean"] = f"{np.concatenate(pooled['flat']).mean():.4f}"
    return summary, per_image, kept


def figure_panels(samples: list, kept: dict) -> list[dict]:
    """Fig. 9 panels of the kept faces: image crop, GT and estimated renderings, |depth error|."""
    panels = []
    for i, (img, gt, est) in sorted(kept.items()):
        win = face_window(samples[i].box, img.shape[:2], margin=0.15)
        scale = fig9.face_relief_scale(gt.mask[win])
        yaw = fig9.view_yaw(gt.depth[win], gt.mask[win], scale)   # one view for both renderings of a face
        d = depth_metrics.depth_errors(est.depth, gt.depth, gt.mask)
        error = np.full(gt.mask.shape, np.nan)
        error[gt.mask] = np.where(np.isfinite(d["abs"]), d["abs"], 1.0)   # not estimated: off the scale
        seen = np.isfinite(d["abs"])
        caption = (f"{Path(samples[i].name).name}\nabs {d['abs'][seen].mean():.3f}, SSI {d['ssi'][seen].mean():.3f}"
                   if seen.any() else f"{Path(samples[i].name).name}\nno face pixel estimated")
        panels.append({"image": img[win], "caption": caption, "error": error[win],
                       "gt": fig9.relief(gt.depth[win], gt.mask[win], scale, gt.u[win], gt.v[win], yaw),
                       "est": fig9.relief(est.depth[win], est.mask[win], scale, est.u[win], est.v[win], yaw)})
    return panels


def add_arguments(parser):
    """The options of the Fig. 9 command (``benchmarks.run fig9``), beside ``context.add_common``."""
    parser.add_argument("--preset", default=None, choices=list(networks.PRESETS),
                        help="network preset (default: cpu on synthetic data, paper on real)")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="the depth model (default: the preset's, trained on first use); checked, never rebuilt")
    parser.add_argument("--baseline", choices=BASELINE_MODES, default="cached",
                        help="the model without depth (Table 2's): cached = score it when already trained "
                             "(default), train = train it when missing, skip = leave it out, only = score it "
                             "alone, trained when missing (no depth model)")
    parser.add_argument("--baseline-checkpoint", type=Path, default=None,
                        help="an explicit model without depth (checked, never rebuilt)")
    parser.add_argument("--figure-faces", type=int, default=4, help="faces drawn in Fig. 9 (0: no figure)")


def run(args) -> int:
    """Fig. 9: train (or reuse) the depth model, score it and the model without depth, write rows and figure."""
    source, root = resolve_data("300W", args.source, args.root)
    args.source, args.root = source, root
    args.preset = args.preset if args.preset in networks.PRESETS else ("cpu" if source == "synthetic" else "paper")
    name, split = EVAL_SETS[source]
    samples = [s for s in datasets.load_dataset(name, root, split) if "fitting" in s.extras
               and s.landmarks is not None][: args.limit]
    if not samples:
        raise formats.DatasetError(f"{name}/{split} under {root} has no images with 3D fittings and landmarks: "
                                   "depth ground truth needs fittings (300W-LP style)")
    print(f"[fig9] data source: {source} ({root}); preset {args.preset}; seed {args.seed}; {len(samples)} "
          f"evaluation images ({name}/{split})", file=sys.stderr)
    models = [] if args.baseline == "only" else [(True, ensure_model(args, True, args.checkpoint))]
    base_path = args.baseline_checkpoint or model_dir(args.runs, source, args.preset, args.seed, False) / "last.pt"
    if args.baseline == "skip":
        print("[fig9] --baseline skip: the model without depth is not scored (no with/without comparison)",
              file=sys.stderr)
    elif args.baseline in ("train", "only") or args.baseline_checkpoint is not None or base_path.is_file():
        models.append((False, ensure_model(args, False, args.baseline_checkpoint)))
    else:
        print(f"[fig9] the model without depth of seed {args.seed} is not trained yet ({base_path}): the "
              "with/without-depth comparison is NOT measured; ./reproduce.sh table2 trains it, or pass "
              "--baseline train", file=sys.stderr)
    keep = figure_indices(len(samples), args.figure_faces) if args.figure_faces > 0 else ()
    table = Path(args.results) / "fig9_runs.csv"
    preset = args.preset if args.limit is None else f"{args.preset}+limit={args.limit}"
    for depth, artefact in models:
        t0 = time.perf_counter()
        summary, per_image, kept = evaluate(artefact.path, samples, root, keep if depth else (),
                                            progress=not args.no_progress)
        seconds = time.perf_counter() - t0
        model = MODELS[depth]
        errors = (Path(args.results) / "errors" /
                  f"fig9_{model.replace('+', '_')}_{source}_{preset}_s{args.seed}_{artefact.digest[:8]}.csv")
        records.write_csv(errors, per_image, PER_IMAGE_COLUMNS)
        row = {"model": model, **summary, "eval_seconds": f"{seconds:.0f}", "source": source, "preset": preset,
               "seed": args.seed, "artefacts": f"densereg={artefact.identity}",
               **records.stamp(records.device_description()), "errors": errors.relative_to(args.results).as_posix()}
        records.write_run(table, [row], records.SCHEMAS["depth"])
        print(f"[fig9] {model:<15s} landmark AUC@0.1 {summary['landmark_auc']}, UV AUC {summary['uv_auc']}"
              + (f", depth |error| mean {summary['depth_abs_mean']} (SSI {summary['depth_ssi_mean']}, flat face "
                 f"{summary['flat_ssi_mean']}), coverage {summary['depth_coverage']}" if depth else "")
              + f" [{seconds:.0f} s]", file=sys.stderr)
        if kept:
            path = Path(args.results) / "figures" / f"fig9_{source}.png"
            fig9.draw_figure(path, figure_panels(samples, kept),
                             f"Fig. 9: 3D renderings from estimated depth ({source} data, preset {preset}, seed "
                             f"{args.seed}, densereg={artefact.identity})")
            print(f"[fig9] figure: {path}", file=sys.stderr)
    print(f"[fig9] rows in {table}; data source: {source}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.experiments.depth``: the same as ``python -m benchmarks.run fig9``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.experiments.depth",
                                     description=__doc__.split("\n\n")[0])
    add_common(parser)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (formats.DatasetError, DataRootError, ArtefactError) as exc:
        print(f"[fig9] error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
