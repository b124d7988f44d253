"""Fig. 11: pairs of estimated and ground-truth deformation-free (u, v) fields on test ears.

    python -m benchmarks.experiments.ear_pairs --source synthetic [--preset cpu] [--iterations N] [--n 3]

The paper shows, for a few test ears, the correspondence DenseReg estimates beside the thin-plate-spline
ground truth (Sec. 4.7). This draws the same: for ``--n`` test ears spread over the split, the image crop
around the ear, the estimated field (u → red, v → green, over the predicted foreground) and the ground-truth
field (``densereg.geometry.ear.ear_gt`` against the checkpoint's own reference ear), with the per-pixel UV
error (median over the ground-truth ear region, where both are foreground) in each title. The DenseReg
checkpoint is the one ``python -m benchmarks.run ears --init densereg`` uses for the same source, preset,
iterations and seed (trained on first use, under the same artefact policy). Writes
``<results>/figures/fig11_ears_<source>.png``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from benchmarks import records
from benchmarks.baselines import networks
from benchmarks.context import RunContext, add_common, artefact_root, resolve_data
from benchmarks.initialisers import densereg_checkpoint
from densereg.data import datasets
from densereg.geometry import ear


def field_image(u, v, mask, image):
    """RGB float image: the grey image where ``mask`` is False, (u, v, 0.35) where it is True."""
    grey = image.astype(np.float32).mean(axis=2, keepdims=True) / 255 * 0.6
    out = np.repeat(grey, 3, axis=2)
    out[mask] = np.stack([u[mask], v[mask], np.full(mask.sum(), 0.35)], axis=1)
    return np.clip(out, 0, 1)


def uv_error(estimate, gt):
    """Median per-pixel Euclidean UV error over the GT region where the estimate is foreground (with a finite
    (u, v)), and the fraction of the GT region the estimate covers."""
    both = gt.mask & np.asarray(estimate.mask, bool) & np.isfinite(estimate.u) & np.isfinite(estimate.v)
    if not both.any():
        return float("nan"), 0.0
    err = np.hypot(estimate.u[both] - gt.u[both], estimate.v[both] - gt.v[both])
    return float(np.median(err)), float(both.sum() / max(gt.mask.sum(), 1))


def draw(samples, estimates, gts, title, path):
    """One row per ear: image crop, estimated field, ground-truth field."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(samples), 3, figsize=(7.5, 2.6 * len(samples)), squeeze=False)
    for row, (s, est, gt) in enumerate(zip(samples, estimates, gts)):
        image = s.image()
        x0, y0, x1, y1 = s.box
        pad = 0.25 * max(x1 - x0, y1 - y0)
        r0, r1 = int(max(y0 - pad, 0)), int(min(y1 + pad, image.shape[0]))
        c0, c1 = int(max(x0 - pad, 0)), int(min(x1 + pad, image.shape[1]))
        crop = (slice(r0, r1), slice(c0, c1))
        median, cover = uv_error(est, gt)
        panels = ((image[crop], f"{Path(s.name).name}"),
                  (field_image(np.nan_to_num(est.u), np.nan_to_num(est.v), np.asarray(est.mask, bool), image)[crop],
                   f"estimated (median UV err {median:.3f}, {100 * cover:.0f}% covered)"),
                  (field_image(np.nan_to_num(gt.u), np.nan_to_num(gt.v), gt.mask, image)[crop], "ground truth (TPS)"))
        for ax, (picture, text) in zip(axes[row], panels):
            ax.imshow(picture)
            ax.set_title(text, fontsize=7)
            ax.axis("off")
    fig.suptitle(title, fontsize=9)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    records.atomic_write_bytes(path, buffer.getvalue())
    return path


def run(args):
    """Fig. 11 for the run's source, preset and seed; returns the figure's path."""
    from densereg import DenseReg

    source, root = resolve_data("ears", args.source, args.root)
    ctx = RunContext(source=source, root=root, dataset="ears", runs_dir=artefact_root(args.runs, source, "ears"),
                     preset=args.preset, seed=args.seed, checkpoint=args.checkpoint, device=args.device,
                     iterations=args.iterations)
    artefact = densereg_checkpoint(ctx, networks)
    model = DenseReg.load(artefact.path, device=ctx.device, data_root=root)
    samples = datasets.load_dataset("ears", root, "test")[: args.limit]
    picks = [samples[i] for i in np.linspace(0, len(samples) - 1, min(args.n, len(samples))).astype(int)]
    estimates = model.uv([s.image() for s in picks])
    reference = model.template.landmark_uv
    gts = [ear.ear_gt(s.landmarks, reference, *s.image().shape[:2]) for s in picks]
    title = (f"Fig. 11: estimated vs ground-truth ear correspondence ({source} data, preset {ctx.preset_label}, "
             f"seed {ctx.seed}; checkpoint {artefact.identity})")
    path = draw(picks, estimates, gts, title, Path(args.results) / "figures" / f"fig11_ears_{source}.png")
    print(f"[fig11] {path}", file=sys.stderr)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.experiments.ear_pairs",
                                     description=__doc__.splitlines()[0])
    add_common(parser)
    parser.add_argument("--preset", default="default", help="the run's preset (default: cpu on synthetic data)")
    parser.add_argument("--iterations", type=int, default=None, help="as benchmarks.run ears --iterations")
    parser.add_argument("--checkpoint", type=Path, default=None, help="a DenseReg ear checkpoint (checked)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--n", type=int, default=3, help="test ears to draw (default 3, as the paper)")
    args, ignored = parser.parse_known_args(argv)
    if ignored:   # ./reproduce.sh table4 passes the landmark runs' options here too
        print(f"[fig11] options for the landmark runs, not used by the figure: {' '.join(ignored)}", file=sys.stderr)
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
