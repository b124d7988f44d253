"""The ``aam`` fitter: menpofit's patch AAM fitted by Wiberg inverse-compositional Lucas-Kanade.

(trained by ``python -m benchmarks.baselines.aam_train --root ROOT --out PATH [--max-images N]``; the harness,
``benchmarks.run``, evaluates it as the ``aam`` fitter.)

Paper Sec. 4.3 refines each initialisation with an Active Appearance Model. We use the one the menpo team
published for faces: a **patch-based AAM** (appearance = patches sampled around the landmarks, no piecewise
warp) with a PCA point-distribution model, fitted by the **Wiberg inverse-compositional** Lucas-Kanade
algorithm, from any initial shape (``fit_from_shape``). Settings follow menpofit's pretrained
``load_balanced_frontal_face_fitter`` (two scales, 13×13 patches, reference diagonal 110, 5/20 shape and
30/150 appearance components) except for the features, see :class:`AAMConfig`.

menpo/menpofit are imported only through :mod:`benchmarks.baselines.menpo` (they need NumPy-2 aliases), and only
inside functions, so importing this module is cheap. menpo keeps points as ``(y, x)``; the swap to and from
the project's ``(x, y)`` happens only in :func:`to_menpo_image` and :func:`from_menpo_points`.

Training (:mod:`benchmarks.baselines.aam_train`) writes one pickle holding the trained model, the resolved
:class:`AAMConfig` and the training provenance (atomically); :meth:`AAMFitter.load` reads it back through a
restricted unpickler (:data:`SAFE_GLOBALS`) and names the training command when the file is missing, unreadable
or refers to anything an AAM does not hold.
"""

from __future__ import annotations

import functools
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.baselines.aam_wiberg import sampled_wiberg
from benchmarks.baselines.artefacts import ArtefactError
from benchmarks.baselines.menpo import import_menpo, import_menpofit
from densereg.registry import lookup

ARTEFACT_FORMAT = 1  # bump when the pickled dict changes shape

# menpo's luminosity weights (``Image.as_greyscale(mode="luminosity")``), applied in NumPy to skip a copy.
LUMINOSITY = np.array([0.2989, 0.5870, 0.1140])


def build_command(out, root="ROOT"):
    """The command line that trains the AAM stored at ``out``."""
    return f"python -m benchmarks.baselines.aam_train --root {root} --out {out}"


# ----------------------------------------------------------------------------------------------------------------
# menpo adapter: the only place where (x, y) and menpo's (y, x) meet


def to_menpo_image(image, points=None, group="PTS", greyscale=False):
    """An ``H×W×3`` uint8 RGB array as a menpo ``Image`` (channels first, float in [0, 1]).

    Args:
        image: ``H×W×3`` (or ``H×W``) uint8 array.
        points: optional ``(N, 2)`` ``(x, y)`` points, attached as landmarks ``group`` in menpo's ``(y, x)``.
        group: landmark group name.
        greyscale: return one luminosity channel (menpo's weights) instead of the three RGB channels.

    Returns:
        ``menpo.image.Image``; pixel ``[c, row, col]`` = ``image[row, col, c] / 255``.
    """
    menpo_image = import_menpo("image")
    PointCloud = import_menpo("shape").PointCloud
    pixels = np.asarray(image, dtype=np.float64) / 255.0
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if greyscale and pixels.shape[2] == 3:
        pixels = (pixels @ LUMINOSITY)[:, :, None]
    result = menpo_image.Image(np.ascontiguousarray(np.moveaxis(pixels, 2, 0)), copy=False)
    if points is not None:
        result.landmarks[group] = PointCloud(np.asarray(points, dtype=np.float64)[:, ::-1].copy())
    return result


def from_menpo_points(points):
    """A menpo ``PointCloud`` (or ``(N, 2)`` ``(y, x)`` array) as an ``(N, 2)`` ``(x, y)`` float array."""
    yx = getattr(points, "points", points)
    return np.asarray(yx, dtype=np.float64)[:, ::-1].copy()


def _menpo_point_cloud(points_xy):
    return import_menpo("shape").PointCloud(np.asarray(points_xy, dtype=np.float64)[:, ::-1].copy())


class OutsideImageError(ValueError):
    """The points (grown by the margin) do not overlap the image at all."""


