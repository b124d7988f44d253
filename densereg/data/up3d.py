"""UP-3D ("Unite the People", Lassner et al. 2017): images with SMPL fits, read without unpickling, and turned
into DenseReg's body ground truth (patch index + per-patch UV) or into the native body layout.

    python -m densereg.data.up3d --up3d DIR --smpl SMPL_NEUTRAL.npz --out DIR [--split test] [--limit N]

Layout (``reference/datasets-and-protocols.md`` §7): one flat folder ``up-3d/`` with, per sample ``NNNNN``,
``NNNNN_image.png`` and its SMPL fit, plus split lists ``train.txt``, ``val.txt``, ``trainval.txt``,
``test.txt`` whose lines look like ``/00000_image.png``. UP-3D ships each fit as a Python-2 pickle
``NNNNN_body.pkl`` (keys ``pose`` 72, ``betas`` 10, ``trans``, ``t``, ``rt``, ``f``). This project never
unpickles: it reads ``NNNNN_body.npz`` with the same keys. Converting is a one-off the user runs with the
tooling they trust, e.g. ``np.savez(out, **{k: np.asarray(d[k]) for k in FIT_KEYS})`` on each loaded dict; a
sample that has only the ``.pkl`` is refused with that advice, never skipped.

Camera: the SMPLify camera the fits were made with, a pinhole with focal ``f``, rotation ``rt`` (Rodrigues)
and translation ``t`` applied to the SMPL vertices (posed, plus ``trans``), principal point at the image
centre, x right, y down, z forward (OpenCV). We assume, as UP-3D's renders do, that the fit projects into
``NNNNN_image.png`` itself.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from densereg.data import formats
from densereg.data.sample import Sample
from densereg.geometry import body, smpl, unwrap

FIT_KEYS = ("pose", "betas", "trans", "t", "rt", "f")
SPLITS = ("train", "val", "trainval", "test")


def read_fit(path) -> dict[str, np.ndarray]:
    """One ``NNNNN_body.npz`` → ``{pose (72,), betas, trans (3,), t (3,), rt (3,), f ()}`` as float64.

    Raises:
        formats.DatasetError: unreadable, pickled contents, a key missing or a wrong size (named).
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in FIT_KEYS if k not in z.files]
            if missing:
                raise formats.DatasetError(f"{path}: missing {missing}; a UP-3D fit has {list(FIT_KEYS)}")
            fit = {k: np.asarray(z[k], np.float64) for k in FIT_KEYS}
    except formats.DatasetError:
        raise
    except (OSError, ValueError) as e:
        raise formats.DatasetError(f"{path}: not a readable plain-array .npz ({e})") from e
    sizes = {"pose": 72, "trans": 3, "t": 3, "rt": 3}
    bad = [k for k, n in sizes.items() if fit[k].size != n] + (["f"] if fit["f"].size not in (1, 2) else [])
    if bad:
        raise formats.DatasetError(f"{path}: wrong sizes for {bad}: " + ", ".join(f"{k} {fit[k].shape}" for k in bad))
    fit = {k: v.ravel() for k, v in fit.items()}
    return fit


