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
from densereg.geometry import camera, rasterize
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