def crop_around(image, points, margin):
    """Crop ``image`` to the points' bounding box grown by ``margin`` × its larger side on each edge.

    Returns:
        ``(crop, offset)``: the crop (a view) and the ``(x, y)`` of its top-left pixel in ``image``, so that
        ``points - offset`` are the points in the crop's frame.

    Raises:
        OutsideImageError: the grown box does not overlap the image.
    """
    points = np.asarray(points, dtype=np.float64)
    lo, hi = points.min(axis=0), points.max(axis=0)
    pad = margin * float(max(hi - lo))
    h, w = image.shape[:2]
    x0, y0 = (int(max(np.floor(v - pad), 0)) for v in lo)
    x1 = int(min(np.ceil(hi[0] + pad), w - 1)) + 1
    y1 = int(min(np.ceil(hi[1] + pad), h - 1)) + 1
    if x1 <= x0 or y1 <= y0:
        raise OutsideImageError(f"shape spanning {lo}..{hi} lies outside the {w}×{h} image")
    return image[y0:y1, x0:x1], np.array([x0, y0], dtype=np.float64)


# ----------------------------------------------------------------------------------------------------------------
# Configuration


def feature(name):
    """The ``menpo.feature`` function called ``name`` (see :data:`FEATURES`)."""
    return getattr(import_menpo("feature"), lookup(FEATURES, name, "AAM feature"))


# Dense features menpo 0.11.1 can compute without optional C libraries (fast_dsift needs cyvlfeat; HOG and LBP
# were removed from menpo). Names are menpo.feature attributes, resolved lazily.
FEATURES = {
    "igo": "igo",            # image gradient orientations (cos, sin): 2 channels, illumination invariant
    "gradient": "gradient",  # raw x/y gradients: 2 channels, contrast dependent
    "es": "es",              # edge structure: 2 channels, gradients normalised by a smoothed magnitude
    "no_op": "no_op",        # intensities: 1 channel
}


@dataclass
class AAMConfig:
    """Patch-AAM training and fitting settings; defaults follow menpofit's published face fitter.

    Attributes:
        features: key of :data:`FEATURES`. The published fitter uses dense SIFT (``fast_dsift``), which needs
            cyvlfeat and cannot be installed here; **IGO** (image gradient orientations, Tzimiropoulos et al.,
            the menpo group's robust feature for AAMs) is the closest available: like SIFT it keeps only the
            direction of the gradient, so it is invariant to illumination and contrast, it costs one gradient
            per fit, and its 2 channels keep the Wiberg fit cheap.
        diagonal: diagonal of the reference shape (px) at the finest scale (published fitter: 110).
        scales: image scales, coarse to fine (published: 0.5, 1.0).
        patch_shape: ``(h, w)`` of the patch around each landmark, per scale (published: 13×13 at both).
        max_shape_components / max_appearance_components: PCA components kept when training.
        n_shape / n_appearance: components used when fitting, per scale (published: 5/20 and 30/150).
        sampling: keep every ``sampling``-th row and column of each patch in the Lucas-Kanade fit (published:
            4, i.e. 16 of 13×13 pixels); speeds the fit with little loss (:func:`sampling_grids`).
        max_iters: Lucas-Kanade iterations per scale; fewer than menpofit's default 20 to keep a fit within
            the Table-2 time budget (menpofit's AAM tutorial also uses 15 then 5).
        crop_margin: training images are cropped to the landmark box grown by this fraction of its larger
            side, as menpofit's examples do (``crop_to_landmarks_proportion``), then converted to greyscale.
        fit_margin: at fit time the image is cropped to the initial shape's box grown by this fraction, so
            the per-fit feature computation does not scale with the image size.
        max_images: training images used (a seeded random subset of the split; None = all) to keep training
            within about two minutes on a 2-core machine.
        seed: seed of that subset.
    """

    features: str = "igo"
    diagonal: int = 110
    scales: tuple = (0.5, 1.0)
    patch_shape: tuple = ((13, 13), (13, 13))
    max_shape_components: int = 20
    max_appearance_components: int = 150
    n_shape: tuple = (5, 20)
    n_appearance: tuple = (30, 150)
    sampling: int = 4
    max_iters: tuple = (15, 5)
    crop_margin: float = 0.2
    fit_margin: float = 0.5
    max_images: int | None = 1000
    seed: int = 0

    @classmethod
    def from_dict(cls, values):
        """A config from :func:`dataclasses.asdict` output (lists turned back into tuples)."""
        fields = {k: tuple(map(tuple, v)) if k == "patch_shape" else tuple(v) if isinstance(v, list) else v
                  for k, v in values.items()}
        return cls(**fields)


