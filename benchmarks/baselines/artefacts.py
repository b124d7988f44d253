"""Trained artefacts of the harness (DenseReg, DeepLab, MDM, AAM, DPM, HOG-SVM, box regressions): one policy.

An artefact is keyed by its **resolved config** and the **fingerprint of its training data**
(``densereg.data.fingerprint.fingerprint(samples)``). Beside every artefact the harness builds lies a sidecar
``<artefact>.json`` (config, data fingerprint, build command, date), written atomically right after the
artefact itself; a checkpoint that carries its own config and data fingerprint (DenseReg's) is read for them
instead. :func:`ensure_artefact` is the only way the harness gets a trained artefact:

* absent: stamped, then built (the stamp first, so a build killed half-way resumes under the right key);
* present and matching: used (an unfinished, resumable one is handed to ``build`` to finish);
* present but built from another config or other data, or with no record of either:
  - at the harness's own cache location: rebuilt, printing what changed (a file the harness did not build,
    one without its sidecar, is moved aside to ``<name>.replaced-<date>``, never deleted);
  - passed explicitly by the user: refused with :class:`ArtefactError`, which names the file, what differs
    and the command that rebuilds it.

Never a silent reuse. :attr:`Artefact.identity` (a short hash of the file plus a label such as ``cpu/K10``)
is what each result row records.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from densereg.data.fingerprint import fingerprint  # noqa: F401 - the harness's one fingerprint
from densereg.data.formats import atomic_write_bytes

SIDECAR_FORMAT = "benchmarks.artefact/1"
# Config fields that say how a build ran, not what it builds: where the data lay, threads, logging cadence.
VOLATILE_FIELDS = frozenset({"root", "threads", "loader_workers", "num_threads", "log_every", "checkpoint_every",
                             "amp"})


class ArtefactError(RuntimeError):
    """A cached trained artefact (AAM, detector, ...) is missing, unreadable or stale.

    The message names the file, what is wrong and the command that (re)builds it.

    Attributes:
        path: the artefact file.
        command: the shell command that builds it.
    """

    def __init__(self, path, problem, command):
        super().__init__(f"{path}: {problem}; build it with: {command}")
        self.path, self.command = Path(path), command


@dataclass(frozen=True)
class Artefact:
    """A trained artefact checked against the config and data it must come from.

    Attributes:
        path: the file.
        config: the resolved config it was built with (as stored).
        data: the fingerprint of its training data (as stored; None when unrecorded).
        label: a short description of the variant for rows and messages (``cpu/K10``).
    """

    path: Path
    config: dict | None
    data: str | None
    label: str = ""

    @property
    def digest(self):
        """First 12 hex digits of the sha256 of the artefact file."""
        return file_digest(self.path)

    @property
    def identity(self):
        """What a result row records: ``<digest>[/<label>]`` (e.g. ``3f2a9c1b7d0e/cpu/K10``)."""
        return self.digest + (f"/{self.label}" if self.label else "")


def seed_dir(source_dir, seed):
    """Where the artefacts of seed ``seed`` live under ``<runs>/<source>/``: that folder itself for seed 0 (so
    the cache made before seeds were plumbed stays valid), ``<runs>/<source>/seed<S>/`` for any other seed, so
    the artefacts of several seeds of one chain lie side by side."""
    return Path(source_dir) if not int(seed) else Path(source_dir) / f"seed{int(seed)}"


def file_digest(path, length=12):
    """The first ``length`` hex digits of the sha256 of ``path``'s bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:length]


