"""Initialisers: where a landmark fit starts. ``INITIALISERS`` registry, run context, box→shape regression.

An **initialiser** is a callable ``init(image, box) -> (N, 2) float array | None``: ``image`` is ``H×W×3``
uint8 RGB, ``box`` the ground-truth face box ``(x0, y0, x1, y1)``, given only to say *which* face of the image
is evaluated (a detector keeps the detection that overlaps it most, :func:`pick_detection`); ``None`` means
the face was missed, which the harness scores as an error of +inf. Ground-truth landmarks never reach it.
An initialiser that also needs the sample's name (e.g. to read a box file of the same stem) sets the
attribute ``needs_name = True`` and is then called as ``init(image, box, name=sample.name)``.

The registry holds **factories**, ``factory(ctx) -> initialiser``, so that costly set-up (loading a network,
training a detector, fitting a regression on the training split) happens once per process, with the
:class:`RunContext` saying which data, cache folder, preset and seed to use. Adding a method is one function
and one line in :data:`INITIALISERS`. Spec forms understood by :func:`get_initialiser`:

* a registry key: ``mean-shape``, ``densereg``, ...;
* ``PREFIX:ARG`` for a key of :data:`PREFIXED_INITIALISERS`: ``boxes:DIR``;
* a plug-in ``package.module:attribute`` (the module importable from ``sys.path``): the attribute is used
  as the initialiser itself, or, when it carries ``is_factory = True`` (see :func:`factory`), called with the
  :class:`RunContext` to build it. The same rule serves fitters (``benchmarks.fitters``).
"""

from __future__ import annotations

import functools
import importlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.records import atomic_write_bytes
from densereg.data import datasets, formats
from densereg.geometry.boxes import MIN_IOU, iou, pick as pick_detection
from densereg.registry import lookup

# The training split whose annotations an initialiser (or fitter) may learn from, per evaluated dataset:
# (dataset, split) for datasets.load_dataset. Helen is evaluated with models trained on 300-W, as in the paper.
TRAIN_SPLITS = {
    "300w": ("300w", "train"),
    "helen": ("300w", "train"),
    "300vw": ("300vw", "train"),
    "ears": ("ears", "train"),
}

@dataclass
class RunContext:
    """What a factory needs to build a method for one benchmark run.

    Attributes:
        source: ``"real"`` or ``"synthetic"``.
        root: the data root of ``source`` (laid out as ``datasets.LAYOUT``).
        dataset: the evaluated dataset (a key of :data:`TRAIN_SPLITS`).
        runs_dir: git-ignored cache for trained artefacts of this source, ``runs/<source>/``.
        preset: the named configuration preset (recorded with every result).
        seed: the run's seed.
        checkpoint: an explicit DenseReg checkpoint, or None for the method's default.
        device: ``"auto"``, ``"cpu"`` or a CUDA device string (:meth:`torch_device` resolves it).
    """

    source: str
    root: Path
    dataset: str
    runs_dir: Path
    preset: str = "default"
    seed: int = 0
    checkpoint: Path | None = None
    device: str = "auto"
    _train: list | None = field(default=None, init=False, repr=False, compare=False)

    def train_samples(self):
        """The training split's samples for :attr:`dataset` (see :data:`TRAIN_SPLITS`), read once and cached.

        Raises:
            KeyError: the dataset has no training split registered.
            formats.DatasetError: the training data is missing or malformed.
        """
        if self._train is None:
            name, split = lookup(TRAIN_SPLITS, self.dataset, "dataset with a training split")
            self._train = datasets.load_dataset(name, self.root, split)
        return self._train

    def artefact_dir(self, *parts):
        """``runs_dir/<parts...>``, created: where a method caches what it trains for this data source."""
        path = Path(self.runs_dir).joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def torch_device(self):
        """The device string to use: ``"auto"`` becomes ``"cuda"`` when available, else ``"cpu"``."""
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"


