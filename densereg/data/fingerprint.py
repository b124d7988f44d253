"""A fingerprint of a training set: what a trained artefact was made from, as one sha256 hex string.

Trained artefacts (DenseReg checkpoints, shape models, the harness's baselines) record the fingerprint of
their training samples; a later run compares it with the fingerprint of the samples it would train on and
rebuilds (or refuses) when they differ, so a changed data set never silently reuses an old model.

What is hashed, per sample in the order of sorted sample names: the name, the bytes of every file the sample
reads (the image or video, the fitting ``.mat``, any other file path among its extras, e.g. Helen's label
maps), and its annotation as read (landmark and box arrays, frame index), which stands for the annotation
file. File contents, not modification times: a copy of the same data gives the same fingerprint.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

_CHUNK = 1 << 20


def _hash_file(h, path: Path) -> None:
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    except OSError as exc:
        raise OSError(f"{path}: cannot read it to fingerprint the training data ({exc.strerror or exc})") from exc


def _paths(value):
    """The file paths held by an extras value (a path, or a list/tuple of paths)."""
    if isinstance(value, Path):
        return [value]
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, Path) for v in value):
        return list(value)
    return []


def _hash_array(h, label: str, value) -> None:
    h.update(label.encode())
    if value is None:
        h.update(b"none")
        return
    a = np.ascontiguousarray(np.asarray(value, dtype=np.float64))
    h.update(repr(a.shape).encode())
    h.update(a.tobytes())


def fingerprint(samples) -> str:
    """The sha256 (64 hex digits) of ``samples`` (``densereg.data.datasets.Sample``), independent of their order.

    Raises:
        OSError: a file a sample reads cannot be read (the message names it).
    """
    h = hashlib.sha256()
    for sample in sorted(samples, key=lambda s: s.name):
        h.update(b"\0sample\0" + sample.name.encode())
        _hash_file(h, Path(sample.image_path))
        for key in sorted(sample.extras):
            value = sample.extras[key]
            for path in _paths(value):
                h.update(b"\0file\0" + key.encode())
                _hash_file(h, path)
            if key == "frame":
                h.update(f"\0frame\0{value}".encode())
        _hash_array(h, "\0landmarks\0", sample.landmarks)
        _hash_array(h, "\0box\0", sample.box)
    return h.hexdigest()
