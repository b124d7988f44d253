"""DenseReg and DeepLab-v2 checkpoints under the harness's artefact policy (``benchmarks.baselines.artefacts``).

A checkpoint carries its resolved config and its training data's fingerprint inside itself
(``densereg.nn.checkpoint``); those are what :func:`ensure_network` compares with the run's config and
training data. The default checkpoint of a preset lives in ``<runs>/<source>/<task>-<preset>[...]/last.pt``
and is trained (or resumed, or rebuilt when stale) there; a checkpoint the user passes is only checked, never
rebuilt, and its own config is what the result row records. Checked means its recorded training-data
fingerprint must equal that of the training split its config names, read under the run's data root: a model
trained on other data (another synthetic seed, another real tree) is refused rather than scored as if it had
been trained on this benchmark's training set. (To look at a foreign checkpoint, use ``densereg.DenseReg``.)
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.baselines.artefacts import VOLATILE_FIELDS, ArtefactError, ensure_artefact
from densereg.data import datasets, formats

from densereg.nn.checkpoint import read_checkpoint
from densereg.nn.config import PRESETS, make_config


# The preset is a name for a set of values; two configs with equal values are the same network whatever the name.
IGNORED = VOLATILE_FIELDS | {"preset"}


def stored_identity(path):
    """``(config, data fingerprint)`` recorded inside a checkpoint (data None when it has none)."""
    state = read_checkpoint(path)
    return state["config"], state.get("data_fingerprint")


def is_finished(path):
    """True when the checkpoint has taken every step its config asks for (else training resumes it)."""
    state = read_checkpoint(path)
    return int(state["step"]) >= int(state["config"].get("iterations", 0))


def label(config, preset=None):
    """Short variant text for rows: ``cpu/K10`` (DenseReg), ``cpu/K10+depth`` (with the depth branch),
    ``cpu/deeplab`` (DeepLab-v2), ``cpu/body``."""
    preset = preset or config.get("preset") or "?"
    if config.get("task", "densereg") in ("deeplab", "body"):
        return f"{preset}/{config['task']}"
    return (f"{preset}/K{config.get('K')}" + ("" if config.get("variant", "q+r") == "q+r" else f"-{config['variant']}")
            + ("+depth" if config.get("depth") else ""))


def train_command(preset, out, **overrides):
    """The ``densereg.nn.train`` command line that trains ``preset`` with ``overrides`` into ``out``."""
    flags = "".join(f" --{k.replace('_', '-')} {v}" for k, v in overrides.items() if v is not None)
    return f"python -m densereg.nn.train --preset {preset} --out {out}{flags}"


def ensure_network(preset, out, *, root=None, checkpoint=None, seed=0, **overrides):
    """The checkpoint of ``preset`` (+ ``overrides``) trained in ``out``, or the user's ``checkpoint``, checked.

    Args:
        preset: a key of ``PRESETS``.
        out: the run folder the harness trains into (``last.pt`` inside).
        root: the data root (recorded in the config, not compared).
        checkpoint: a checkpoint the user passed: checked against the preset's config (architecture, data
            source, schedule) and refused when it differs, never retrained.
        seed: the training seed (weights, batches, augmentation): part of the config, so a checkpoint of
            another seed is never taken for this one. The caller keeps seeds apart on disk
            (``benchmarks.baselines.artefacts.seed_dir``).
        overrides: config fields (``task``, ``K``, ``variant``, ``source``, ``iterations``).

    Returns:
        ``benchmarks.baselines.artefacts.Artefact`` of the checkpoint.

    Raises:
        benchmarks.baselines.artefacts.ArtefactError: an explicit checkpoint is missing, unreadable or differs.
    """
    from densereg.nn import train

    cfg = make_config(preset, root=str(root) if root is not None else None, seed=int(seed), **overrides)
    command = train_command(preset, out, root=root, seed=int(seed) or None, **overrides)
    if checkpoint is not None:
        samples = _training_samples(checkpoint, cfg.resolved(), root, command)
        return ensure_artefact(checkpoint, cfg.resolved(), samples, None, command, explicit=True,
                               stored=stored_identity, complete=is_finished, ignore=IGNORED,
                               label=label(cfg.resolved(), preset))
    samples = train.training_samples(cfg)
    return ensure_artefact(Path(out) / "last.pt", cfg.resolved(), samples, lambda path: train.train(cfg, path.parent),
                           command, stored=stored_identity, complete=is_finished, ignore=IGNORED,
                           label=label(cfg.resolved(), preset))


def checkpoint_artefact(checkpoint, command, root=None):
    """A checkpoint the user passed, accepted whatever its variant, but checked to be whole and, under data
    ``root``, trained on the training split its own config names (as read there now).

    Its own config then says what it is (:func:`label`); used where no preset is asked for.

    Raises:
        benchmarks.baselines.artefacts.ArtefactError: missing, unreadable, or trained on other data.
    """
    path = Path(checkpoint)
    samples = None
    if root is not None and path.is_file():
        try:
            config = stored_identity(path)[0]
        except (OSError, ValueError, RuntimeError):
            config = None   # ensure_artefact reports the unreadable file
        if config is not None:
            samples = _training_samples(path, config, root, command)
    art = ensure_artefact(path, None, samples, None, command, explicit=True, stored=stored_identity)
    return type(art)(art.path, art.config, art.data, label(art.config or {}))


def _training_samples(checkpoint, config, root, command):
    """The samples of the training split ``config`` names under ``root`` (None when no root is given)."""
    if root is None:
        return None
    name, split = config.get("dataset", "300w-lp"), config.get("split", "train")
    try:
        return datasets.load_dataset(name, root, split)
    except (formats.DatasetError, KeyError, OSError) as e:
        raise ArtefactError(Path(checkpoint), f"cannot be checked: its training data {name}/{split} under {root} "
                            f"is unreadable ({e})", command) from e
