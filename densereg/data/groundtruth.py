"""Dense ground truth from 3D fittings (paper Sec. 2): fitting → posed template → per-pixel UV, depth, parts.

The paper builds its training targets by fitting a 3D morphable model to each annotated image and reading, at
every pixel, the template coordinate (u, v) of the surface point seen there. 300W-LP ships exactly such
fittings (3DDFA ``Pose_Para``/``Shape_Para``/``Exp_Para``); the synthetic benchmark writes the same files for
its own template. Either way the same three steps run here: reconstruct the mesh from the coefficients, pose
it with the 3DDFA projection, and rasterise it with z-buffering.
"""

from __future__ import annotations

import numpy as np

from densereg.data import datasets, formats
from densereg.geometry import camera, rasterize
from densereg.geometry.templates import template_for


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
    return render_fitting(fitting, image_shape[0], image_shape[1], template)
