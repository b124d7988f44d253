"""Evaluate one initialiser × fitter on a landmark benchmark and record the result with its provenance.

    python -m benchmarks.run 300w --init mean-shape --fitter none [--split test] [--source real|synthetic]
        [--workers N] [--limit N] [--seed S] [--preset P] [--results DIR] [--tag T] [--device D]
        [--checkpoint FILE] [--runs-dir DIR]
    python -m benchmarks.run helen --method densereg|deeplab [...]   (Table 1: see benchmarks.experiments.segmentation)

For every sample of the split: ``init(image, box)`` → ``fitter(image, shape)`` → normalised error against the
ground truth, which only this module and the metrics see (68-point error over the outer-eye-corner distance
for faces, over the GT box's average edge for ears). A missed face (``None``), an exception raised by a
method, or an output that is not a finite ``N×2`` shape scores ``+inf``: it counts in every denominator and
is listed with its reason in the per-image file, never dropped.

Outputs, each written atomically:

* ``<results>/<dataset>.csv``: one summary row per run (AUC and failure rate at 0.1 and 0.08 as fractions,
  mean/median NME over the finite errors, n, misses, seconds per image, source, preset, seed, commit, torch,
  device, date, tag, the errors file). A later run with the same (dataset, split, init, fitter, source,
  preset, tag) replaces the earlier row, so re-runs never pile up.
* ``<results>/errors/<dataset>_<split>_<init>_<fitter>_<source>[_<preset>][_<tag>].csv``: ``name, error,
  status, message, seconds`` per image in sample order (preset only when not ``default``), overwritten by the
  next run of the same key. ``status`` is ``ok``, ``miss``, ``init-error``, ``init-invalid``, ``fit-error`` or
  ``fit-invalid``.

Data source: ``--source real`` reads ``$DENSEREG_DATA``; with no ``--source`` that is the default when the
dataset's folder exists there, and otherwise the command stops with the expected layout and the
``--source synthetic`` option: it never switches source silently. ``--source synthetic`` generates the
embedded benchmark on first use (``densereg.data.synth.ensure_synthetic``).

``--workers N`` evaluates images in N forked processes that inherit the methods built once in the parent
(so anything a method trains on first use is trained once); every image is seeded from (seed, its index) and
results are kept in sample order, so the output does not depend on N.
``seconds_per_image`` is the mean time of init + fit per image (image decoding excluded), whatever N.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks import metrics, records as provenance
from benchmarks.fitters import FITTERS, PREFIXED_FITTERS, get_fitter
from benchmarks.baselines.artefacts import ArtefactError
from benchmarks.context import Miss, RunContext, resolve_factory
from benchmarks.initialisers import INITIALISERS, PREFIXED_INITIALISERS, get_initialiser
from densereg.data import datasets, formats
from densereg.data.workers import fork_pool

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RESULTS = REPO_ROOT / "results"
DEFAULT_RUNS = REPO_ROOT / "runs"

ROW_COLUMNS = ("dataset", "split", "init", "fitter", "auc_0.1", "failure_0.1", "auc_0.08", "failure_0.08",
               "mean_nme", "median_nme", "n", "misses", "seconds_per_image", "source", "preset", "seed",
               "commit", "torch", "device", "date", "tag", "errors")
ROW_KEY = ("dataset", "split", "init", "fitter", "source", "preset", "tag")
ERROR_COLUMNS = ("name", "error", "status", "message", "seconds")


@dataclass(frozen=True)
class Protocol:
    """How one dataset is evaluated.

    Attributes:
        folder: the folder under the data root whose presence says the dataset is there.
        norm: key of ``metrics.NORMALISERS`` for the per-image error.
        load_options: keyword arguments for ``datasets.load_dataset``.
        not_implemented: when set, the issue that will implement this dataset's evaluation.
    """

    folder: str
    norm: str
    load_options: dict = field(default_factory=dict)
    not_implemented: str | None = None


PROTOCOLS = {
    "300w": Protocol("300W", "outer-eye"),
    # The 300-VW protocol drops the frames its authors flag as unreliable.
    "300vw": Protocol("300VW", "outer-eye", {"drop_unreliable": True}),
    "ears": Protocol("ears", "box"),  # 55 points over the GT box's (w + h) / 2, paper Sec. 4.7
    # Helen is scored by per-part IoU (Table 1): ``benchmarks.run helen --method densereg|deeplab`` is handed
    # to benchmarks.experiments.segmentation; this landmark protocol serves ``--init``/``--fitter`` runs on its 68 points.
    "helen": Protocol("300W/helen/testset", "outer-eye"),
}


class RunError(Exception):
    """A problem the user must fix (missing data, unknown method, ...); printed without a traceback."""


# ----------------------------------------------------------------------------------------------------------------
# Data source


def resolve_source(dataset, source):
    """``(source, root)`` for ``dataset``: real data under ``$DENSEREG_DATA`` or the synthetic benchmark.

    Args:
        dataset: a key of :data:`PROTOCOLS`.
        source: ``"real"``, ``"synthetic"`` or None (real if the dataset's folder exists, else an error).

    Raises:
        RunError: the real data is absent (the message shows the expected layout and ``--source synthetic``),
            or the synthetic benchmark has no such dataset.
    """
    folder = PROTOCOLS[dataset].folder
    if source in (None, "real"):
        value = os.environ.get("DENSEREG_DATA")
        if value and (Path(value).expanduser() / folder).is_dir():
            return "real", Path(value).expanduser()
        reason = ("$DENSEREG_DATA is not set" if not value
                  else f"$DENSEREG_DATA={value} has no {folder}/ folder")
        raise RunError(f"no real {dataset} data: {reason}.\n"
                       f"Put the real data under $DENSEREG_DATA laid out as:\n{datasets.LAYOUT}\n"
                       f"or run on the embedded synthetic benchmark with --source synthetic "
                       f"(every output is then labelled synthetic).")
    from densereg.data import synth  # generating needs the renderer; only import it when asked for

    root = Path(synth.ensure_synthetic())
    if not (root / folder).is_dir():
        raise RunError(f"the synthetic benchmark at {root} has no {dataset} data ({folder}/ is absent); "
                       "it provides 300w and helen")
    return "synthetic", root


# ----------------------------------------------------------------------------------------------------------------
# Evaluating one sample


def seed_everything(seed, index):
    """Seed Python, NumPy and (when loaded) torch from ``(seed, index)`` so an image's result is reproducible
    whichever worker evaluates it."""
    value = int(np.random.SeedSequence([seed, index]).generate_state(1)[0])
    random.seed(value)
    np.random.seed(value)
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(value)


def _message(exc):
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ").strip()
    return text if len(text) <= 300 else text[:297] + "..."


def _check_shape(pred, n_points, who):
    """``(shape, None)`` for a finite ``(n_points, 2)`` output, else ``(None, reason)``."""
    try:
        shape = np.asarray(pred, dtype=float)
    except (TypeError, ValueError) as e:
        return None, f"{who} returned {type(pred).__name__}, not an array ({e})"
    if shape.shape != (n_points, 2):
        return None, f"{who} returned shape {shape.shape}, expected ({n_points}, 2)"
    if not np.isfinite(shape).all():
        return None, f"{who} returned non-finite coordinates"
    return shape, None


def evaluate_sample(sample, init, fit, norm):
    """Run ``init`` then ``fit`` on one sample and score it.

    Returns:
        dict with ``name``, ``error`` (``+inf`` on any failure), ``status``, ``message`` and ``seconds`` (time
        spent in the two methods).

    Raises:
        formats.DatasetError: the sample's image cannot be read (a data problem, not a method failure).
    """
    image = sample.image()
    gt = sample.landmarks
    out = {"name": sample.name, "error": float("inf"), "status": "ok", "message": ""}
    start = time.perf_counter()
    try:
        kwargs = {"name": sample.name} if getattr(init, "needs_name", False) else {}
        pred = init(image, np.array(sample.box, dtype=float), **kwargs)
    except Miss as e:  # a declared miss, with its reason (e.g. no prediction file)
        pred = None
        out.update(status="miss", message=str(e))
    except Exception as e:  # any failure of a method is a scored failure, never a crash of the run
        pred = None
        out.update(status="init-error", message=_message(e))
    else:
        if pred is None:
            out.update(status="miss", message="initialiser found no face")
        else:
            pred, reason = _check_shape(pred, len(gt), "initialiser")
            if reason:
                out.update(status="init-invalid", message=reason)
    if out["status"] == "ok":
        try:
            fitted = fit(image, pred.copy())
        except Exception as e:
            out.update(status="fit-error", message=_message(e))
        else:
            fitted, reason = _check_shape(fitted, len(gt), "fitter")
            if reason:
                out.update(status="fit-invalid", message=reason)
            else:
                box = sample.box if norm.startswith("box") else None
                out["error"] = float(metrics.nme(fitted, gt, norm=norm, box=box))
    out["seconds"] = time.perf_counter() - start
    return out


# ----------------------------------------------------------------------------------------------------------------
# Building the methods and running them, in this process or in forked workers


def build_methods(init_spec, fitter_spec, ctx):
    """``(initialiser, fitter)`` built from their specs for ``ctx``."""
    return get_initialiser(init_spec, ctx), get_fitter(fitter_spec, ctx)


def method_device(ctx):
    """What the methods of this process run on, for the provenance column."""
    device = ctx.torch_device() if "torch" in sys.modules else "cpu"
    return provenance.device_description(device)


_WORKER = {}  # the job and the built methods, set in the parent before forking so workers inherit them


def _worker_task(index):
    job = _WORKER["job"]
    seed_everything(job["seed"], index)
    result = evaluate_sample(job["samples"][index], *_WORKER["methods"], job["norm"])
    result["device"] = _WORKER["device"]
    return result


def evaluate(samples, init_spec, fitter_spec, ctx, norm, workers=1, seed=0, progress=True, desc=""):
    """Evaluate every sample, in sample order; ``workers > 1`` uses that many forked processes.

    Returns:
        ``(results, device)``: the per-sample dicts of :func:`evaluate_sample` and the device description.
    """
    from tqdm import tqdm

    bar = tqdm(total=len(samples), desc=desc, unit="img", file=sys.stderr, disable=not progress)
    results = []
    if workers <= 1:
        init, fit = build_methods(init_spec, fitter_spec, ctx)
        device = method_device(ctx)
        for index, sample in enumerate(samples):
            seed_everything(seed, index)
            results.append(evaluate_sample(sample, init, fit, norm))
            bar.update()
    else:
        # Build (and, when missing, train) the methods once here; the forked workers inherit them.
        _WORKER["methods"] = build_methods(init_spec, fitter_spec, ctx)
        _WORKER["device"] = method_device(ctx)
        _WORKER["job"] = {"samples": samples, "norm": norm, "seed": seed}
        with fork_pool(workers) as pool:
            for result in pool.imap(_worker_task, range(len(samples)), chunksize=1):
                results.append(result)
                bar.update()
        device = results[0].pop("device") if results else method_device(ctx)
        for result in results:
            result.pop("device", None)
    bar.close()
    return results, device


# ----------------------------------------------------------------------------------------------------------------
# Recording


def slug(text, max_len=60):
    """``text`` made safe as part of a file name; long texts keep their end and gain a short hash."""
    safe = re.sub(r"[^A-Za-z0-9.+=-]+", "-", str(text)).strip("-.") or "x"
    if len(safe) > max_len:
        safe = f"{safe[-(max_len - 9):].lstrip('-.')}-{zlib.crc32(str(text).encode()):08x}"
    return safe


def errors_path(results_dir, dataset, split, init, fitter, source, preset="default", tag=""):
    """The per-image errors file of one run key (preset only when not ``default``, tag only when set)."""
    parts = [dataset, split, init, fitter, source]
    parts += [preset] if preset != "default" else []
    parts += [tag] if tag else []
    return Path(results_dir) / "errors" / ("_".join(slug(p) for p in parts) + ".csv")


def _fmt(value, spec):
    return "nan" if value != value else format(value, spec)  # NaN never equals itself


def summary_row(results, key, seed, device, errors_file):
    """The run's CSV row: metrics of the per-image errors plus provenance."""
    errors = np.array([r["error"] for r in results], dtype=float)
    s = metrics.summarise(errors)
    seconds = float(np.mean([r["seconds"] for r in results]))
    return {**key,
            "auc_0.1": _fmt(s["auc_0.1"], ".6f"), "failure_0.1": _fmt(s["failure_0.1"], ".6f"),
            "auc_0.08": _fmt(s["auc_0.08"], ".6f"), "failure_0.08": _fmt(s["failure_0.08"], ".6f"),
            "mean_nme": _fmt(s["mean"], ".6g"), "median_nme": _fmt(s["median"], ".6g"),
            "n": s["n"], "misses": s["n_inf"], "seconds_per_image": _fmt(seconds, ".4g"),
            "seed": seed, "commit": provenance.git_commit(), "torch": provenance.torch_version(),
            "device": device, "date": provenance.now(), "errors": errors_file}


def write_results(results_dir, row, results):
    """Write the per-image errors file and upsert the summary row into ``<results>/<dataset>.csv``.

    Returns:
        ``(csv_path, errors_path, n_replaced)``.
    """
    results_dir = Path(results_dir)
    err_path = results_dir / row["errors"]
    provenance.write_csv(err_path, [{"name": r["name"], "error": repr(float(r["error"])), "status": r["status"],
                                     "message": r["message"], "seconds": _fmt(r["seconds"], ".4g")}
                                    for r in results], ERROR_COLUMNS)
    csv_path = results_dir / f"{row['dataset']}.csv"
    replaced = provenance.upsert_csv_row(csv_path, row, ROW_COLUMNS, ROW_KEY)
    return csv_path, err_path, replaced


# ----------------------------------------------------------------------------------------------------------------
# Command line


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=sorted(PROTOCOLS))
    inits = ", ".join([*INITIALISERS, *(f"{p}:ARG" for p in PREFIXED_INITIALISERS), "package.module:callable"])
    fitters = ", ".join([*FITTERS, *(f"{p}:ARG" for p in PREFIXED_FITTERS), "package.module:callable"])
    parser.add_argument("--init", required=True, help=f"initialiser: {inits}")
    parser.add_argument("--fitter", default="none", help=f"fitter: {fitters} (default none)")
    parser.add_argument("--split", default="test", help="dataset split (300w: test, indoor, outdoor, common, "
                                                        "challenging, full; default test)")
    parser.add_argument("--source", choices=("real", "synthetic"), default=None,
                        help="data source (default: real when $DENSEREG_DATA has the dataset, else an error)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--limit", type=int, default=None,
                        help="evaluate only the first N samples (adds limit=N to the tag)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preset", default="default", help="configuration preset of the methods (recorded)")
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="results folder (default results/)")
    parser.add_argument("--tag", default="", help="free label distinguishing variants of one run key")
    parser.add_argument("--device", default="auto", help="torch device for the methods: auto, cpu, cuda[:N]")
    parser.add_argument("--checkpoint", type=Path, default=None, help="DenseReg checkpoint (default: the "
                                                                        "method's cached one)")
    parser.add_argument("--runs-dir", type=Path, default=DEFAULT_RUNS,
                        help="cache of trained artefacts; <runs-dir>/<source>/ is used (default runs/)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    return args


def _error_text(exc):
    return exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)