def factory(fn):
    """Mark ``fn`` as a factory ``fn(ctx) -> method`` for plug-in loading (sets ``fn.is_factory = True``)."""
    fn.is_factory = True
    return fn


# ----------------------------------------------------------------------------------------------------------------
# Geometry shared by the box-based initialisers


def _box_features(boxes):
    """``(B, 2)`` widths and heights and ``(B, 2)`` centres of ``(B, 4)`` boxes."""
    boxes = np.asarray(boxes, dtype=float).reshape(-1, 4)
    size = boxes[:, 2:] - boxes[:, :2]
    return size, 0.5 * (boxes[:, :2] + boxes[:, 2:])


class BoxToShape:
    """Place a mean shape in a face box by a regression learnt from (box, landmarks) training pairs.

    Detector boxes are not landmark boxes (each detector has its own margins and offsets), so the shape is not
    simply stretched to fill the box. Instead:

    1. the mean shape ``m`` is the average of the training shapes after removing each one's centroid and
       dividing by its RMS radius (translation and scale only: a box carries no rotation);
    2. each training shape ``P_i`` gets the least-squares similarity-without-rotation that maps ``m`` onto it,
       ``P_i ≈ s_i·m + t_i`` (``t_i`` = centroid of ``P_i``, ``s_i = <P_i − t_i, m> / <m, m>``);
    3. ``s_i`` and the offset ``t_i − c_i`` of that placement from the box centre ``c_i`` are regressed, by
       linear least squares without intercept, on the box width and height: ``s ≈ [w, h]·α``,
       ``t − c ≈ [w, h]·B``. No intercept keeps the rule equivariant: a box twice as large (or moved) gives a
       shape twice as large (or moved).

    Attributes:
        mean_shape: ``(N, 2)`` centred, unit-RMS-radius mean shape.
        alpha: ``(2,)`` scale coefficients on (w, h).
        offset: ``(2, 2)`` centre-offset coefficients: rows (w, h), columns (x, y).
    """

    def __init__(self, mean_shape=None, alpha=None, offset=None):
        self.mean_shape, self.alpha, self.offset = mean_shape, alpha, offset

    def fit(self, boxes, shapes):
        """Learn the regression from ``(B, 4)`` boxes and their ``(B, N, 2)`` landmark shapes; returns self.

        Raises:
            ValueError: mismatched counts, fewer than 2 pairs, a degenerate box or shape.
        """
        boxes = np.asarray(boxes, dtype=float).reshape(-1, 4)
        shapes = np.asarray(shapes, dtype=float)
        if shapes.ndim != 3 or shapes.shape[-1] != 2 or len(shapes) != len(boxes):
            raise ValueError(f"need (B, 4) boxes and (B, N, 2) shapes, got {boxes.shape} and {shapes.shape}")
        if len(boxes) < 2:
            raise ValueError(f"need at least 2 (box, shape) pairs to learn a box→shape regression, got {len(boxes)}")
        size, centre = _box_features(boxes)
        if not (size > 0).all():
            raise ValueError(f"{int((~(size > 0).all(axis=1)).sum())} training boxes have no positive width/height")
        centred = shapes - shapes.mean(axis=1, keepdims=True)
        radius = np.sqrt((centred ** 2).sum(axis=2).mean(axis=1))
        if not (radius > 0).all():
            raise ValueError("a training shape has all its points at one place")
        mean = (centred / radius[:, None, None]).mean(axis=0)
        mean /= np.sqrt((mean ** 2).sum(axis=1).mean())
        scale = np.einsum("bnd,nd->b", centred, mean) / (mean ** 2).sum()
        translation = shapes.mean(axis=1)
        self.mean_shape = mean
        self.alpha = np.linalg.lstsq(size, scale, rcond=None)[0]
        self.offset = np.linalg.lstsq(size, translation - centre, rcond=None)[0]
        return self

    def __call__(self, box):
        """The mean shape placed in ``box`` (``(4,)`` → ``(N, 2)``; ``(B, 4)`` → ``(B, N, 2)``)."""
        if self.mean_shape is None:
            raise RuntimeError("BoxToShape used before fit() or load()")
        single = np.ndim(box) == 1
        size, centre = _box_features(box)
        scale = size @ self.alpha
        translation = centre + size @ self.offset
        shapes = scale[:, None, None] * self.mean_shape[None] + translation[:, None, :]
        return shapes[0] if single else shapes

    def save(self, path):
        """Store the fitted regression as ``.npz`` (atomically)."""
        buffer = io.BytesIO()
        np.savez(buffer, mean_shape=self.mean_shape, alpha=self.alpha, offset=self.offset)
        atomic_write_bytes(path, buffer.getvalue())

    @classmethod
    def load(cls, path):
        """A regression stored by :meth:`save`."""
        with np.load(path) as data:
            return cls(data["mean_shape"], data["alpha"], data["offset"])

    @classmethod
    def from_samples(cls, samples):
        """Fit on the samples' own ``box`` (box file when the dataset has one, else landmark bbox) and landmarks.

        Samples without landmarks are skipped.
        """
        pairs = [(s.box, s.landmarks) for s in samples if s.landmarks is not None]
        if not pairs:
            raise ValueError("no annotated training samples to learn the box→shape regression from")
        return cls().fit(np.stack([b for b, _ in pairs]), np.stack([p for _, p in pairs]))