def sidecar_path(path):
    """``<artefact>.json``: where the artefact's config, data fingerprint and build command are recorded."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def write_sidecar(path, config, data, command):
    """Record, atomically, what ``path`` was built from (call right after the artefact is written)."""
    stamp = {"format": SIDECAR_FORMAT, "artefact": Path(path).name, "config": config, "data": data,
             "command": command, "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
    atomic_write_bytes(sidecar_path(path), json.dumps(stamp, indent=2, default=str).encode("utf-8"))


def read_sidecar(path):
    """The sidecar of artefact ``path`` as a dict, or None when there is none or it is not a sidecar."""
    side = sidecar_path(path)
    if not side.is_file():
        return None
    try:
        stamp = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) and stamp.get("format") == SIDECAR_FORMAT else None


def _plain(value):
    """``value`` as JSON would give it back (tuples become lists), so stored and wanted configs compare."""
    return json.loads(json.dumps(value, default=str))


def differences(stored, wanted, ignore=VOLATILE_FIELDS):
    """Human-readable differences between a stored and a wanted config (fields in ``ignore`` skipped)."""
    stored, wanted = _plain(stored or {}), _plain(wanted or {})
    out = []
    for key in sorted(wanted):   # fields only the stored config has (a newer writer's) are not judged
        if key in ignore:
            continue
        if key not in stored:
            out.append(f"{key}: not recorded (wanted {wanted[key]!r})")
        elif stored[key] != wanted[key]:
            out.append(f"{key}: {stored[key]!r} -> {wanted[key]!r}")
    return out


def _retire(path):
    """Clear the way for a rebuild: delete a stale artefact the harness built (it has the harness's sidecar);
    move any other file aside to ``<name>.replaced-<date>``, since someone else made it. Returns a note."""
    path = Path(path)
    if read_sidecar(path) is not None:
        path.unlink(missing_ok=True)
        sidecar_path(path).unlink(missing_ok=True)
        return "replacing it"
    aside = path.with_name(f"{path.name}.replaced-{datetime.datetime.now():%Y%m%d-%H%M%S}")
    os.replace(path, aside)
    return f"moved it aside to {aside}"


def ensure_artefact(path, config, samples, build, command, *, explicit=False, stored=None, complete=None,
                    ignore=VOLATILE_FIELDS, label=""):
    """The artefact at ``path``, built from ``config`` and ``samples``, checked or (re)built (module docstring).

    Args:
        path: the artefact file.
        config: its resolved config (JSON-serialisable dict), or None to accept any (an explicit artefact whose
            variant the user chose; its own config is then what is recorded).
        samples: its training samples, or their fingerprint (str), or None to accept any training data.
        build: ``build(path)`` writes the artefact at ``path`` (resuming an unfinished one when it can).
        command: the shell command that builds it, for messages and the sidecar.
        explicit: the user passed ``path``: refuse a mismatch instead of rebuilding.
        stored: ``stored(path) -> (config, data)`` for artefacts that record their own config and data
            fingerprint (a DenseReg checkpoint); ``data`` None falls back to the sidecar. Default: the sidecar.
        complete: ``complete(path) -> bool``: False for an unfinished (resumable) artefact, handed to ``build``.
        ignore: config fields not compared.
        label: short variant description for :attr:`Artefact.identity`.

    Returns:
        :class:`Artefact`.

    Raises:
        ArtefactError: an explicit artefact is missing, unreadable or does not match.
    """
    path = Path(path)
    data = samples if isinstance(samples, str) or samples is None else fingerprint(samples)
    if path.exists():
        problems, have_config, have_data = _check(path, config, data, stored, ignore)
        if not problems:
            if complete is not None and not complete(path):
                if explicit:
                    raise ArtefactError(path, "unfinished (training stopped early)", command)
                print(f"[artefact] {path}: unfinished; resuming: {command}", file=sys.stderr)
                build(path)
            return Artefact(path, have_config, have_data or data, label)
        if explicit:
            raise ArtefactError(path, "does not match this run (" + "; ".join(problems) + ")", command)
        note = _retire(path)
        print(f"[artefact] {path}: " + "; ".join(problems) + f"; {note} and rebuilding: {command}",
              file=sys.stderr)
    elif explicit:
        raise ArtefactError(path, "not found", command)
    else:
        print(f"[artefact] {path}: building (first use): {command}", file=sys.stderr)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The stamp goes first: a build killed half-way leaves either nothing (rebuilt next time) or a resumable
    # artefact whose stamp already says what it is being built from (resumed next time, never mistaken).
    write_sidecar(path, config, data, command)
    start = time.perf_counter()
    build(path)
    if not path.exists():
        raise ArtefactError(path, "the build finished without writing it", command)
    print(f"[artefact] {path}: built in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return Artefact(path, config, data, label)


def _check(path, config, data, stored, ignore):
    """``(problems, stored_config, stored_data)`` of an existing artefact against what is wanted."""
    side = read_sidecar(path)
    if stored is not None:
        try:
            have_config, have_data = stored(path)
        except (OSError, ValueError, RuntimeError) as e:
            return [f"unreadable ({e})"], None, None
        have_data = have_data or (side or {}).get("data")
    elif side is None:
        return ["no record of the config and training data it was built from (no "
                f"{sidecar_path(path).name})"], None, None
    else:
        have_config, have_data = side.get("config"), side.get("data")
    problems = []
    if config is not None:
        changed = differences(have_config, config, ignore)
        if changed:
            problems.append("built with another config: " + ", ".join(changed))
    if data is not None:
        if have_data is None:
            problems.append("no record of its training data")
        elif have_data != data:
            problems.append(f"built from other training data (fingerprint {have_data[:12]}, now {data[:12]})")
    return problems, have_config, have_data
