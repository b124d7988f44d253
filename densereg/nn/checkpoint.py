"""Checkpoints: save atomically, read safely (``weights_only=True``), validate against the expected config.

A checkpoint is a dict of tensors and plain Python values only, so ``torch.load(..., weights_only=True)``
reads it without running code. Keys written by DenseReg / DeepLab training (:data:`FORMAT`):

* ``model``, ``optimizer``: state dicts; ``step``: steps done; ``torch_rng``: the RNG state to resume with;
* ``config``: the resolved :class:`~densereg.nn.config.TrainConfig` as a dict (including ``template``);
* ``data_fingerprint``: :func:`densereg.data.fingerprint.fingerprint` of the training samples;
* ``shape_model``: the PCA shape model of the training landmarks as plain arrays
  (:meth:`densereg.geometry.shape_model.ShapeModel.to_arrays`, fitted when training ends), or None;
* ``template_landmarks``: only when the template is made from the training data (ears: the reference ear,
  ``densereg.geometry.ear``), its landmarks' UV as a tensor;
* ``format``: the kind of checkpoint, checked on reading;
* in a shipping export only (``densereg.nn.export``): ``exported`` (source sha256, dtype) and, for int8,
  ``model_scales`` (per-output-channel scales of the int8 weights; :func:`dequantized`).

:func:`save_checkpoint` and :func:`read_checkpoint` are generic (any ``kind``, any config dict), so other
trained networks (MDM) use the same module.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import numpy as np
import torch

from densereg.data.formats import atomic_write_bytes
from densereg.geometry.shape_model import ShapeModel
from densereg.nn.config import ARCH_FIELDS, RUN_FIELDS, TrainConfig, config_differences
from densereg.nn.tasks import build_model

FORMAT = "densereg-checkpoint-1"


def save_checkpoint(path: str | os.PathLike, state: dict, kind: str = FORMAT) -> Path:
    """Write ``state`` (tensors and plain values) to ``path`` atomically, tagged ``format = kind``."""
    buffer = io.BytesIO()
    torch.save({**state, "format": kind}, buffer)
    path = Path(path)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _describe(diff: dict) -> str:
    return ", ".join(f"{k}: checkpoint {a!r} vs requested {b!r}" for k, (a, b) in diff.items())


def load_failure(exc: Exception) -> str:
    """Torch's reason for refusing a file, without its advice to re-run with ``weights_only=False``.

    That advice would execute code from the file; this project never loads a checkpoint that way, so the
    message keeps only the reason (e.g. "Unsupported operand 103").
    """
    text = str(exc)
    found = re.search(r"WeightsUnpickler error:\s*(.*?)\s*(?:Check the documentation|$)", text, re.S)
    if found:
        return "holds something other than tensors and plain values (" + " ".join(found.group(1).split()) + ")"
    if "weights_only" in text:
        return type(exc).__name__
    return " ".join(text.split()) or type(exc).__name__


def read_checkpoint(path: str | os.PathLike, expect: dict | None = None, kind: str = FORMAT,
                    fields=None) -> dict:
    """Load a checkpoint (``weights_only=True``), checking it is whole, of ``kind``, and made as ``expect`` says.

    Args:
        path: the file.
        expect: a resolved config dict; None skips the check.
        kind: the ``format`` tag the file must carry.
        fields: the config fields compared with ``expect``; None compares every field of ``expect`` except the
            bookkeeping ones (``RUN_FIELDS``: logging, workers, data root).

    Raises:
        FileNotFoundError: no such file.
        ValueError: naming the file and what is wrong: unreadable (truncated/corrupt), not a checkpoint of
            ``kind``, made with another network (an architecture field differs) or another training config.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for damaged files
        raise ValueError(f"{path}: unreadable checkpoint (truncated or corrupt?): {load_failure(exc)}") from exc
    if not isinstance(state, dict) or state.get("format") != kind:
        found = (f"it is a {state['format']} checkpoint" if isinstance(state, dict) and state.get("format")
                 else "it has no format tag" if isinstance(state, dict) else f"it holds a {type(state).__name__}")
        raise ValueError(f"{path}: not a {kind} file ({found})")
    if not isinstance(state.get("config"), dict):
        raise ValueError(f"{path}: checkpoint has no config")
    if expect:
        names = fields if fields is not None else [k for k in expect if k not in RUN_FIELDS]
        diff = config_differences(state["config"], expect, names)
        if diff:
            what = "another network" if any(k in ARCH_FIELDS for k in diff) else "another training config"
            raise ValueError(f"{path}: checkpoint made with {what} ({_describe(diff)})")
    return state


def checkpoint_config(state: dict) -> TrainConfig:
    """The resolved config a checkpoint records (``template`` filled from ``source`` for older files)."""
    return TrainConfig.from_dict({**state["config"], "init_weights": None})


def checkpoint_shape_model(state: dict, path: str | os.PathLike = "checkpoint") -> ShapeModel | None:
    """The PCA shape model stored in a checkpoint, or None when it has none."""
    data = state.get("shape_model")
    return None if data is None else ShapeModel.from_arrays(data, source=f"{path}: shape_model")


def checkpoint_template_landmarks(state: dict, path: str | os.PathLike = "checkpoint") -> np.ndarray:
    """The template landmarks a checkpoint made from its training data (``template_landmarks``: the reference
    ear of an ear model, ``densereg.geometry.ear``).

    Raises:
        ValueError: the checkpoint has none (names the file).
    """
    data = state.get("template_landmarks")
    if data is None:
        raise ValueError(f"{path}: its template {state['config'].get('template')!r} is made from the training "
                         "data, but the checkpoint holds no template_landmarks")
    return np.asarray(data, np.float64)


def shape_model_state(model: ShapeModel) -> dict:
    """A shape model as checkpoint contents (tensors, loadable with ``weights_only=True``)."""
    return {k: (torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v)
            for k, v in model.to_arrays().items()}


def dequantized(state: dict) -> dict:
    """The model state dict of a checkpoint, with the int8 weights of an export (``densereg.nn.export``,
    ``model_scales``: one float scale per output channel) multiplied back to float32; other tensors as stored
    (``load_state_dict`` casts float16 ones to the parameters' float32)."""
    scales = state.get("model_scales") or {}
    model = dict(state["model"])
    for name, scale in scales.items():
        w = model[name]
        model[name] = w.float() * scale.float().reshape(-1, *([1] * (w.dim() - 1)))
    return model


def load_model(path: str | os.PathLike, expect: dict | None = None):
    """A trained model (DenseReg or DeepLab-v2, as its config's ``task`` says) in eval mode, and its config.

    ``expect`` is checked on the architecture fields only (a model trained otherwise may still be evaluated).

    Raises:
        ValueError: as :func:`read_checkpoint`, or the weights do not fit the network the config describes.
    """
    state = read_checkpoint(path, expect, fields=ARCH_FIELDS)
    cfg = checkpoint_config(state)
    model = build_model(cfg)
    try:
        model.load_state_dict(dequantized(state), strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not fit the network its config describes: {exc}") from exc
    return model.eval(), cfg