# ----------------------------------------------------------------------------------------------------------------
# Initialisers implemented here


def mean_shape_factory(ctx):
    """``mean-shape``: the training mean shape placed in the **evaluated face's GT box** (a lower baseline).

    This is an oracle-box baseline, not a detector: it measures what shape knowledge alone gives once the face
    is perfectly located, and it never misses. Report it as such ("mean shape in GT box").
    """
    regression = BoxToShape.from_samples(ctx.train_samples())

    def mean_shape(image, box):
        return regression(np.asarray(box, dtype=float))

    return mean_shape


def boxes_factory(directory, ctx, min_iou=MIN_IOU):
    """``boxes:DIR``: the face box read from ``DIR/<stem>.pts`` (4-point box files, e.g. MDM's ``bbs/300w``).

    The box is used like a detection: kept when it overlaps the evaluated face's GT box (:func:`pick_detection`),
    then the training mean shape is placed in it by :class:`BoxToShape`, learnt on the training split's boxes
    (its box files when present, else the landmarks' bounding boxes). A sample without a box file is a miss.

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
            return None
        picked = pick_detection(formats.read_box_pts(path), box, min_iou)
        return None if picked is None else regression(picked[1])

    boxes.needs_name = True
    return boxes


def densereg_checkpoint(ctx):
    """The DenseReg checkpoint a run uses: ``--checkpoint`` or ``runs/<source>/densereg-<preset>/last.pt``.

    A missing default checkpoint is trained first (the command is printed), so a fresh clone works end to end.
    """
    from densereg.nn import train

    if ctx.checkpoint is not None:
        return Path(ctx.checkpoint)
    preset = ctx.preset if ctx.preset in train.PRESETS else ("cpu" if ctx.source == "synthetic" else "paper")
    out = Path(ctx.runs_dir) / f"densereg-{preset}"
    path = out / "last.pt"
    cfg = train.make_config(preset, source=ctx.source, root=str(ctx.root))
    done = path.is_file() and train.read_checkpoint(path)["step"] >= cfg.iterations
    if not done:
        import sys

        print(f"[densereg] training the {preset} model into {out} (python -m densereg.nn.train --preset {preset} "
              f"--source {ctx.source} --out {out})", file=sys.stderr)
        train.train(cfg, out)
    return path


def shape_model(ctx):
    """The PCA shape model of the training annotations (Sec. 4.3 refinement), cached under ``runs_dir``."""
    from densereg.readout import landmarks

    path = Path(ctx.runs_dir) / f"shape_model_{ctx.dataset}.npz"
    if path.is_file():
        return landmarks.ShapeModel.load(path)
    model = landmarks.ShapeModel.fit(np.stack([s.landmarks for s in ctx.train_samples()]))
    Path(ctx.runs_dir).mkdir(parents=True, exist_ok=True)
    formats.atomic_write_bytes(path, model.npz_bytes())
    return model


def densereg_factory(ctx, refine=True):
    """``densereg``: dense UV field → landmark read-out in the evaluated face's region → PCA refinement.

    ``densereg-raw`` (``refine=False``) keeps the raw read-out; points never found (self-occluded) are filled
    from the mean shape aligned to the found ones.
    """
    from densereg.geometry import templates
    from densereg.readout import forward as infer, landmarks
    from densereg.nn import train

    model, cfg = train.load_model(densereg_checkpoint(ctx))
    model.to(ctx.torch_device())
    template = templates.template_for("builtin" if cfg.source == "synthetic" else "bfm")
    pca = shape_model(ctx) if refine else None

    def densereg(image, box):
        est = infer.predict(model, image, image_scale=cfg.image_scale)
        points = landmarks.landmarks_from_uv(est, template, np.asarray(box, float), shape_model=pca)
        return None if np.isnan(points).all() else points   # no face found in the region: a miss

    return densereg


def detector_initialiser(ctx, name, detector, n_fit=300):
    """Detector → the detection that is the evaluated face → mean shape by a box→shape regression.

    The regression is learnt from the detector's *own* boxes on (up to ``n_fit``) training images paired with
    their landmarks, since a detector's boxes are not landmark boxes; it is cached as
    ``runs/<source>/<name>_box2shape.npz``.
    """
    path = Path(ctx.runs_dir) / f"{name}_box2shape.npz"
    if path.is_file():
        regression = BoxToShape.load(path)
    else:
        samples = ctx.train_samples()
        boxes, shapes = [], []
        for s in samples[:: max(1, len(samples) // n_fit)]:
            picked = pick_detection([b for b, _ in detector.detect(s.image())], s.box)
            if picked is not None:
                boxes.append(picked[1])
                shapes.append(s.landmarks)
        regression = BoxToShape().fit(np.stack(boxes), np.stack(shapes))
        regression.save(path)

    def initialise(image, box):
        picked = pick_detection([b for b, _ in detector.detect(image)], box)
        return None if picked is None else regression(picked[1])

    return initialise


def hog_svm_factory(ctx):
    """``hog-svm``: King's max-margin HOG + linear SVM detector (the paper's [23]) → mean shape.

    On real data dlib's own frontal face detector; on synthetic faces the same detector trained with dlib on
    the training split (``python -m benchmarks.baselines.hogsvm train``), cached under ``runs/<source>/``.
    """
    from benchmarks.baselines import hogsvm

    if ctx.source == "real":
        detector = hogsvm.HogSvmDetector(None)
    else:
        path = Path(ctx.runs_dir) / "hog_svm.npz"
        if not path.is_file():
            hogsvm.train_hog_detector(ctx.train_samples(), path)
        # A lower threshold raises recall (0.86 → 0.96 on the synthetic test set); pick_detection drops the rest.
        detector = hogsvm.HogSvmDetector(path, adjust_threshold=-0.5)
    return detector_initialiser(ctx, "hog_svm", detector)


def dlib68_factory(ctx):
    """``dlib-68``: dlib's frontal HOG detector + its 68-point regression-tree predictor (face_recognition_models).

    The tool many users reach for instead of DenseReg. It was trained on real 300-W faces, so it is run on
    real images only: on the synthetic benchmark it would measure a domain gap, not the method.
    """
    if ctx.source != "real":
        raise ValueError("dlib-68 was trained on real 300-W faces; run it on real images only (--source real)")
    from benchmarks.baselines import hogsvm

    detector, predictor = hogsvm.HogSvmDetector(None), hogsvm.DlibShapePredictor()

    def dlib68(image, box):
        picked = pick_detection([b for b, _ in detector.detect(image)], box)
        return None if picked is None else predictor(image, picked[1])

    return dlib68


def dpm_factory(ctx):
    """``dpm``: our deformable part model face detector (stands in for Mathias et al.'s, which is not available)
    → mean shape. Trained on the training split on first use (``python -m benchmarks.baselines.dpm_train``), cached as
    ``runs/<source>/dpm-<preset>.npz`` (the run's preset when DPM has one, else ``cpu``).
    """
    from benchmarks.baselines import dpm, dpm_config, dpm_train

    preset = ctx.preset if ctx.preset in dpm_config.PRESETS else "cpu"
    path = Path(ctx.runs_dir) / f"dpm-{preset}.npz"
    if not path.is_file():
        Path(ctx.runs_dir).mkdir(parents=True, exist_ok=True)
        dpm_train.train_dpm(ctx.train_samples(), path, dpm_config.config_preset(preset))
    return detector_initialiser(ctx, f"dpm-{preset}", dpm.DPMDetector.load(path))


INITIALISERS = {
    "mean-shape": mean_shape_factory,  # oracle: the evaluated face's GT box; a lower baseline
    "densereg": densereg_factory,
    "densereg-raw": lambda ctx: densereg_factory(ctx, refine=False),
    "hog-svm": hog_svm_factory,
    "dpm": dpm_factory,          # ours, standing in for Mathias et al.'s DPM
    "dlib-68": dlib68_factory,   # real images only
}

# Initialisers spelt PREFIX:ARG; the factory is called as factory(ARG, ctx).
PREFIXED_INITIALISERS = {
    "boxes": boxes_factory,
}


# ----------------------------------------------------------------------------------------------------------------
# Resolving a spec (registry key, PREFIX:ARG or module:attribute) to a factory


def load_plugin(spec):
    """Import ``package.module:attribute`` (the attribute may be dotted) and return the object.

    Raises:
        ValueError: ``spec`` has no ``:``, the module cannot be imported, the attribute is missing or is not
            callable; the message says which.
    """
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"plug-in {spec!r} must be spelt package.module:callable")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"plug-in {spec!r}: cannot import module {module_name!r} ({e})") from e
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"plug-in {spec!r}: {obj.__name__ if hasattr(obj, '__name__') else obj!r} has no "
                             f"attribute {part!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"plug-in {spec!r} is a {type(obj).__name__}, not a callable")
    return obj


def _plugin_factory(obj, ctx):
    return obj(ctx) if getattr(obj, "is_factory", False) else obj


def resolve_factory(spec, registry, prefixed, kind):
    """The factory ``factory(ctx) -> method`` that ``spec`` names (see the module docstring for the forms).

    Args:
        spec: registry key, ``PREFIX:ARG`` or ``module:attribute``.
        registry: ``{name: factory}``.
        prefixed: ``{prefix: factory(arg, ctx)}``.
        kind: ``"initialiser"`` or ``"fitter"``, for messages.

    Raises:
        KeyError: ``spec`` is none of the forms; the message names every valid key and form.
        ValueError: a plug-in cannot be loaded.
    """
    if spec in registry:
        return registry[spec]
    prefix, sep, arg = spec.partition(":")
    if sep and prefix in prefixed:
        if not arg:
            raise KeyError(f"{kind} {spec!r}: give the argument after '{prefix}:'")
        return functools.partial(prefixed[prefix], arg)
    if sep and "/" not in prefix:
        return functools.partial(_plugin_factory, load_plugin(spec))
    forms = [*sorted(registry), *(f"{p}:ARG" for p in sorted(prefixed)), "package.module:callable"]
    raise KeyError(f"unknown {kind} {spec!r}; valid: {', '.join(forms)}")


def get_initialiser(spec, ctx):
    """Build the initialiser named by ``spec`` for ``ctx`` (registry key, ``boxes:DIR`` or a plug-in)."""
    return resolve_factory(spec, INITIALISERS, PREFIXED_INITIALISERS, "initialiser")(ctx)
