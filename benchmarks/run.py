"""Run one experiment of the paper and record its rows: ``python -m benchmarks.run COMMAND [options]``.

    python -m benchmarks.run 300w --init densereg --fitter mdm --source synthetic
    python -m benchmarks.run 300w --init preds:my_method/ --root ~/data/300w-tree
    python -m benchmarks.run helen --method densereg --source synthetic          (Table 1, segmentation)
    python -m benchmarks.run fig5 --source synthetic --ks 1,5,10                  (Fig. 5, K ablation)
    python -m benchmarks.run 300vw --source synthetic --workers 2                 (Table 3, 300-VW videos)
    python -m benchmarks.run sim2real --checkpoint runs/synthetic/densereg-cpu/last.pt   (real photos vs dlib)
    python -m benchmarks.run body --source synthetic                              (Fig. 10, human body)
    python -m benchmarks.run fig9 --source synthetic                              (Fig. 9, monocular depth)

Commands: ``300w``, ``ears`` and ``helen --init`` evaluate an initialiser × fitter on landmarks
(``benchmarks.experiments.landmarks``; Tables 2 and 4, Fig. 7); ``300vw`` evaluates Table 3's rows on every
frame of the 300-VW test videos, streamed and resumable (``benchmarks.experiments.tracking``);
``helen --method`` scores face-part segmentation
(``benchmarks.experiments.segmentation``; Table 1, Fig. 6); ``fig5`` is the K ablation
(``benchmarks.experiments.kablation``); ``body`` is dense correspondence for the human body
(``benchmarks.experiments.body``; Fig. 10).
(``benchmarks.experiments.kablation``); ``fig9`` trains and scores the depth branch, with and without it
(``benchmarks.experiments.depth``).

Every command takes ``--root DIR``: any folder in the native layout (``densereg.data.datasets.LAYOUT``), such as
one made with ``python -m densereg.data.synth --out DIR``, evaluated as it is; a folder the harness did not
create is never regenerated, overwritten or deleted. Without ``--root``: ``--source real`` (the default when
``$DENSEREG_DATA`` has the dataset) or ``--source synthetic`` (the embedded benchmark, generated on first use);
the command never switches source silently. Outputs go under the current folder: ``results/`` (``--results``)
and the trained-artefact cache ``runs/<source>/`` (``--runs``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from benchmarks.baselines.artefacts import ArtefactError
from benchmarks.context import (PRESETS, DataRootError, RunContext, add_common, artefact_root, resolve_data, resolve_factory,
                                valid_forms)
from benchmarks.experiments import body, depth, fig8, kablation, landmarks, segmentation, sim2real, tracking
from benchmarks.fitters import FITTERS, PREFIXED_FITTERS, get_fitter
from benchmarks.initialisers import INITIALISERS, PREFIXED_INITIALISERS, get_initialiser
from densereg.data import datasets, formats, shards

LANDMARK_COMMANDS = ("300w", "ears", "helen")


class RunError(Exception):
    """A problem the user must fix (missing data, unknown method, ...); printed without a traceback."""


def add_landmark_options(parser, required=True, iterations=True):
    """Options of a landmark run (an initialiser × fitter); ``iterations=False`` leaves ``--iterations`` to the
    caller (``helen``, whose segmentation options have it with the same meaning)."""
    inits = ", ".join(valid_forms(INITIALISERS, PREFIXED_INITIALISERS))
    parser.add_argument("--init", required=False, help=f"initialiser: {inits}")
    parser.add_argument("--fitter", default="none",
                        help=f"fitter: {', '.join(valid_forms(FITTERS, PREFIXED_FITTERS))} (default none)")
    if required:  # 300w and ears: a grid of rows in one process (Tables 2 and 4)
        parser.add_argument("--pairs", default=None, metavar="INIT+FITTER,...",
                            help="instead of --init/--fitter: several initialiser:fitter rows in one process, "
                                 "loading the data once and running each initialiser once for all its rows "
                                 "(e.g. densereg+none,densereg+mdm,dpm+mdm)")
    if required:
        parser.add_argument("--build-only", action="store_true",
                            help="build (or check) the trained artefacts of these methods and stop: no evaluation, "
                                 "no row (./reproduce.sh trains DenseReg and the baselines side by side this way)")
    parser.add_argument("--reuse", action="store_true",
                        help="reuse a recorded row whose artefacts, samples, code, torch and device are exactly "
                             "these instead of evaluating again (printed as [cached]; benchmarks.evalcache); "
                             "./reproduce.sh passes it unless RECOMPUTE=1")
    parser.add_argument("--split", default="test", help="dataset split (300w: test, indoor, outdoor, common, "
                                                        "challenging, full; default test)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--preset", default="default", choices=list(PRESETS),
                        help="configuration preset of the methods (recorded): "
                             + "; ".join(f"{k}: {v}" for k, v in PRESETS.items()))
    parser.add_argument("--tag", default="", help="free label distinguishing variants of one run key")
    parser.add_argument("--device", default="auto", help="torch device for the methods: auto, cpu, cuda[:N]")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="DenseReg checkpoint (default: the preset's, trained on first use); checked, "
                             "never rebuilt, and its identity recorded in the row")
    if iterations:
        parser.add_argument("--iterations", type=int, default=None,
                            help="shorten the preset's training schedule of DenseReg (densereg.nn.train; the "
                                 "baselines keep the preset's); rows are labelled preset '<preset>+iterations=N'")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in ("300w", "ears"):
        p = sub.add_parser(name, help=f"landmarks on {name}: an initialiser x fitter")
        add_common(p)
        add_landmark_options(p)
    tracking.add_arguments(sub.add_parser("300vw", help="Table 3: DenseReg, DenseReg+MDM and tracking on the "
                                                       "300-VW test videos"))
    helen = sub.add_parser("helen", help="Helen: landmarks (--init) or face-part segmentation (--method, Table 1)")
    add_common(helen)
    add_landmark_options(helen, required=False, iterations=False)
    segmentation.add_arguments(helen, method_required=False)
    fig5 = sub.add_parser("fig5", help="Fig. 5: the K ablation of the quantised regression")
    add_common(fig5)
    kablation.add_arguments(fig5)
    figure8 = sub.add_parser("fig8", help="Fig. 8: GT and estimated u, v and landmarks of a few 300-W test faces")
    add_common(figure8)
    fig8.add_arguments(figure8)
    real = sub.add_parser("sim2real", help="a DenseReg checkpoint vs dlib's 68-point predictor on real photos")
    sim2real.add_arguments(real)
    body_parser = sub.add_parser("body", help="Fig. 10: dense correspondence for the human body (patches + UV)")
    add_common(body_parser)
    body.add_arguments(body_parser)
    fig9 = sub.add_parser("fig9", help="Fig. 9: monocular depth, and the other branches with and without it")
    add_common(fig9)
    depth.add_arguments(fig9)
    args = parser.parse_args(argv)
    if args.command in ("300w", "ears"):
        if (args.init is None) == (args.pairs is None):
            parser.error(f"{args.command}: give exactly one of --init (with --fitter) or --pairs")
        if args.pairs is not None:
            pairs = [p.strip() for p in args.pairs.split(",") if p.strip()]
            split = [tuple(p.rsplit("+", 1)) for p in pairs]     # a plug-in spec (module:name) keeps its colon
            if not split or any(len(p) != 2 or not all(p) for p in split):
                parser.error(f"--pairs takes INIT+FITTER,... (got {args.pairs!r})")
            args.pairs = split
    if args.command == "helen":
        if (args.init is None) == (args.method is None):
            parser.error("helen: give exactly one of --init (landmarks) or --method (segmentation, Table 1)")
    if getattr(args, "iterations", None) is not None and args.iterations < 1:
        parser.error("--iterations must be at least 1")
    if getattr(args, "workers", 1) < 1:
        parser.error("--workers must be at least 1")
    if getattr(args, "limit", None) is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    return args


def _error_text(exc):
    return exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)


def run_landmarks(args):
    """Evaluate, record and print the landmark run(s) of ``--init/--fitter`` or ``--pairs``; returns the rows
    (raises :class:`RunError`)."""
    dataset = args.command
    protocol = landmarks.PROTOCOLS[dataset]
    pairs = getattr(args, "pairs", None) or [(args.init, args.fitter)]
    if args.split not in datasets.SPLITS[dataset]:
        raise RunError(f"unknown {dataset} split {args.split!r}; valid: {', '.join(datasets.SPLITS[dataset])}")
    for pair in pairs:
        for spec, registry, prefixed, kind in ((pair[0], INITIALISERS, PREFIXED_INITIALISERS, "initialiser"),
                                               (pair[1], FITTERS, PREFIXED_FITTERS, "fitter")):
            try:  # fail before loading any data when a name is wrong or a plug-in does not import
                resolve_factory(spec, registry, prefixed, kind)
            except (LookupError, ValueError) as e:
                raise RunError(_error_text(e)) from e
    source, root = resolve_data(protocol.folder, args.source, args.root)
    try:
        samples = datasets.load_dataset(dataset, root, args.split, **protocol.load_options)
    except formats.DatasetError as e:
        raise RunError(f"cannot read {source} {dataset}/{args.split}: {e}") from e
    if not samples:
        raise RunError(f"{source} {dataset}/{args.split} under {root} has no samples")
    if any(s.landmarks is None for s in samples):
        raise RunError(f"{source} {dataset}/{args.split}: some samples have no ground-truth landmarks")
    tag = args.tag
    if args.limit is not None:
        samples = samples[:args.limit]
        tag = f"{tag},limit={args.limit}" if tag else f"limit={args.limit}"
    if getattr(args, "build_only", False):
        return build_artefacts(args, pairs, source, root, dataset)
    memo, rows = {}, []                        # an initialiser's outputs, shared by the pairs that use it
    for init, fitter in pairs:
        ctx = RunContext(source=source, root=root, dataset=dataset, runs_dir=artefact_root(args.runs, source, dataset),
                         preset=args.preset, seed=args.seed, checkpoint=args.checkpoint, device=args.device,
                         iterations=getattr(args, "iterations", None))
        print(f"[run] {dataset}/{args.split} ({source} data at {root}, {len(samples)} images): init {init}, "
              f"fitter {fitter}, preset {ctx.preset}, seed {args.seed}", file=sys.stderr)
        try:
            row, results, table, err_path, replaced = landmarks.run(
                samples, init, fitter, ctx, split=args.split, results_dir=Path(args.results),
                norm=protocol.norm, workers=args.workers, tag=tag, progress=not args.no_progress, memo=memo,
                reuse=getattr(args, "reuse", False))
        except (NotImplementedError, LookupError, ValueError, OSError, formats.DatasetError, ArtefactError) as e:
            raise RunError(_error_text(e)) from e
        if shards.is_writer():                     # under torchrun, rank 0 reports what it wrote
            _print_report(row, results, table, err_path, replaced)
        rows.append(row)
    return rows if len(rows) > 1 else rows[0]


def build_artefacts(args, pairs, source, root, dataset):
    """``--build-only``: build (or check) every artefact of ``pairs``, each method once; evaluates nothing."""
    start = time.perf_counter()
    ctx = RunContext(source=source, root=root, dataset=dataset, runs_dir=artefact_root(args.runs, source, dataset),
                     preset=args.preset, seed=args.seed, checkpoint=args.checkpoint, device=args.device,
                     iterations=getattr(args, "iterations", None))
    try:
        for spec in dict.fromkeys(p[0] for p in pairs):
            get_initialiser(spec, ctx)
        for spec in dict.fromkeys(p[1] for p in pairs):
            get_fitter(spec, ctx)
    except (NotImplementedError, LookupError, ValueError, OSError, formats.DatasetError, ArtefactError) as e:
        raise RunError(_error_text(e)) from e
    print(f"[build] {dataset} seed {args.seed}: artefacts ready in {time.perf_counter() - start:.0f} s: "
          f"{ctx.identity() or 'none needed'}", file=sys.stderr)
    return []


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
    what = ("kept (reused, unchanged) in" if replaced is None else
            "replaced the earlier row in" if replaced else "appended to")
    print(f"row {what} {csv_path}; per-image errors in {err_path}")


COMMANDS = {**dict.fromkeys(LANDMARK_COMMANDS, run_landmarks),
            "helen-parts": lambda args: segmentation.run(args),
            "fig5": lambda args: kablation.run(args),
            "fig8": lambda args: _guarded(fig8.run, args),
            "300vw": lambda args: _guarded(tracking.run, args),
            "sim2real": lambda args: _guarded(sim2real.run, args),
            "body": lambda args: _guarded(body.run, args),
            "fig9": lambda args: _guarded(depth.run, args)}


def _guarded(run, args):
    """``run(args)`` (Table 3: ``benchmarks.experiments.tracking``; Fig. 8); a method or data problem becomes a
    :class:`RunError`."""
    try:
        return run(args)
    except (NotImplementedError, LookupError, ValueError, OSError, formats.DatasetError, ArtefactError) as e:
        raise RunError(_error_text(e)) from e


def main(argv=None):
    """Command line entry point; returns the exit status (2 for a user error, with the reason on stderr)."""
    args = parse_args(None if argv is None else [str(a) for a in argv])
    command = "helen-parts" if args.command == "helen" and args.method is not None else args.command
    try:
        COMMANDS[command](args)
    except (RunError, DataRootError, ArtefactError, formats.DatasetError, FileNotFoundError) as e:
        print(f"benchmarks.run {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
