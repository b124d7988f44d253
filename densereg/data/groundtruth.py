"""Dense ground truth from 3D fittings (paper Sec. 2): fitting → posed template → per-pixel UV, depth, parts.

The paper builds its training targets by fitting a 3D morphable model to each annotated image and reading, at
every pixel, the template coordinate (u, v) of the surface point seen there. 300W-LP ships exactly such
fittings (3DDFA ``Pose_Para``/``Shape_Para``/``Exp_Para``); the synthetic benchmark writes the same files for
its own template. Either way the same three steps run here: reconstruct the mesh from the coefficients, pose
it with the 3DDFA projection, and rasterise it with z-buffering.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from densereg.data import datasets, formats
from densereg.geometry import camera, ear, rasterize
from densereg.geometry.templates import template_for


def fitting_template(fitting: formats.Fitting, path):
    """The template of a fitting read from ``path``: its ``model``, the BFM taken from the data the file is in.

    The BFM folder lies at the data root, beside ``300W_LP/`` (``datasets.LAYOUT``): the nearest ancestor of the
    fitting (up to four levels) holding a ``BFM/`` folder, else the folder holding the ``300W_LP/`` or ``300W/``
    the file is in. So data given as ``--root DIR`` finds its own model without ``$DENSEREG_DATA`` (see
    :func:`densereg.geometry.templates.template_for`).
    """
    if fitting.model != "bfm":
        return template_for(fitting.model)
    ancestors = list(Path(path).resolve().parents)[:4]
    tops = [p.parent for p in ancestors if p.name in ("300W_LP", "300W")]
    root = next((p for p in ancestors if (p / "BFM").is_dir()), tops[-1] if tops else None)
    return template_for(fitting.model, root)


def posed_vertices(fitting: formats.Fitting, template, height: int) -> np.ndarray:
    """Image-space vertices (col, row, depth; larger depth = closer) of a fitting, 3DDFA convention."""
    # Templates are stored in units of the outer-eye distance; poses are in the model's native units.
    verts = template.instance(fitting.shape_para, fitting.exp_para) / template.scale
    return camera.project_3ddfa(verts, fitting.pose_para, height)


def render_fitting(fitting: formats.Fitting, height: int, width: int, template=None) -> rasterize.DenseGT:
    """Per-pixel GT (u, v, depth in [0, 1], mask, parts) of one fitted face in an ``height×width`` image."""
    template = template or template_for(fitting.model)
    return rasterize.render_gt(template, posed_vertices(fitting, template, height), height, width)


def dense_gt(sample: datasets.Sample, template=None, image_shape: tuple[int, int] | None = None
             ) -> rasterize.DenseGT:
    """Dense GT of a dataset sample from the fitting its ``extras["fitting"]`` names.

    Raises:
        ValueError: the sample has no fitting (e.g. a real 300W image): its dense branches cannot be trained
            or evaluated; 300W-LP (or the synthetic benchmark) provides fittings.
    """
    path = sample.extras.get("fitting")
    if path is None:
        raise ValueError(f"{sample.image_path}: no 3D fitting for this image, so no dense UV ground truth; "
                         "DenseReg's dense targets come from 300W-LP fittings (or the synthetic benchmark)")
    fitting = formats.read_fitting(path)
    if image_shape is None:
        image_shape = sample.image().shape[:2]
    return render_fitting(fitting, image_shape[0], image_shape[1], template or fitting_template(fitting, path))


# ------------------------------------------------------------------------------------------------ training targets
# What the training loop asks for one example: the dense targets of a sample rendered directly at the size the
# image was rescaled to (exact, no resampling of UV across silhouettes). One maker per kind of ground truth,
# chosen by the training config's dataset (:data:`TARGET_MAKERS`).


class FittingTargets:
    """Targets rasterised from each sample's 3D fitting (300W-LP, the synthetic faces): paper Sec. 2."""

    reference = None      # the template is a fixed model, not made from the training data

    def __init__(self, samples: list[datasets.Sample]):
        missing = [s.image_path for s in samples if "fitting" not in s.extras]
        if missing:
            raise ValueError(f"{missing[0]} (and {len(missing) - 1} more) have no 3D fitting: real 300W images "
                             "cannot train DenseReg's dense branches; use 300W-LP fittings or --source synthetic")

    def __call__(self, sample: datasets.Sample, size: tuple[int, int], scaled: tuple[int, int]
                 ) -> rasterize.DenseGT:
        (h, w), (sh, sw) = size, scaled
        fitting = formats.read_fitting(sample.extras["fitting"])
        template = fitting_template(fitting, sample.extras["fitting"])
        verts = posed_vertices(fitting, template, h)
        verts[:, :2] = (verts[:, :2] + 0.5) * np.array([sw / w, sh / h]) - 0.5
        return rasterize.render_gt(template, verts, sh, sw)


class EarTargets:
    """Targets of ears by thin-plate spline onto the reference ear of the training landmarks (paper Sec. 4.7;
    ``densereg.geometry.ear``). ``reference`` is what the checkpoint stores as its template."""

    def __init__(self, samples: list[datasets.Sample]):
        missing = [s.image_path for s in samples if s.landmarks is None]
        if missing:
            raise ValueError(f"{missing[0]} (and {len(missing) - 1} more) have no landmarks: an ear's dense "
                             "ground truth is the thin-plate spline of its 55 landmarks")
        self.reference = ear.reference_ear([s.landmarks for s in samples])

    def __call__(self, sample: datasets.Sample, size: tuple[int, int], scaled: tuple[int, int]
                 ) -> rasterize.DenseGT:
        (h, w), (sh, sw) = size, scaled
        points = (sample.landmarks + 0.5) * np.array([sw / w, sh / h]) - 0.5
        return ear.ear_gt(points, self.reference, sh, sw)


TARGET_MAKERS = {"ears": EarTargets}     # any other dataset: FittingTargets


def target_maker(dataset: str, samples: list[datasets.Sample]):
    """The dense-target maker of a training config's ``dataset`` (checks the samples can give targets)."""
    return TARGET_MAKERS.get(dataset, FittingTargets)(samples)
