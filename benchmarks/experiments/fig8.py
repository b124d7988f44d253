"""Fig. 8 of the paper: test faces with their ground-truth and estimated u and v, and the DenseReg and
DenseReg+MDM landmarks drawn against the ground truth with a line per point from truth to estimate.

    python -m benchmarks.run fig8 --source synthetic --preset cpu [--seed 0] [--images 4]

The faces are evenly spread over the 300-W test split (the same ones on every call). The DenseReg model and
the MDM fitter are the ones Table 2 uses for that source, preset and seed (trained on first use, reused only
while their config and training data are unchanged: ``benchmarks.initialisers`` / ``benchmarks.fitters``).
The ground-truth box only picks which face is read out, as in Table 2. Ground-truth u and v need a 3D fitting
of the face: the synthetic test faces have one; real 300-W test images do not, and their GT panels say so.
Each landmark panel's title gives that image's error (normalised by the outer-eye-corner distance, the Table 2
protocol). Writes ``results/figures/fig8_<source>.png`` atomically and prints the per-image errors.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np

from benchmarks import metrics, records
from benchmarks.context import RunContext, add_common, artefact_root, resolve_data
from benchmarks.experiments.fig6 import face_window, figure_indices
from benchmarks.experiments.landmarks import PROTOCOLS
from densereg.data import datasets, groundtruth

FIGURE_IMAGES = 4
HEADS = ("input", "GT u", "est. u", "GT v", "est. v", "DenseReg", "DenseReg+MDM")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``benchmarks.run fig8`` beyond the common ones."""
    parser.add_argument("--images", type=int, default=FIGURE_IMAGES, help="faces shown (default 4)")
    parser.add_argument("--preset", default="default", help="configuration preset of DenseReg and MDM")
    parser.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda[:N]")
    parser.add_argument("--checkpoint", type=Path, default=None, help="DenseReg checkpoint (default: the preset's)")


def face_rows(samples, model, fit, norm: str) -> list[dict]:
    """Per face: image, GT landmarks, GT dense map (or None), estimated UV map, both landmark sets, errors.

    A face DenseReg does not find gets no shapes (its panels say "missed"), never a silent skip.
    """
    rows = []
    for sample in samples:
        image = sample.image()
        box = np.asarray(sample.box, float)
        try:
            gt_dense = groundtruth.dense_gt(sample, image_shape=image.shape[:2])
        except ValueError:   # no fitting (real 300-W test images): no GT u, v
            gt_dense = None
        uv = model.uv(image)
        shape = model.landmarks(image, box=box)
        fitted = None if shape is None else fit(image, shape)
        err = {name: (np.inf if s is None else float(metrics.nme(s, sample.landmarks, norm=norm)))
               for name, s in (("DenseReg", shape), ("DenseReg+MDM", fitted))}
        rows.append(dict(name=sample.name, image=image, box=box, gt=sample.landmarks, gt_dense=gt_dense, uv=uv,
                         shapes={"DenseReg": shape, "DenseReg+MDM": fitted}, errors=err))
    return rows


def _field(values, mask):
    """``values`` on ``mask``, NaN elsewhere (drawn black)."""
    return np.where(mask, values, np.nan).astype(float)


def draw(path: Path, rows: list[dict], title: str) -> Path:
    """Fig. 8: one row per face with the seven panels of :data:`HEADS`, face-cropped, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), len(HEADS), figsize=(2.0 * len(HEADS), 2.1 * len(rows) + 0.8),
                             squeeze=False)
    for r, row in enumerate(rows):
        rs, cs = face_window(row["box"], row["image"].shape[:2])
        offset = np.array([cs.start, rs.start], float)
        est, gt = row["uv"], row["gt_dense"]
        fields = [None,
                  None if gt is None else _field(gt.u, gt.mask), _field(est.u, est.mask),
                  None if gt is None else _field(gt.v, gt.mask), _field(est.v, est.mask)]
        for c, head in enumerate(HEADS):
            ax = axes[r, c]
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(head, fontsize=9)
            crop = row["image"][rs, cs]
            if c == 0:
                ax.imshow(crop)
            elif c < 5:
                ax.imshow(np.zeros(crop.shape[:2]), cmap="gray", vmin=0, vmax=1)
                if fields[c] is None:
                    ax.text(0.5, 0.5, "no 3D fitting:\nno GT", ha="center", va="center", color="w",
                            fontsize=7, transform=ax.transAxes)
                else:
                    ax.imshow(fields[c][rs, cs], cmap="jet", vmin=0, vmax=1, interpolation="nearest")
            else:
                ax.imshow(crop)
                shape, truth = row["shapes"][head], row["gt"] - offset
                ax.plot(*truth.T, ".", color="lime", ms=2.5)
                if shape is None:
                    ax.set_xlabel("missed", fontsize=7)
                    continue
                est_pts = shape - offset
                for a, b in zip(truth, est_pts):
                    ax.plot([a[0], b[0]], [a[1], b[1]], "-", color="yellow", lw=0.6)
                ax.plot(*est_pts.T, ".", color="red", ms=2.5)
                ax.set_xlabel(f"error {row['errors'][head]:.3f}", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    records.atomic_write_bytes(path, buffer.getvalue())
    return path


def run(args) -> Path:
    """The ``fig8`` command: pick the faces, run DenseReg and DenseReg+MDM on them, draw the figure."""
    from benchmarks.baselines import networks
    from benchmarks.fitters import get_fitter
    from benchmarks.initialisers import densereg_checkpoint
    from densereg import DenseReg

    if args.images < 1:
        raise ValueError("--images must be at least 1")
    protocol = PROTOCOLS["300w"]
    source, root = resolve_data(protocol.folder, args.source, args.root)
    samples = datasets.load_dataset("300w", root, "test", **protocol.load_options)
    if args.limit is not None:
        samples = samples[:args.limit]
    if not samples:
        raise ValueError(f"{source} 300w/test under {root} has no samples")
    keep = [samples[i] for i in figure_indices(len(samples), args.images)]
    ctx = RunContext(source=source, root=root, dataset="300w", runs_dir=artefact_root(args.runs, source, "300w"),
                     preset=args.preset, seed=args.seed, checkpoint=args.checkpoint, device=args.device)
    artefact = densereg_checkpoint(ctx, networks)
    model = DenseReg.load(artefact.path, device=ctx.device, data_root=ctx.root)
    fit = get_fitter("mdm", ctx)
    rows = face_rows(keep, model, fit, protocol.norm)
    for row in rows:
        print(f"[fig8] {row['name']}: " + ", ".join(f"{k} {v:.4f}" for k, v in row["errors"].items()),
              file=sys.stderr)
    label = "SYNTHETIC benchmark" if source == "synthetic" else "real 300-W"
    title = (f"Fig. 8 ({label}, preset {ctx.preset}, seed {args.seed}): green GT, red estimate, yellow error; "
             "u, v in jet on [0, 1]")
    path = draw(Path(args.results) / "figures" / f"fig8_{source}.png", rows, title)
    print(f"[fig8] wrote {path}", file=sys.stderr)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.experiments.fig8", description=__doc__.splitlines()[0])
    add_common(parser)
    add_arguments(parser)
    run(parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
