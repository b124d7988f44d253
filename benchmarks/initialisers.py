"""Initialisers: where a landmark fit starts. The ``INITIALISERS`` registry and its small factories.

An **initialiser** is a callable ``init(image, box) -> (N, 2) float array | None``: ``image`` is ``H×W×3``
uint8 RGB, ``box`` the ground-truth face box ``(x0, y0, x1, y1)``, given only to say *which* face of the image
is evaluated (a method that finds faces keeps the one that overlaps it most, ``densereg.geometry.boxes.pick``,
IoU >= 0.3; none crops or searches by it); ``None`` (or raising :class:`benchmarks.context.Miss`) means the
face was missed, which the harness scores as an error of +inf and lists. Ground-truth landmarks never reach
it. An initialiser that also needs the sample's name sets ``needs_name = True`` and is then called as
``init(image, box, name=sample.name)``.

The registry holds factories ``factory(ctx) -> initialiser`` (:class:`benchmarks.context.RunContext`); every
trained artefact a factory uses goes through ``benchmarks.baselines.artefacts.ensure_artefact`` and is
recorded in ``ctx`` for the result row. Spec forms: see :mod:`benchmarks.context` (registry key,
``boxes:DIR``, ``preds:DIR``, ``package.module:callable``).
"""

from __future__ import annotations

import hashlib

from dataclasses import asdict
from pathlib import Path

import numpy as np

from benchmarks.baselines.artefacts import ensure_artefact
from benchmarks.baselines.boxes import BoxToShape, detector_initialiser, detector_regression
from benchmarks.context import Miss, resolve_factory
from densereg.data import formats
from densereg.geometry.boxes import MIN_IOU, pick


def mean_shape_factory(ctx):
    """``mean-shape``: the training mean shape placed in the **evaluated face's GT box** (a lower baseline).

    The one labelled exception to "the box only says which face": an oracle-box baseline, not a detector. It
    measures what shape knowledge alone gives once the face is perfectly located, and it never misses.
    """
    regression = BoxToShape.from_samples(ctx.train_samples())

    def mean_shape(image, box):
        return regression(np.asarray(box, dtype=float))

    return mean_shape


def boxes_factory(directory, ctx, min_iou=MIN_IOU):
    """``boxes:DIR``: the face box read from ``DIR/<stem>.pts`` (4-point box files, e.g. MDM's ``bbs/300w``).

    The box is used like a detection: kept when it overlaps the evaluated face's GT box (``pick``), then the
    training mean shape is placed in it by :class:`BoxToShape`, learnt on the training split's boxes. A sample
    without a box file is a miss.

    Raises:
        NotADirectoryError: ``DIR`` is not a folder.
    """
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise NotADirectoryError(f"boxes:{directory}: not a folder of 4-point <stem>.pts box files")
    regression = BoxToShape.from_samples(ctx.train_samples())

    def boxes(image, box, name):
        path = directory / f"{Path(name).name}.pts"
        if not path.is_file():
            raise Miss(f"no box file {path}")
        picked = pick(formats.read_box_pts(path), box, min_iou)
        if picked is None:
            raise Miss(f"the box in {path} is not this face (IoU < {min_iou})")
        return regression(picked[1])

    boxes.needs_name = True
    return boxes


# Landmarks per face of each evaluated dataset (300-W's 68 markup; the iBUG ears' 55), for ``preds:DIR``.
POINTS = {"300w": 68, "300vw": 68, "helen": 68, "ears": 55}


def preds_factory(directory, ctx):
    """``preds:DIR``: precomputed landmarks, one ``.pts`` per image, as the Menpo benchmark takes submissions.

    The prediction of sample ``name`` (e.g. ``01_Indoor/indoor_001``) is ``DIR/<name>.pts``, or else
    ``DIR/<stem>.pts`` (``indoor_001.pts``), so a method written in any language is scored beside the recorded
    baselines without Python glue. A missing file is a miss (scored +inf and listed). Every ``.pts`` under
    ``DIR`` is read here, before any image, so a malformed file (or one with another number of points than the
dataset's :data:`POINTS`) stops the run with its name and problem. The recorded identity is the file count and
a hash of the files' names and contents, so a changed submission is a new row.

    Raises:
        NotADirectoryError: ``DIR`` is not a folder.
        formats.DatasetError: a prediction file is malformed (the message names it).
    """
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise NotADirectoryError(f"preds:{directory}: not a folder of <sample name>.pts prediction files")
    digest = hashlib.sha256()
    predictions = {}
    for path in sorted(directory.rglob("*.pts")):
        name = path.relative_to(directory).with_suffix("").as_posix()
        predictions[name] = formats.read_pts(path, expected_n=POINTS.get(ctx.dataset))
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    ctx.record("preds", f"{len(predictions)} files in {directory} sha256:{digest.hexdigest()[:12]}")

    def preds(image, box, name):
        points = predictions.get(Path(name).as_posix(), predictions.get(Path(name).name))
        if points is None:
            raise Miss(f"no prediction {directory / name}.pts (nor {directory / Path(name).name}.pts)")
        return points

    preds.needs_name = True
    return preds


