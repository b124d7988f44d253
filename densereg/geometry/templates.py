"""The template registry: a name or a BFM folder → :class:`~densereg.geometry.template.Template`.

Every template is built in its own module from the helpers of :mod:`densereg.geometry.template`:
``builtin`` by :mod:`densereg.geometry.face_model` (made in code, no files) and the Basel Face Model by
:mod:`densereg.geometry.bfm` (the user's download). This module sits above all three, so none of them has to
import another to find a template.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from densereg.geometry.bfm import load_bfm
from densereg.geometry.face_model import build_face
from densereg.geometry.template import Template
from densereg.registry import lookup


@functools.cache
def builtin_face() -> Template:
    """The built-in face template, made in code (no files); built once per process and cached.

    Its geometry and the meaning of its identity / expression modes are described in
    :func:`densereg.geometry.face_model.build_face`.
    """
    return build_face()


TEMPLATES = {"builtin": builtin_face}


@functools.lru_cache(maxsize=2)
def _load_bfm_cached(root: str) -> Template:
    return load_bfm(root)


def get_template(name_or_path) -> Template:
    """A template by registry name (``TEMPLATES``) or a directory holding the BFM files.

    A directory is read by :func:`densereg.geometry.bfm.load_bfm` (cached per resolved path).

    Raises:
        KeyError: neither a registered name nor a directory; the message names the valid keys.
    """
    if not (isinstance(name_or_path, str) and name_or_path in TEMPLATES) and Path(name_or_path).is_dir():
        return _load_bfm_cached(str(Path(name_or_path).resolve()))
    return lookup(TEMPLATES, str(name_or_path), "template (or give a directory holding the BFM files)")()


def template_for(model: str, data_root=None) -> Template:
    """The template a fitting's coefficients belong to: ``builtin`` or ``bfm`` (the user's Basel model).

    The BFM is looked up in ``$DENSEREG_BFM``, else in ``data_root/BFM`` (the data the fitting comes from, e.g. a
    ``--root`` folder), else in ``$DENSEREG_DATA/BFM``; its licence forbids shipping it.

    Raises:
        FileNotFoundError: ``bfm`` asked for and no BFM folder found (the message says where to put it).
        ValueError: an unknown fitting model.
    """
    if model == "builtin":
        return builtin_face()
    if model == "bfm":
        explicit = os.environ.get("DENSEREG_BFM")     # when set, the only place looked at
        candidates = [Path(explicit)] if explicit else [
            Path(r) / "BFM" for r in (data_root, os.environ.get("DENSEREG_DATA")) if r]
        root = next((c for c in candidates if c.is_dir()), None)
        if root is None:
            looked = ", ".join(map(str, candidates)) or "nowhere (no data root; $DENSEREG_DATA is not set)"
            raise FileNotFoundError(
                "300W-LP fittings use the Basel Face Model, which cannot be shipped: put the 3DDFA BFM files "
                "(u_shp.npy, u_exp.npy, w_shp.npy, w_exp.npy, tri.mat, keypoints_sim.npy, BFM_UV.mat) in BFM/ "
                f"of the data root, or point $DENSEREG_BFM at them; looked in {looked}")
        return _load_bfm_cached(str(Path(root).resolve()))
    raise ValueError(f"unknown fitting model {model!r}; expected 'builtin' or 'bfm'")