def run(args):
    """Evaluate, record and print one run; returns the summary row (raises :class:`RunError` for user errors)."""
    protocol = PROTOCOLS[args.dataset]
    if protocol.not_implemented:
        raise RunError(f"evaluating {args.dataset} is not implemented yet: {protocol.not_implemented}")
    if args.split not in datasets.SPLITS[args.dataset]:
        raise RunError(f"unknown {args.dataset} split {args.split!r}; valid: "
                       f"{', '.join(datasets.SPLITS[args.dataset])}")
    for spec, registry, prefixed, kind in ((args.init, INITIALISERS, PREFIXED_INITIALISERS, "initialiser"),
                                           (args.fitter, FITTERS, PREFIXED_FITTERS, "fitter")):
        try:  # fail before loading any data when a name is wrong or a plug-in does not import
            resolve_factory(spec, registry, prefixed, kind)
        except (LookupError, ValueError) as e:
            raise RunError(_error_text(e)) from e
    source, root = resolve_source(args.dataset, args.source)
    try:
        samples = datasets.load_dataset(args.dataset, root, args.split, **protocol.load_options)
    except formats.DatasetError as e:
        raise RunError(f"cannot read {source} {args.dataset}/{args.split}: {e}") from e
    if not samples:
        raise RunError(f"{source} {args.dataset}/{args.split} under {root} has no samples")
    if any(s.landmarks is None for s in samples):
        raise RunError(f"{source} {args.dataset}/{args.split}: some samples have no ground-truth landmarks")
    tag = args.tag
    if args.limit is not None:
        samples = samples[:args.limit]
        tag = f"{tag},limit={args.limit}" if tag else f"limit={args.limit}"
    ctx = RunContext(source=source, root=root, dataset=args.dataset, runs_dir=Path(args.runs_dir) / source,
                     preset=args.preset, seed=args.seed, checkpoint=args.checkpoint, device=args.device)
    print(f"[run] {args.dataset}/{args.split} ({source} data at {root}, {len(samples)} images): "
          f"init {args.init}, fitter {args.fitter}, preset {args.preset}, seed {args.seed}", file=sys.stderr)
    try:
        results, device = evaluate(samples, args.init, args.fitter, ctx, protocol.norm, workers=args.workers,
                                   seed=args.seed, progress=not args.no_progress,
                                   desc=f"{args.dataset}/{args.split} {args.init}+{args.fitter}")
    except (NotImplementedError, LookupError, ValueError, OSError, formats.DatasetError, ArtefactError) as e:
        raise RunError(_error_text(e)) from e
    key = {"dataset": args.dataset, "split": args.split, "init": args.init, "fitter": args.fitter,
           "source": source, "preset": args.preset, "tag": tag}
    err_file = errors_path(args.results, **key).relative_to(args.results).as_posix()
    row = summary_row(results, key, args.seed, device, err_file)
    csv_path, err_path, replaced = write_results(args.results, row, results)
    _print_report(row, results, csv_path, err_path, replaced)
    return row


def _print_report(row, results, csv_path, err_path, replaced):
    from tabulate import tabulate

    print(tabulate([[k, v] for k, v in row.items()], headers=["column", "value"]))
    failed = [r for r in results if r["status"] != "ok"]
    if failed:
        counts = {}
        for r in failed:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        print(f"{len(failed)} of {len(results)} images scored +inf ("
              + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + "); first ones:")
        for r in failed[:5]:
            print(f"  {r['name']}: {r['status']}: {r['message']}")
    what = "replaced the earlier row in" if replaced else "appended to"
    print(f"row {what} {csv_path}; per-image errors in {err_path}")


def main(argv=None):
    """Command line entry point; returns the exit status (2 for a user error, with the reason on stderr)."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    if argv[:1] == ["helen"] and "--method" in argv:   # Table 1: segmentation IoU, not landmarks
        from benchmarks.experiments import segmentation

        return segmentation.main(argv[1:])
    args = parse_args(argv)
    try:
        run(args)
    except RunError as e:
        print(f"benchmarks.run: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
