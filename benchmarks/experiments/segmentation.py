"""Table 1 and Fig. 6: Helen face-part segmentation, DenseReg's label transfer versus DeepLab-v2.

    python -m benchmarks.run helen --method densereg --source synthetic --preset cpu
    python -m benchmarks.run helen --method deeplab --source synthetic --preset cpu
    (also: python -m benchmarks.experiments.segmentation --method densereg|deeplab [same options])

Paper Sec. 4.2. The 8 part classes are drawn once on the template (``template.PARTS``; class 0 "other" is
every pixel outside the seven parts, background included). Any image with a 3D fitting gets its
ground-truth labels by carrying the template labels through its GT UV field (``groundtruth.dense_gt(...)
.parts``). The two methods:

* ``densereg``: the DenseReg network, never trained for segmentation; each pixel it calls foreground gets
  the template label at its regressed UV (``transfer_parts``), every other pixel is "other".
* ``deeplab``: DeepLab-v2 (``densereg.nn.deeplab``), the same trunk with the ASPP head, trained with per-pixel
  cross-entropy on those GT labels, with the same training images, schedule and preset as DenseReg.

Score: dataset-level IoU per class over the Helen test set (``dense_metrics.iou_per_class``) and their mean over all
8 classes, "other" included (the paper's "Average"). Rows go to ``results/helen.csv`` (one per method and
part, with the checkpoint's identity and the provenance stamp, ``benchmarks.records``; replaced on re-run of
the same key; ``--limit N`` tags the method name with ``[limit=N]`` so a smoke run never replaces a full one)
and the table is printed beside the paper's. A Fig. 6 panel (image, GT, DenseReg,
DeepLab-v2 for a few test images) goes to ``results/figures/fig6_<source>.png`` once both methods have rows
for the source and preset, or whenever ``--figure`` is given.

Data. ``--source synthetic`` (default) is the embedded Helen-like test set, whose fittings lie beside the
images. ``--source real`` reads the 330 images of ``$DENSEREG_DATA/300W/helen/testset``; their GT needs the
300W-LP fittings of those images, ``300W_LP/HELEN/HELEN_<stem>_0.{jpg,mat}`` (the fitted, re-cropped copy of
each test image, which is what is then segmented), and the Basel Face Model the fittings refer to.

Checkpoints. By default ``runs/<source>/<method>-<preset>/last.pt``, trained first (or resumed) when absent
or unfinished, and rebuilt when its config or training data changed (``benchmarks.baselines.networks``),
exactly as ``python -m densereg.nn.train --task <method> --preset <preset> --source <source>
--out runs/<source>/<method>-<preset>`` would; the DenseReg one is the checkpoint Table 2 uses too.
``--checkpoint`` is checked against the preset and refused (never retrained) when it differs.
``--iterations N`` shortens both schedules (folders ``...-it<N>``, rows labelled ``<preset>+iterations=N``).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks import dense_metrics, records
from benchmarks.baselines import networks
from benchmarks.baselines.artefacts import seed_dir
from benchmarks.context import add_common, resolve_data
from benchmarks.experiments.fig6 import figure_indices, write_figure
from densereg.data import datasets, formats, groundtruth
from densereg.geometry.template import PARTS
from densereg.readout.parts import transfer_parts
from densereg.registry import lookup


@dataclass(frozen=True)
class Method:
    """One row group of Table 1.

    Attributes:
        name: the paper's row name, written to ``helen.csv`` (``DenseReg``, ``DeepLab-v2``).
        task: the ``train.TASKS`` key of its network.
    """

    name: str
    task: str


METHODS = {"densereg": Method("DenseReg", "densereg"), "deeplab": Method("DeepLab-v2", "deeplab")}
SCHEMA = records.SCHEMAS["segmentation"]

def get_method(key: str) -> Method:
    """``METHODS[key]``, naming the valid keys when ``key`` is unknown."""
    return lookup(METHODS, key, "segmentation method")


# ----------------------------------------------------------------------------------------------------------------
# Label transfer and ground truth


def gt_parts(sample: datasets.Sample, template, image_shape: tuple[int, int]) -> np.ndarray:
    """The Table 1 ground truth of one sample: template labels carried through its GT UV field."""
    return groundtruth.dense_gt(sample, template, image_shape).parts


def helen_test_samples(source: str, root: Path) -> list[datasets.Sample]:
    """The Helen test images of ``source`` paired with the 3D fitting that defines their GT segmentation.

    Synthetic: the Helen-like test set, fittings beside the images. Real: each ``300W/helen/testset`` stem is
    matched with its 300W-LP fit ``300W_LP/HELEN/HELEN_<stem>_0.mat`` and that file's image (the fitting is
    in the 300W-LP image frame, so the 300W-LP copy is the image segmented). A fitting beside the 300-W test
    image, when present, takes precedence.

    Raises:
        formats.DatasetError: a test image has no fitting; the message says which files are expected.
    """
    samples = datasets.load_dataset("helen", root, "test")
    out, missing = [], []
    for s in samples:
        if "fitting" in s.extras:
            out.append(s)
            continue
        if source == "synthetic":
            missing.append(s.image_path.with_suffix(".mat"))
            continue
        lp = Path(root) / "300W_LP" / "HELEN" / f"HELEN_{s.image_path.stem}_0"
        mat = lp.with_suffix(".mat")
        image = next((lp.with_suffix(e) for e in (".jpg", ".png") if lp.with_suffix(e).is_file()), None)
        if not mat.is_file() or image is None:
            missing.append(mat if not mat.is_file() else lp.with_suffix(".jpg"))
            continue
        fitting = formats.read_fitting(mat)
        out.append(datasets.Sample(name=f"HELEN/{lp.name}", image_path=image, landmarks=None,
                                   box=datasets.landmarks_box(fitting.pt2d),
                                   extras={**s.extras, "fitting": mat, "helen_image": s.image_path}))
    if missing:
        if source == "synthetic":
            hint = "regenerate the synthetic benchmark (python -m densereg.data.synth)"
        else:
            hint = ("Helen segmentation GT on real data is the template's part labels carried through the "
                    "300W-LP fittings of the Helen test images: unpack 300W-LP so that "
                    "$DENSEREG_DATA/300W_LP/HELEN/HELEN_<stem>_0.mat and .jpg exist for every image of "
                    "$DENSEREG_DATA/300W/helen/testset, and put the Basel Face Model files in $DENSEREG_DATA/BFM")
        raise formats.DatasetError(f"{len(missing)} of {len(samples)} Helen test images under {root} have no "
                                   f"3D fitting (first: {missing[0]}); {hint}")
    if not out:
        raise formats.DatasetError(f"{root}: no Helen test images (300W/helen/testset is empty)")
    return out


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints


def preset_label(preset: str, iterations: int | None) -> str:
    """The preset as rows and titles name it: ``cpu``, or ``cpu+iterations=100`` for a shortened schedule."""
    return preset if iterations is None else f"{preset}+iterations={iterations}"


def default_run_dir(method: str, source: str, preset: str, runs: Path, iterations: int | None = None,
                    seed: int = 0) -> Path:
    """``runs/<source>[/seed<S>]/<task>-<preset>``: where ``densereg.nn.train`` writes the method's network
    (``artefacts.seed_dir``: seed 0 directly under the source, as Table 2's DenseReg).

    A shortened schedule gets its own folder (``...-it<N>``): its poly learning rate reaches 0 at N, so
    resuming it towards the full schedule would not give the preset's network.
    """
    suffix = "" if iterations is None else f"-it{iterations}"
    return seed_dir(Path(runs) / source, seed) / f"{get_method(method).task}-{preset}{suffix}"


def ensure_checkpoint(method: str, source: str, preset: str, runs: Path, root: Path | None = None,
                      iterations: int | None = None, checkpoint: Path | None = None, seed: int = 0):
    """The method's checkpoint artefact: the default one trained (or resumed, or rebuilt when stale) first, or
    the user's ``checkpoint`` checked against the preset."""
    return networks.ensure_network(preset, default_run_dir(method, source, preset, runs, iterations, seed),
                                   root=root, checkpoint=checkpoint, task=get_method(method).task, source=source,
                                   iterations=iterations, seed=seed)


# ----------------------------------------------------------------------------------------------------------------
# Prediction and scoring


def predict_labels(model, cfg, images: list[np.ndarray], template, batch_size: int = 8) -> list[np.ndarray]:
    """Part labels of each image by either method, at the image's resolution (``H×W`` uint8)."""
    if cfg.task == "deeplab":
        from densereg.nn.deeplab import predict_parts

        return predict_parts(model, images, batch_size=batch_size, image_scale=cfg.image_scale)
    from densereg.readout.forward import predict

    maps = predict(model, images, batch_size=batch_size, image_scale=cfg.image_scale)
    return [transfer_parts(template, m.u, m.v, m.mask) for m in maps]


def _device():
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def evaluate(checkpoint: Path, samples: list[datasets.Sample], batch_size: int = 8,
             keep: tuple[int, ...] = ()) -> dict:
    """Per-class IoU of a checkpoint's segmentation of ``samples`` against their transferred GT.

    Args:
        checkpoint: a DenseReg or DeepLab-v2 checkpoint (``train.load_model`` tells which).
        samples: images with fittings (``helen_test_samples``).
        batch_size: images per forward pass.
        keep: indices of samples whose image, GT and prediction are returned (for the figure).

    Returns:
        ``iou``: ``(8,)`` per-class IoU (NaN for a class absent from both); ``average``: their NaN-ignoring
        mean; ``n``: images; ``kept``: {index: (image, gt, prediction)}; ``seconds``; ``device``.
    """
    from densereg.nn import train

    model, cfg = train.load_model(checkpoint)
    device = _device()
    model.to(device)
    fitting_path = samples[0].extras["fitting"]
    template = groundtruth.fitting_template(formats.read_fitting(fitting_path), fitting_path)
    preds, gts, kept = [], [], {}
    start = time.perf_counter()
    for first in range(0, len(samples), batch_size):
        chunk = samples[first:first + batch_size]
        images = [s.image() for s in chunk]
        labels = predict_labels(model, cfg, images, template, batch_size)
        for i, (s, img, pred) in enumerate(zip(chunk, images, labels), start=first):
            gt = gt_parts(s, template, img.shape[:2])
            preds.append(pred)
            gts.append(gt)
            if i in keep:
                kept[i] = (img, gt, pred)
    iou = dense_metrics.iou_per_class(preds, gts, len(PARTS))
    return {"iou": iou, "average": dense_metrics.mean_iou(iou), "n": len(samples), "kept": kept,
            "seconds": time.perf_counter() - start, "device": records.device_description(device)}


def result_rows(method_name: str, result: dict, source: str, preset: str, seed: int,
                artefacts: str = "") -> list[dict]:
    """The ``helen.csv`` rows of one evaluation: one per part, then ``average`` (results/README.md)."""
    common = {"source": source, "preset": preset, "seed": seed, **records.stamp(result["device"]),
              "n": result["n"], "artefacts": artefacts}
    values = list(zip(PARTS, result["iou"])) + [("average", result["average"])]
    return [{"method": method_name, "part": part, "iou": "" if np.isnan(v) else f"{v:.4f}", **common}
            for part, v in values]


def table_text(rows: list[dict], paper_csv: Path) -> str:
    """Our IoUs (%) beside the paper's Table 1 for the rows' method, in the paper's part order."""
    from tabulate import tabulate

    method = rows[0]["method"]
    base = method.split(" [")[0]
    paper_rows, _ = records.read_csv(paper_csv)
    paper = {r["metric"][len("iou_"):]: r["value"] for r in paper_rows
             if r.get("table") == "table1" and r.get("row") == base}
    ours = {r["part"]: r["iou"] for r in rows}
    order = [p for p in ("left_eyebrow", "right_eyebrow", "left_eye", "right_eye", "upper_lip", "lower_lip",
                         "nose", "other", "average") if p in ours]
    body = [[p.replace("_", " "), paper.get(p, ""), f"{float(ours[p]) * 100:.2f}" if ours[p] else "n/a"]
            for p in order]
    return tabulate(body, headers=["part", f"{base} paper (%)", "ours (%)"], tablefmt="github")


def _has_rows(results: Path, method_name: str, source: str, preset: str) -> bool:
    rows, _ = records.read_csv(results / "helen.csv")
    return any(r.get("method") == method_name and r.get("source") == source and r.get("preset") == preset
               for r in rows)


# ----------------------------------------------------------------------------------------------------------------
# Command line


def add_arguments(parser, method_required=True, own_options=False):
    """The options of the Table 1 command (``benchmarks.run helen --method``), beside ``context.add_common``.

    ``own_options`` adds ``--preset`` and ``--checkpoint``, which ``benchmarks.run helen`` already has.
    """
    parser.add_argument("--method", required=method_required, choices=list(METHODS),
                        help="Table 1 method: segmentation IoU on the Helen test set")
    if own_options:
        parser.add_argument("--preset", default=None, choices=list(networks.PRESETS),
                            help="network preset (default: cpu on synthetic data, paper on real)")
        parser.add_argument("--checkpoint", type=Path, default=None,
                            help="evaluate this checkpoint (checked against the preset, never retrained); "
                                 "default runs/<source>/<method>-<preset>/last.pt, trained first when absent")
    parser.add_argument("--iterations", type=int, default=None,
                        help="shorten the preset's training schedule (default checkpoints only); rows are "
                             "labelled preset '<preset>+iterations=N'")
    parser.add_argument("--figure", action="store_true",
                        help="draw Fig. 6 now (training the other method's default checkpoint if needed)")
    parser.add_argument("--batch-size", type=int, default=8)


def run(args) -> int:
    """Table 1 for ``args.method``: checkpoint → label every test image → IoU → rows; Fig. 6 when both ran.

    Raises:
        context.DataRootError, formats.DatasetError, artefacts.ArtefactError: the data or checkpoint is not
            usable; the message says which file and what to do.
    """
    method = get_method(args.method)
    source, root = resolve_data("300W", args.source, args.root)
    preset = args.preset if args.preset in networks.PRESETS else ("cpu" if source == "synthetic" else "paper")
    samples = helen_test_samples(source, root)[: args.limit]
    fitting_path = samples[0].extras["fitting"]
    groundtruth.fitting_template(formats.read_fitting(fitting_path), fitting_path)  # BFM present?
    print(f"[table1] data source: {source} ({root}); preset {preset}; {len(samples)} Helen test images; "
          f"method {method.name}", file=sys.stderr)

    def checkpoint_of(key: str):
        explicit = args.checkpoint if key == args.method else None
        return ensure_checkpoint(key, source, preset, args.runs, root, args.iterations, explicit,
                                 getattr(args, "seed", 0))

    keep = figure_indices(len(samples))
    artefact = checkpoint_of(args.method)
    ckpt = artefact.path
    seed = int((artefact.config or {}).get("seed", 0))
    result = evaluate(ckpt, samples, args.batch_size, keep)
    name = method.name + (f" [limit={args.limit}]" if args.limit is not None else "")
    label = preset_label(preset, args.iterations)
    rows = result_rows(name, result, source, label, seed, f"{method.task}={artefact.identity}")
    table = Path(args.results) / "helen.csv"
    records.write_run(table, rows, SCHEMA)
    print(f"Table 1 ({source} data, preset {label}, {result['n']} images, checkpoint {ckpt}):")
    print(table_text(rows, records.REPO_ROOT / "results" / "paper.csv"))
    print(f"[table1] {len(rows)} rows in {table} ({result['seconds']:.0f} s on {result['device']})",
          file=sys.stderr)

    other = "deeplab" if args.method == "densereg" else "densereg"
    other_name = METHODS[other].name + (f" [limit={args.limit}]" if args.limit is not None else "")
    if args.figure or _has_rows(Path(args.results), other_name, source, label):
        other_result = evaluate(checkpoint_of(other).path, [samples[i] for i in keep], args.batch_size,
                                keep=tuple(range(len(keep))))
        predictions = {args.method: {i: result["kept"][i][2] for i in keep},
                       other: {keep[j]: kept[2] for j, kept in other_result["kept"].items()}}
        title = f"Fig. 6: Helen test parts ({source} data, preset {label})"
        path = write_figure(Path(args.results) / "figures" / f"fig6_{source}.png", samples, keep,
                            result["kept"], predictions, title, {k: m.name for k, m in METHODS.items()})
        print(f"[table1] figure: {path}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.experiments.segmentation``: the same as ``python -m benchmarks.run helen --method``."""
    from benchmarks.baselines.artefacts import ArtefactError
    from benchmarks.context import DataRootError

    parser = argparse.ArgumentParser(prog="python -m benchmarks.experiments.segmentation",
                                     description="Table 1 / Fig. 6: Helen face-part segmentation IoU.")
    add_common(parser)
    add_arguments(parser, own_options=True)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (formats.DatasetError, DataRootError, ArtefactError, KeyError, FileNotFoundError) as exc:
        print(f"[table1] error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