def read_up3d(root, split: str = "test") -> list[Sample]:
    """The samples of ``split`` (a split list in ``root``): name ``NNNNN``, the image, ``extras["fit"]``.

    ``root`` is the ``up-3d`` folder itself or a folder holding it.

    Raises:
        formats.DatasetError: no split list, a listed image or its ``_body.npz`` missing (a ``.pkl`` alone is
            named with the conversion advice of the module docstring).
    """
    root = Path(root)
    if (root / "up-3d").is_dir():
        root = root / "up-3d"
    listing = root / f"{split}.txt"
    if split not in SPLITS or not listing.is_file():
        raise formats.DatasetError(f"{listing}: no such split list; UP-3D has {', '.join(s + '.txt' for s in SPLITS)}")
    samples = []
    for line in listing.read_text().split():
        name = line.strip().lstrip("/")[:5]
        image, fit = root / f"{name}_image.png", root / f"{name}_body.npz"
        if not image.is_file():
            raise formats.DatasetError(f"{listing}: lists {line}, but {image} is missing")
        if not fit.is_file():
            pkl = fit.with_suffix(".pkl")
            hint = (f"only the pickle {pkl.name} is there; this project does not unpickle: convert it once to "
                    "a plain-array .npz (see densereg.data.up3d)") if pkl.is_file() else "missing"
            raise formats.DatasetError(f"{fit}: {hint}")
        samples.append(Sample(name, image, None, np.zeros(4), {"fit": fit, "split": split}))
    if not samples:
        raise formats.DatasetError(f"{listing}: lists no samples")
    return samples


def project_fit(model: smpl.SMPLModel, fit: dict, height: int, width: int) -> np.ndarray:
    """(V, 3) SMPL vertices of a fit in the image frame: column, row, inverse depth (larger = closer)."""
    verts = model.posed(fit["pose"], fit["betas"], fit["trans"])
    cam = verts @ body.rodrigues(fit["rt"]).T + fit["t"]
    depth = cam[:, 2]
    if not (depth > 0).all():
        raise ValueError(f"{int((depth <= 0).sum())} SMPL vertices are behind the camera")
    f = fit["f"] if fit["f"].size == 2 else np.repeat(fit["f"], 2)
    return np.stack([width / 2 + f[0] * cam[:, 0] / depth, height / 2 + f[1] * cam[:, 1] / depth, 1.0 / depth], axis=1)


def fit_gt(sample: Sample, model: smpl.SMPLModel, image_shape: tuple[int, int]) -> unwrap.PatchGT:
    """Patch index and per-patch UV of a UP-3D sample, rasterised from its SMPL fit (perspective-correct)."""
    h, w = image_shape
    try:
        verts = project_fit(model, read_fit(sample.extras["fit"]), h, w)
    except ValueError as e:
        raise formats.DatasetError(f"{sample.extras['fit']}: {e}") from e
    return unwrap.render_patch_gt(model.atlas(), verts, h, w, perspective_correct=True)


def convert(up3d_root, smpl_path, out, split: str = "test", limit: int | None = None) -> Path:
    """Write ``split`` of UP-3D in the native body layout (``densereg.data.synth_body``) under ``out/<split>``:
    the image, and an ``.npz`` with the GT maps, the SMPL pose (24, 3), and ``model = "smpl"``."""
    from densereg.data import synth_body

    model = smpl.load_smpl(smpl_path)
    out = Path(out)
    for i, sample in enumerate(read_up3d(up3d_root, split)[:limit]):
        image = sample.image()
        gt = fit_gt(sample, model, image.shape[:2])
        fit = read_fit(sample.extras["fit"])
        paths = synth_body.sample_paths(out, split, i)
        paths["image"].parent.mkdir(parents=True, exist_ok=True)
        formats.write_image(paths["image"], image)
        synth_body.write_body_gt(paths["gt"], gt, fit["pose"].reshape(24, 3),
                                 np.concatenate([np.atleast_1d(fit["f"])[:1], fit["t"]]), model="smpl")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m densereg.data.up3d", description=__doc__.split("\n\n")[0])
    parser.add_argument("--up3d", type=Path, required=True, help="the up-3d folder (or one holding it)")
    parser.add_argument("--smpl", type=Path, required=True, help="an SMPL .npz (smplx's SMPL_NEUTRAL.npz)")
    parser.add_argument("--out", type=Path, required=True, help="output folder, native body layout")
    parser.add_argument("--split", default="test", choices=SPLITS)
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        out = convert(args.up3d, args.smpl, args.out, args.split, args.limit)
    except (formats.DatasetError, smpl.SMPLError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"UP-3D {args.split} written in the native body layout under {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