# ----------------------------------------------------------------------------------------------------------------
# Loading a trained AAM without running code from the file


# Every global a trained AAM's pickle refers to, recorded by training a patch AAM with each FEATURES entry
# (menpo 0.11.1, menpofit 0.7.1, NumPy 2.2, pickle protocol 5), plus NumPy's array reconstructors of older
# protocols. Admitting a global lets a pickle call it; none of these can run a command or touch a file.
SAFE_GLOBALS = frozenset({
    ("menpo.feature.features", "es"), ("menpo.feature.features", "gradient"),
    ("menpo.feature.features", "igo"), ("menpo.feature.features", "no_op"),
    ("menpo.image.base", "Image"), ("menpo.model.pca", "PCAModel"), ("menpo.shape.pointcloud", "PointCloud"),
    ("menpofit.aam.base", "PatchAAM"), ("menpofit.modelinstance", "OrthoPDM"),
    ("menpofit.modelinstance", "_SimilarityModel"),
    ("menpofit.transform.homogeneous", "DifferentiableAlignmentSimilarity"),
    ("numpy", "dtype"), ("numpy", "ndarray"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "_reconstruct"),
})


class _AAMUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`SAFE_GLOBALS` (so ``__reduce__`` can call nothing else)."""

    def find_class(self, module, name):
        if (module, name) not in SAFE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing the global {module}.{name}: not a class an AAM holds")
        return super().find_class(module, name)


def load_artefact(path):
    """The dict stored by :func:`benchmarks.baselines.aam_train.train_aam` at ``path``.

    Read with :class:`_AAMUnpickler`, so a planted file cannot run code: only the globals an AAM holds are
    admitted, and anything else stops the load before it is looked up.

    Raises:
        ArtefactError: the file is missing, cannot be unpickled, or is not an AAM artefact of this format;
            the message names the ``train`` command that rebuilds it.
    """
    path = Path(path)
    command = build_command(path)
    if not path.is_file():
        raise ArtefactError(path, "no trained AAM here", command)
    import_menpofit()  # the pickle references menpofit classes, which need the shim first
    try:
        with open(path, "rb") as f:
            artefact = _AAMUnpickler(f).load()
    except Exception as e:  # truncated / foreign / planted files raise many types; all mean "rebuild it"
        raise ArtefactError(path, f"not a readable AAM pickle ({type(e).__name__}: {e})", command) from e
    if not isinstance(artefact, dict) or artefact.get("format") != ARTEFACT_FORMAT or "aam" not in artefact:
        found = artefact.get("format") if isinstance(artefact, dict) else type(artefact).__name__
        raise ArtefactError(path, f"not an AAM artefact of format {ARTEFACT_FORMAT} (found {found!r})", command)
    return artefact


# ----------------------------------------------------------------------------------------------------------------
# Fitting


def sampling_grids(config):
    """Per-scale boolean masks keeping every ``config.sampling``-th row and column of each patch, or None.

    A patch AAM needs a mask of the patch's shape: an integer step (accepted by menpofit's holistic AAMs) is
    silently misread by its patch interface, which then samples a single pixel per patch.
    """
    if config.sampling <= 1:
        return None
    grids = []
    for patch_shape in config.patch_shape:
        grid = np.zeros(tuple(patch_shape), dtype=bool)
        grid[:: config.sampling, :: config.sampling] = True
        grids.append(grid)
    return grids


@functools.lru_cache(maxsize=None)
def vectorised_patch_interface():
    """A subclass of menpofit's ``LucasKanadePatchInterface`` whose ``gradient`` is one vectorised call.

    menpofit takes the gradient of the (68 patches × channels) appearance instance at every Wiberg iteration
    by looping ``np.gradient`` over each 13×13 patch in Python, which is most of a fit's time once BLAS is
    single-threaded. ``np.gradient`` over the two patch axes at once gives bit-identical values (checked in
    ``tests/test_aam.py``).
    """
    lk = import_menpofit("aam.algorithm.lk")

    class VectorisedGradientPatchInterface(lk.LucasKanadePatchInterface):
        def gradient(self, image):
            pixels = image.pixels
            d_row, d_col = np.gradient(pixels.reshape((-1,) + tuple(self.patch_shape)), axis=(1, 2),
                                       edge_order=1)
            return np.stack([d_row, d_col]).reshape((2,) + pixels.shape)

    return VectorisedGradientPatchInterface


class AAMFitter:
    """A trained patch AAM as a project fitter: ``fitter(image, shape) -> (68, 2)``.

    Each call crops the image around the initial shape, converts it to greyscale, and runs menpofit's
    ``LucasKanadeAAMFitter(..., lk_algorithm_cls=WibergInverseCompositional).fit_from_shape``.

    Attributes:
        aam: the menpofit ``PatchAAM``.
        config: the :class:`AAMConfig` it was trained (and is fitted) with.
        info: training provenance (``n_train``, ``train_seconds``, ...).
        n_nonfinite: fits whose result was not finite and were answered with the initial shape instead.
        n_outside: initial shapes wholly outside the image, answered unchanged (there is nothing to fit).
    """

    def __init__(self, aam, config, info=None, as_published=False):
        lk = import_menpofit("aam")
        self.aam, self.config, self.info = aam, config, info or {}
        n_shape = [min(n, aam.shape_models[i].model.n_components) for i, n in enumerate(config.n_shape)]
        n_appearance = [min(n, aam.appearance_models[i].n_components) for i, n in enumerate(config.n_appearance)]
        # The Wiberg loop at the sampled pixels only (benchmarks.baselines.aam_wiberg): menpofit's results up to
        # rounding, 1.6x faster; as_published=True keeps menpofit's own loop and patch gradient (for timing).
        algorithm_cls = lk.WibergInverseCompositional if as_published else sampled_wiberg()
        self.fitter = lk.LucasKanadeAAMFitter(aam, lk_algorithm_cls=algorithm_cls, n_shape=n_shape,
                                              n_appearance=n_appearance, sampling=sampling_grids(config))
        fast = vectorised_patch_interface()
        for algorithm in self.fitter.algorithms:
            if not as_published and type(algorithm.interface) is fast.__base__:   # only menpofit's exact one
                algorithm.interface.__class__ = fast
        self.n_nonfinite = self.n_outside = 0

    @classmethod
    def load(cls, path, as_published=False, **overrides):
        """The fitter stored at ``path`` by :func:`train_aam`; ``overrides`` replace fitting settings.

        Args:
            path: the artefact pickle.
            as_published: fit with menpofit's own Wiberg loop and patch gradient (the "before" of
                ``benchmarks.experiments.fit_speed``) instead of the project's equal but faster ones.
            **overrides: :class:`AAMConfig` fields to change at fit time (``max_iters``, ``n_shape``,
                ``n_appearance``, ``sampling``, ``fit_margin``).

        Raises:
            ArtefactError: missing or unreadable artefact (the message names the command that builds it).
        """
        artefact = load_artefact(path)
        config = AAMConfig.from_dict({**artefact["config"], **overrides})
        return cls(artefact["aam"], config, info={k: v for k, v in artefact.items() if k != "aam"},
                   as_published=as_published)

    def fit(self, image, shape):
        """The menpofit fitting result for ``shape`` (``(x, y)``) on ``image`` (RGB), plus the crop offset."""
        shape = np.asarray(shape, dtype=np.float64)
        if shape.shape != (self.aam.reference_shape.n_points, 2) or not np.isfinite(shape).all():
            raise ValueError(f"AAM needs a finite ({self.aam.reference_shape.n_points}, 2) initial shape, "
                             f"got shape {shape.shape}")
        crop, offset = crop_around(np.asarray(image), shape, self.config.fit_margin)
        # The fit multiplies many small matrices; multi-threaded BLAS only adds synchronisation to them (3-10x
        # slower on a busy 2-core machine), so BLAS runs single-threaded during the fit.
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):
            result = self.fitter.fit_from_shape(to_menpo_image(crop, greyscale=True),
                                                _menpo_point_cloud(shape - offset),
                                                max_iters=list(self.config.max_iters))
        return result, offset

    def __call__(self, image, shape):
        """Refine ``shape`` (``(N, 2)`` ``(x, y)``) on ``image`` (``H×W×3`` uint8 RGB); returns ``(N, 2)``."""
        try:
            result, offset = self.fit(image, shape)
        except OutsideImageError:
            self.n_outside += 1
            return np.array(shape, dtype=np.float64, copy=True)
        final = from_menpo_points(result.final_shape) + offset
        if not np.isfinite(final).all():  # a diverged fit: keep the initialisation rather than emit NaN
            self.n_nonfinite += 1
            return np.array(shape, dtype=np.float64, copy=True)
        return final