def densereg_factory(ctx):
    """``densereg``: ``DenseReg.load(checkpoint).landmarks(image, box=box)``, the library's own read-out.

    The box only picks the face among those the model finds (IoU >= 0.3), exactly as for the detectors; no
    crop. The checkpoint is ``--checkpoint`` (checked, never rebuilt) or the preset's default one, trained on
    first use and rebuilt when its config or training data changed (``benchmarks.baselines.networks``).
    """
    from benchmarks.baselines import networks

    artefact = densereg_checkpoint(ctx, networks)
    from densereg import DenseReg   # after the checkpoint check: a missing file is reported first

    model = DenseReg.load(artefact.path, device=ctx.device, data_root=ctx.root)
    ident = getattr(model, "identity", None)   # the library's own account of the checkpoint, when it gives one
    if isinstance(ident, dict) and ident.get("checkpoint"):
        variant = f"{ident['preset']}/K{ident.get('K')}" if ident.get("preset") else artefact.label
        if ident.get("preset") and getattr(model.config, "depth", False):
            variant += "+depth"   # never averaged with the model without depth (Fig. 9 compares the two)
        ctx.record("densereg", f"{ident['checkpoint']}/{variant}")
    else:
        ctx.record("densereg", artefact.identity)

    def densereg(image, box):
        return model.landmarks(image, box=np.asarray(box, dtype=float))

    densereg.model = model   # for batched read-outs (benchmarks.experiments.tracking)
    return densereg


# Evaluated datasets whose DenseReg trains on their own training split (ears: dense GT by thin-plate spline,
# paper Sec. 4.7); the others use the preset's 300W-LP-style fittings.
DENSEREG_TRAINING = {"ears": {"dataset": "ears"}}


def densereg_checkpoint(ctx, networks):
    """The DenseReg checkpoint artefact of a run: ``--checkpoint`` or ``<cache>/densereg-<preset>`` trained
    with the run's seed (``ctx.cache_dir``: ``<runs>/<source>[/seed<S>]``)."""
    preset = ctx.preset   # resolved by RunContext: cpu on synthetic, paper on real unless named
    training = {**DENSEREG_TRAINING.get(ctx.dataset, {}),
                **({"iterations": ctx.iterations} if ctx.iterations else {})}
    folder = f"densereg-{preset}" + (f"-it{ctx.iterations}" if ctx.iterations else "")
    if ctx.checkpoint is not None:
        if ctx.preset_named:   # the user named a preset: the checkpoint must be that model
            return networks.ensure_network(preset, Path(ctx.checkpoint).parent, source=ctx.source,
                                           root=ctx.root, checkpoint=ctx.checkpoint, seed=ctx.seed, **training)
        return networks.checkpoint_artefact(ctx.checkpoint, networks.train_command(preset, "DIR",
                                                                                    source=ctx.source, **training),
                                            root=ctx.root)
    return networks.ensure_network(preset, Path(ctx.cache_dir) / folder, source=ctx.source,
                                   root=ctx.root, seed=ctx.seed, **training)


def _run_command(ctx, init):
    seed = f" --seed {ctx.seed}" if ctx.seed else ""
    return f"python -m benchmarks.run {ctx.dataset} --root {ctx.root} --init {init}{seed} (builds it on first use)"


def seeded_order(samples, seed):
    """``samples`` as they are for seed 0; a ``seed``-shuffled copy otherwise, so that the strided subset a
    box regression learns from is another sample of the training split for each seed."""
    if not int(seed):
        return samples
    order = np.random.default_rng(int(seed)).permutation(len(samples))
    return [samples[i] for i in order]


def detector_factory(ctx, name, detector, detector_identity, n_fit=300):
    """A detector → the detection that is the evaluated face → mean shape by its own box→shape regression.

    The regression (``<runs>/<source>/<name>_box2shape.npz``) is an artefact keyed by the detector's identity
    and the training data, so a retrained detector never reuses the regression of the old one. For a seed other
    than 0 its training faces are another seeded subset (:func:`seeded_order`) and the seed is in its config.
    """
    path = Path(ctx.cache_dir) / f"{name}_box2shape.npz"
    config = {"detector": detector_identity, "n_fit": n_fit, **({"seed": ctx.seed} if ctx.seed else {})}
    art = ensure_artefact(path, config, ctx.train_fingerprint(),
                          lambda p: detector_regression(detector, seeded_order(ctx.train_samples(), ctx.seed),
                                                        n_fit).save(p),
                          _run_command(ctx, name))
    ctx.record(f"{name}_box2shape", art.identity)
    return detector_initialiser(detector, BoxToShape.load(path))


