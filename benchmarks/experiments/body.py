"""Dense correspondence for the human body (paper Sec. 4.6, Fig. 10), with the numbers the paper lacked.

    python -m benchmarks.run body --source synthetic [--preset cpu] [--seed 0] [--limit N]
    (also: python -m benchmarks.experiments.body [same options])

The body network (:mod:`densereg.nn.body`: 25-way patch classifier + per-patch (u, v) regressors) is trained
under ``runs/<source>/body-<preset>/`` (a harness artefact, ``benchmarks.baselines.networks``: reused only
while its config and training data are unchanged) on the synthetic people of :mod:`densereg.data.synth_body`
(generated on first use), or on any body set in that layout given as ``--root``, and scored on its test split:

* ``patch_acc``: the fraction of ground-truth foreground pixels given their own patch (background counts as
  wrong); ``pixel_acc``: the same over every pixel, background included (25 classes); ``miou``: the mean
  dataset-level IoU of the 25 classes (``dense_metrics.iou_per_class``).
* UV error: the Euclidean distance in the patch chart's [0, 1]² units between estimated and true (u, v).
  Within correctly classified pixels it is well defined (``uv_mean_correct``, ``uv_median_correct``);
  over all GT-foreground pixels a pixel given another patch or the background has no comparable (u, v) and
  scores +inf, as a background pixel does in Fig. 5 (``uv_median_all``; ``uv_auc_all`` and ``uv_failure_all``
  are the AUC of its CED on [0, 0.1] and the fraction above 0.1, ``dense_metrics.uv_auc``).

One row per run goes to ``results/body.csv`` (source, preset, seed, the checkpoint's identity, provenance;
``benchmarks.records``), replaced on a re-run of the same key. Fig. 10 (image, estimated and true patches,
estimated and true UV on a few test images) goes to ``results/figures/fig10_<source>.png``.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import dense_metrics, records
from benchmarks.baselines import networks
from benchmarks.baselines.artefacts import seed_dir
from benchmarks.context import add_common
from densereg.data import formats, synth_body
from densereg.geometry import body as body_geometry

FIGURE_IMAGES = 5


def add_arguments(parser):
    """The options of ``benchmarks.run body``, beside ``context.add_common``."""
    parser.add_argument("--preset", default=None, choices=list(networks.PRESETS),
                        help="network preset (default: cpu; its body values are densereg.nn.config.TASK_PRESETS)")
    parser.add_argument("--iterations", type=int, default=None, help="override the preset's training iterations")
    parser.add_argument("--split", default="test", help="evaluated split of the body set (default test)")
    parser.add_argument("--figure-images", type=int, default=FIGURE_IMAGES, help="test images in Fig. 10")


def resolve_body_data(source, root):
    """``(source, root)``: ``root`` as it is (synthetic when it holds the generator's ``body.json``), else the
    synthetic body set, generated on first use. Real UP-3D is read by ``densereg.data.up3d``; this command
    scores a set in the native body layout, so real data come as ``--root`` after conversion."""
    if root is not None:
        root = Path(root).expanduser()
        if not root.is_dir():
            raise formats.DatasetError(f"--root {root}: no such folder (expected the densereg.data.synth_body layout)")
        return source or ("synthetic" if (root / "body.json").is_file() else "real"), root
    if source == "real":
        raise formats.DatasetError("body: real data come as --root DIR in the densereg.data.synth_body layout "
                                   "(convert UP-3D with python -m densereg.data.up3d); or use --source synthetic")
    return "synthetic", synth_body.ensure_body_synthetic()


def score(predictions, truths) -> dict:
    """The metrics of the module docstring from per-image ``{"patch", "u", "v"}`` predictions and
    :class:`densereg.geometry.unwrap.PatchGT` truths."""
    n = body_geometry.N_CLASSES
    correct_err, all_err = [], []
    fg_right = fg_total = px_right = px_total = 0
    for pred, gt in zip(predictions, truths):
        fg = gt.mask
        same = pred["patch"] == gt.patch
        fg_right += int((same & fg).sum())
        fg_total += int(fg.sum())
        px_right += int(same.sum())
        px_total += same.size
        err = np.sqrt((pred["u"] - gt.u) ** 2 + (pred["v"] - gt.v) ** 2)
        ok = same & fg
        correct_err.append(err[ok])
        all_err.append(np.where(ok, err, np.inf)[fg])
    ious = dense_metrics.iou_per_class([p["patch"] for p in predictions], [g.patch for g in truths], n)
    correct, every = np.concatenate(correct_err), np.concatenate(all_err)
    auc, failure = dense_metrics.uv_auc(every)
    return {"patch_acc": fg_right / max(fg_total, 1), "pixel_acc": px_right / max(px_total, 1),
            "miou": float(dense_metrics.mean_iou(ious)),
            "uv_mean_correct": float(correct.mean()) if correct.size else float("nan"),
            "uv_median_correct": float(np.median(correct)) if correct.size else float("nan"),
            "uv_median_all": float(np.median(every)), "uv_auc_all": auc, "uv_failure_all": failure,
            "n_pixels": int(every.size)}


def draw_figure(path: Path, columns: list[tuple], title: str) -> Path:
    """Fig. 10: one column per image; rows image, estimated patches, GT patches, estimated UV, GT UV."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heads = ("image", "estimated patches", "ground-truth patches", "estimated UV", "ground-truth UV")
    fig, axes = plt.subplots(len(heads), len(columns), figsize=(1.9 * len(columns) + 0.6, 1.9 * len(heads) + 0.5),
                             squeeze=False)
    for c, (image, pred, gt) in enumerate(columns):
        tiles = (image, synth_body.colour_patches(pred["patch"]), synth_body.colour_patches(gt.patch),
                 synth_body.colour_uv(pred["u"], pred["v"]), synth_body.colour_uv(gt.u, gt.v))
        for r, tile in enumerate(tiles):
            ax = axes[r, c]
            ax.imshow(tile, interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(heads[r], fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    records.atomic_write_bytes(path, buf.getvalue())
    return path


def run(args) -> int:
    """Train (or reuse) the body network, score the test split, record the row, draw Fig. 10."""
    from densereg.nn import body as body_net
    from densereg.nn import train

    source, root = resolve_body_data(args.source, args.root)
    preset = args.preset or "cpu"
    samples = synth_body.load_body(root, args.split)[: args.limit]
    print(f"[body] data source: {source} ({root}); preset {preset}; {len(samples)} {args.split} images",
          file=sys.stderr)
    out = seed_dir(Path(args.runs) / source, args.seed) / (
        f"body-{preset}" + ("" if args.iterations is None else f"-it{args.iterations}"))
    t0 = time.perf_counter()
    artefact = networks.ensure_network(preset, out, root=root, seed=args.seed, task="body", source=source,
                                       iterations=args.iterations)
    train_s = time.perf_counter() - t0
    model, cfg = train.load_model(artefact.path)
    t0 = time.perf_counter()
    images = [s.image() for s in samples]
    truths = [synth_body.read_body_gt(s.extras["gt"])[0] for s in samples]
    predictions = body_net.predict(model, images, image_scale=cfg.image_scale)
    metrics = score(predictions, truths)
    eval_s = time.perf_counter() - t0
    label = preset if args.iterations is None else f"{preset}+iterations={args.iterations}"
    row = {"split": args.split, **{k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in metrics.items()},
           "n_images": len(samples), "iterations": cfg.iterations, "train_seconds": f"{train_s:.0f}",
           "eval_seconds": f"{eval_s:.0f}", "source": source, "preset": label, "seed": args.seed,
           "artefacts": f"body={artefact.identity}", **records.stamp(records.device_description())}
    table = Path(args.results) / "body.csv"
    records.write_run(table, [row], records.SCHEMAS["body"])
    picks = np.unique(np.linspace(0, len(samples) - 1, min(args.figure_images, len(samples))).round().astype(int))
    figure = draw_figure(Path(args.results) / "figures" / f"fig10_{source}.png",
                         [(images[i], predictions[i], truths[i]) for i in picks],
                         f"Fig. 10 ({source} data, preset {label}, seed {args.seed}): patch accuracy "
                         f"{metrics['patch_acc']:.3f}, median UV error {metrics['uv_median_correct']:.3f} "
                         "(correct patches)")
    print(f"[body] patch accuracy {metrics['patch_acc']:.4f} (all pixels {metrics['pixel_acc']:.4f}, mIoU "
          f"{metrics['miou']:.4f}); UV error within correct patches mean {metrics['uv_mean_correct']:.4f} median "
          f"{metrics['uv_median_correct']:.4f}; over all foreground median {metrics['uv_median_all']:.4f}, AUC@0.1 "
          f"{metrics['uv_auc_all']:.4f}", file=sys.stderr)
    print(f"[body] row in {table}; figure {figure}; data source: {source}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.experiments.body``: the same as ``python -m benchmarks.run body``."""
    from benchmarks.baselines.artefacts import ArtefactError

    parser = argparse.ArgumentParser(prog="python -m benchmarks.experiments.body", description=__doc__.split("\n\n")[0])
    add_common(parser)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (formats.DatasetError, ArtefactError) as exc:
        print(f"[body] error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
