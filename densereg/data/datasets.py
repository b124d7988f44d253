"""The datasets DenseReg is evaluated on: the registry of readers, the samples they give, the data-root rule.

:data:`DATASETS` maps a dataset name to its reader (:mod:`densereg.data.readers`, one per benchmark, each in
its native layout :data:`LAYOUT`); :func:`load_dataset` looks one up and returns the split as a sorted list of
:class:`Sample` (image path, 0-based ``(x, y)`` landmarks, face box, extras). :func:`data_root` is the one rule
for where data lives when no ``--root`` is given: the real data under ``$DENSEREG_DATA``, the synthetic
benchmark under ``$DENSEREG_SYNTH`` or ``data/synthetic``. ``python -m densereg.data.check ROOT`` checks a tree.
"""

from __future__ import annotations

import os
from pathlib import Path

from densereg.data import formats
from densereg.data.readers import (LAYOUT, SPLITS_300W, SPLITS_300W_LP, SPLITS_EARS, SPLITS_HELEN, VIDEOS_300VW,
                                   read_300vw, read_300w, read_300w_lp, read_ears, read_helen, synthetic_paths)
from densereg.data.sample import Sample, landmarks_box
from densereg.registry import lookup

# The names other modules reach through this facade (defined in readers / sample).
__all__ = ["DATASETS", "DATA_SOURCES", "LAYOUT", "SPLITS", "Sample", "data_root", "landmarks_box",
           "load_dataset", "synthetic_paths"]


def _checkout_root():
    """The source checkout holding this package, or None when the package is installed (site-packages)."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() and (root / "densereg").is_dir() else None


def _real_root():
    value = os.environ.get("DENSEREG_DATA")
    if not value:
        raise formats.DatasetError(f"$DENSEREG_DATA is not set: point it at the real data, laid out as\n{LAYOUT}")
    root = Path(value).expanduser()
    if not root.is_dir():
        raise formats.DatasetError(f"$DENSEREG_DATA={value} is not a folder; expected layout:\n{LAYOUT}")
    return root


def _synthetic_root():
    value = os.environ.get("DENSEREG_SYNTH")
    if value:
        return Path(value).expanduser()
    return (_checkout_root() or Path.cwd()) / "data" / "synthetic"


DATA_SOURCES = {"real": _real_root, "synthetic": _synthetic_root}


def data_root(source):
    """The folder holding the data of ``source`` (a key of :data:`DATA_SOURCES`), laid out as :data:`LAYOUT`.

    ``"real"`` is ``$DENSEREG_DATA`` (an error naming the variable when unset); ``"synthetic"`` is
    ``$DENSEREG_SYNTH``, else ``data/synthetic`` in the source checkout, or in the current folder when the package
    is installed; the generator writes there (it may not exist yet).
    """
    return lookup(DATA_SOURCES, source, "data source")()


DATASETS = {
    "300w": read_300w,
    "300w-lp": read_300w_lp,
    "helen": read_helen,
    "300vw": read_300vw,
    "ears": read_ears,
}

SPLITS = {
    "300w": tuple(SPLITS_300W),
    "300w-lp": SPLITS_300W_LP,
    "helen": tuple(SPLITS_HELEN),
    "300vw": tuple(VIDEOS_300VW),
    "ears": SPLITS_EARS,
}


def load_dataset(name, root, split, **options):
    """The samples of dataset ``name`` (a key of :data:`DATASETS`), ``split`` of :data:`SPLITS` ``[name]``.

    ``options`` go to the reader (e.g. ``flips=True`` for 300W-LP, ``drop_unreliable=True`` for 300-VW).
    """
    return lookup(DATASETS, name, "dataset")(Path(root), split, **options)