def hog_svm_factory(ctx):
    """``hog-svm``: King's max-margin HOG + linear SVM detector (the paper's [23]) → mean shape.

    On real data dlib's own frontal face detector; on synthetic faces the same detector trained with dlib on
    the training split (``python -m benchmarks.baselines.hogsvm train``), an artefact under ``runs/<source>/``.
    """
    from benchmarks.baselines import hogsvm

    if ctx.source == "real":
        detector, identity = hogsvm.HogSvmDetector(None), "dlib-frontal"
    else:
        path = Path(ctx.cache_dir) / "hog_svm.npz"
        hog_config = hogsvm.HogConfig(seed=ctx.seed)
        config = asdict(hog_config)
        art = ensure_artefact(path, config, ctx.train_fingerprint(),
                              lambda p: hogsvm.train_hog_detector(ctx.train_samples(), p, hog_config),
                              hogsvm.build_command(path, ctx.root))
        identity = art.identity
        # A lower threshold raises recall (0.86 → 0.96 on the synthetic test set); pick() drops the rest.
        detector = hogsvm.HogSvmDetector(path, adjust_threshold=-0.5)
    ctx.record("hog-svm", identity)
    return detector_factory(ctx, "hog_svm", detector, identity)


def dlib68_factory(ctx):
    """``dlib-68``: dlib's frontal HOG detector + its 68-point regression-tree predictor (face_recognition_models).

    The tool many users reach for instead of DenseReg. It was trained on real 300-W faces, so it is run on
    real images only: on the synthetic benchmark it would measure a domain gap, not the method.
    """
    if ctx.source != "real":
        raise ValueError("dlib-68 was trained on real 300-W faces; run it on real images only (--source real)")
    from benchmarks.baselines import hogsvm

    detector, predictor = hogsvm.HogSvmDetector(None), hogsvm.DlibShapePredictor()
    ctx.record("dlib-68", "face_recognition_models")

    def dlib68(image, box):
        picked = pick([b for b, _ in detector.detect(image)], box)
        return None if picked is None else predictor(image, picked[1])

    return dlib68


def dpm_factory(ctx):
    """``dpm``: our deformable part model face detector (stands in for Mathias et al.'s, which is not
    available) → mean shape. An artefact ``runs/<source>/dpm-<preset>.npz`` (the preset named with ``--preset``,
    else ``cpu``), built on first use like ``python -m benchmarks.baselines.dpm_train``.
    """
    from benchmarks.baselines import dpm, dpm_config, dpm_train

    preset = ctx.preset if ctx.preset_named else "cpu"
    path = Path(ctx.cache_dir) / f"dpm-{preset}.npz"
    config = dpm_config.config_preset(preset, seed=ctx.seed)
    art = ensure_artefact(path, asdict(config), ctx.train_fingerprint(),
                          lambda p: dpm_train.train_dpm(ctx.train_samples(), p, config),
                          f"python -m benchmarks.baselines.dpm_train --root {ctx.root} --out {path} "
                          f"--preset {preset}" + (f" --set seed={ctx.seed}" if ctx.seed else ""), label=preset)
    ctx.record("dpm", art.identity)
    return detector_factory(ctx, f"dpm-{preset}", dpm.DPMDetector.load(path), art.identity)


INITIALISERS = {
    "mean-shape": mean_shape_factory,  # oracle: the evaluated face's GT box; a lower baseline
    "densereg": densereg_factory,
    "hog-svm": hog_svm_factory,
    "dpm": dpm_factory,          # ours, standing in for Mathias et al.'s DPM
    "dlib-68": dlib68_factory,   # real images only
}

# Initialisers spelt PREFIX:ARG; the factory is called as factory(ARG, ctx).
PREFIXED_INITIALISERS = {
    "boxes": boxes_factory,
    "preds": preds_factory,
}


def get_initialiser(spec, ctx):
    """Build the initialiser named by ``spec`` for ``ctx`` (registry key, ``boxes:DIR``, ``preds:DIR``, plug-in)."""
    return resolve_factory(spec, INITIALISERS, PREFIXED_INITIALISERS, "initialiser")(ctx)
