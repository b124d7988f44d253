"""Result records: the provenance stamp, row schemas, CSV upsert and per-image errors files, written as one unit.

Why here: each result row must say which code, library, machine and trained artefacts produced it
(DESIGN.md, "Results"), and an interrupted or concurrent run must never leave a half-written CSV, interleaved
rows, or a row beside the per-image errors of another run. Tables are read and written with pandas, every
cell as text (no type guessing: ``"inf"``, ``""`` and commit hashes stay what they are), and every write goes
through the project's one atomic writer (temporary file + rename). git is only read (``GIT_OPTIONAL_LOCKS=0``).

A run is recorded by :func:`write_run`: its per-image errors go first to a temporary name, the row is upserted
under the table's lock, and the errors file is renamed into place before the lock is released, so a reader
(``benchmarks.report``) never sees a row without its own errors file of ``n`` lines.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

try:  # POSIX advisory locks serialise read-modify-write of a shared CSV; absent on Windows
    import fcntl
except ImportError:  # pragma: no cover - the project targets Linux
    fcntl = None

from densereg.data.formats import atomic_write_bytes  # one atomic writer for the project

REPO_ROOT = Path(__file__).resolve().parents[1]

__all__ = ["atomic_write_bytes", "atomic_write_text", "git_commit", "torch_version", "device_description",
           "now", "stamp", "Schema", "SCHEMAS", "read_table", "read_csv", "write_csv", "upsert_rows",
           "upsert_csv_row", "write_run", "locked"]


# ----------------------------------------------------------------------------------------------------------------
# Provenance


def git_commit(repo=REPO_ROOT):
    """Short hash of ``HEAD`` with ``+dirty`` when tracked files differ from it; ``"unknown"`` outside git.

    Uses ``git diff-index`` rather than ``git status`` so that nothing (not even the index stat cache) is
    written to the repository.
    """
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=repo, env=env,
                              capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "diff-index", "--quiet", "HEAD", "--"], cwd=repo, env=env,
                               capture_output=True, timeout=10).returncode != 0
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty else "")


def torch_version():
    """The installed torch version, read from package metadata so that torch is not imported for it."""
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return "absent"


def cpu_name():
    """The CPU model (``/proc/cpuinfo``), or what :mod:`platform` knows, plus the core count."""
    name = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.partition(":")[2].strip()
                break
    name = name or platform.processor() or platform.machine() or "cpu"
    return f"{name} ({os.cpu_count()} cores)"


def device_description(device="cpu"):
    """What ran the methods: ``"cuda: <GPU name>"`` for a CUDA device, else ``"cpu: <model> (N cores)"``.

    Args:
        device: the resolved torch device string (``"cpu"``, ``"cuda"``, ``"cuda:1"``). torch is consulted only
            for CUDA devices and only when a method has already imported it.
    """
    if str(device).startswith("cuda") and "torch" in sys.modules:
        torch = sys.modules["torch"]
        with contextlib.suppress(Exception):  # a broken driver must not lose the run's results
            return f"cuda: {torch.cuda.get_device_name(torch.device(device))}"
    return f"cpu: {cpu_name()}"


def now():
    """Local date and time with its UTC offset, ISO 8601 to the second."""
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def stamp(device):
    """The provenance columns every row carries: ``commit, torch, device, date``.

    Args:
        device: what ran the methods, as :func:`device_description` gives it.
    """
    return {"commit": git_commit(), "torch": torch_version(), "device": device, "date": now()}


# ----------------------------------------------------------------------------------------------------------------
# Row schemas


@dataclass(frozen=True)
class Schema:
    """The columns of one results table and the columns that identify a run (its upsert key)."""

    columns: tuple
    key: tuple


PROVENANCE = ("commit", "torch", "device", "date")
SCHEMAS = {
    # benchmarks.experiments.landmarks: one row per run of an initialiser x fitter on a landmark dataset.
    "landmarks": Schema(
        ("dataset", "split", "init", "fitter", "auc_0.1", "failure_0.1", "auc_0.08", "failure_0.08", "mean_nme",
         "median_nme", "n", "misses", "seconds_per_image", "source", "preset", "seed", "artefacts", *PROVENANCE,
         "tag", "errors"),
        ("dataset", "split", "init", "fitter", "artefacts", "source", "preset", "seed", "tag")),
    # benchmarks.experiments.tracking: one row per Table 3 row x point set x 300-VW category (split), the
    # landmark columns plus the markup scored, frames per second and the number of videos.
    "tracking": Schema(
        ("dataset", "split", "init", "fitter", "auc_0.1", "failure_0.1", "auc_0.08", "failure_0.08", "mean_nme",
         "median_nme", "n", "misses", "seconds_per_image", "frames_per_second", "points", "n_videos", "source",
         "preset", "seed", "artefacts", *PROVENANCE, "tag", "errors"),
        ("dataset", "split", "init", "fitter", "artefacts", "source", "preset", "seed", "tag")),
    # benchmarks.experiments.segmentation: one row per method x part (Table 1).
    "segmentation": Schema(
        ("method", "part", "iou", "source", "preset", "seed", *PROVENANCE, "n", "artefacts"),
        ("method", "part", "artefacts", "source", "preset", "seed")),
    # benchmarks.experiments.kablation: one row per K x decode (Fig. 5).
    "kablation": Schema(
        ("K", "decode", "auc", "failure", "auc_maxaxis", "n_pixels", "n_images", "iterations", "train_seconds",
         "eval_seconds", "source", "preset", "seed", "artefacts", *PROVENANCE),
        ("K", "decode", "artefacts", "source", "preset", "seed")),
    # benchmarks.experiments.body: one row per run of the body network on a body set's split (Fig. 10).
    "body": Schema(
        ("split", "patch_acc", "pixel_acc", "miou", "uv_mean_correct", "uv_median_correct", "uv_median_all",
         "uv_auc_all", "uv_failure_all", "n_pixels", "n_images", "iterations", "train_seconds", "eval_seconds",
         "source", "preset", "seed", "artefacts", *PROVENANCE),
        ("split", "artefacts", "source", "preset", "seed")),
    # benchmarks.experiments.speed / fit_speed / gpu_bench, densereg.readout.forward --bench: one row per timed
    # figure and candidate; rows accumulate (the date is in the key), the report shows the latest per key.
    "speed": Schema(
        ("figure", "candidate", "value", "unit", "target", "best", "ratio", "cpu_ms", "cpu_ratio", "model", "size",
         "batch", "dtype", "threads", "load", "note", *PROVENANCE),
        ("figure", "candidate", "model", "size", "batch", "dtype", "threads", "device", "date")),
    # benchmarks.experiments.depth: one row per model (with / without the depth branch) x seed (Fig. 9).
    "depth": Schema(
        ("model", "landmark_auc", "landmark_failure", "uv_auc", "uv_failure", "depth_abs_mean", "depth_abs_median",
         "depth_abs_auc", "depth_ssi_mean", "depth_ssi_median", "depth_ssi_auc", "depth_coverage", "flat_ssi_mean",
         "n_images", "n_pixels", "eval_seconds", "source", "preset", "seed", "artefacts", *PROVENANCE, "errors"),
        ("model", "artefacts", "source", "preset", "seed")),
}
ERROR_COLUMNS = ("name", "error", "status", "message", "seconds")


# ----------------------------------------------------------------------------------------------------------------
# Tables


def atomic_write_text(path, text):
    """Write ``text`` (UTF-8) to ``path`` through a temporary file in the same folder and ``os.replace``."""
    atomic_write_bytes(path, text.encode("utf-8"))


def read_table(path):
    """A CSV as a pandas DataFrame of strings (empty cells ``""``); an empty frame when the file is absent.

    Raises:
        ValueError: the file exists but is empty or not a CSV; the message names the file.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        return pd.DataFrame()
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a readable CSV table ({type(e).__name__}: {e})") from e


def read_csv(path):
    """Rows of a CSV as dicts of strings and its columns; ``([], [])`` if it is absent.

    Raises:
        ValueError: the file exists but has no header line (the message names the file).
    """
    frame = read_table(path)
    return frame.to_dict("records"), list(frame.columns)


def csv_text(rows, columns):
    """CSV text (header + rows) of dicts under ``columns``; missing keys are empty cells, extra keys an error."""
    import pandas as pd

    rows = list(rows)
    extra = sorted({k for r in rows for k in r} - set(columns))
    if extra:
        raise ValueError(f"row keys {extra} are not columns of the table")
    frame = pd.DataFrame([{c: "" if r.get(c) is None else str(r.get(c)) for c in columns} for r in rows],
                         columns=list(columns), dtype=str)
    return frame.to_csv(index=False, lineterminator="\n")


def write_csv(path, rows, columns):
    """Write ``rows`` (dicts) under ``columns`` to ``path`` atomically, replacing any previous file."""
    atomic_write_text(path, csv_text(rows, columns))


@contextlib.contextmanager
def locked(path):
    """Hold an exclusive advisory lock on ``<folder>/.<name>.lock`` while reading and rewriting ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # pragma: no cover
        yield
        return
    with open(path.parent / f".{path.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _upsert_unlocked(path, rows, columns, key):
    import pandas as pd

    old = read_table(path)
    all_columns = list(columns) + [c for c in old.columns if c not in columns]   # a newer writer's columns kept
    new = pd.DataFrame([{c: "" if r.get(c) is None else str(r.get(c)) for c in all_columns} for r in rows],
                       columns=all_columns, dtype=str)
    if old.empty:
        kept, replaced = old, 0
    else:
        old = old.reindex(columns=all_columns, fill_value="")
        new_keys = set(map(tuple, new[list(key)].itertuples(index=False, name=None)))
        hit = [tuple(k) in new_keys for k in old[list(key)].itertuples(index=False, name=None)]
        kept, replaced = old[[not h for h in hit]], int(sum(hit))
    table = pd.concat([kept, new], ignore_index=True) if len(kept) else new
    atomic_write_text(path, table.to_csv(index=False, lineterminator="\n"))
    return replaced


def upsert_rows(path, rows, schema):
    """Add ``rows`` to the table at ``path``, replacing every earlier row with the same key (``schema.key``).

    Columns of the existing file that the schema lacks are kept (after the schema's), so a file written by a
    newer harness is never truncated; columns the file lacks (an older harness's) are added, empty.

    Returns:
        The number of earlier rows replaced.
    """
    with locked(path):
        return _upsert_unlocked(path, rows, schema.columns, schema.key)


def upsert_csv_row(path, row, columns, key):
    """One-row :func:`upsert_rows` with explicit columns and key (for tables without a registered schema)."""
    with locked(path):
        return _upsert_unlocked(path, [row], columns, key)


def append_speed_rows(path, rows, device):
    """Add timing rows (``SCHEMAS["speed"]`` columns) to ``path`` with the provenance columns filled in."""
    provenance = stamp(device)
    return upsert_rows(path, [{**provenance, **row} for row in rows], SCHEMAS["speed"])


def write_run(table_path, rows, schema, errors_path=None, errors=None):
    """Record one run as a unit: per-image errors (optional) and its rows, never one without the other.

    The errors file is written to a temporary name first; then, under the table's lock, the rows are upserted
    and the errors file renamed into place. An interruption before the upsert leaves the previous run's row and
    errors intact; the report checks each errors file against its row's ``n``.

    Args:
        table_path: the results table (``results/300w.csv``).
        rows: the run's rows (dicts over ``schema.columns``).
        schema: a :class:`Schema`.
        errors_path: where the per-image errors go, or None.
        errors: dicts over :data:`ERROR_COLUMNS`, in sample order.

    Returns:
        The number of earlier rows replaced.
    """
    tmp = None
    if errors_path is not None:
        errors_path = Path(errors_path)
        tmp = errors_path.with_name(f".{errors_path.name}.tmp-{os.getpid()}")
        write_csv(tmp, errors, ERROR_COLUMNS)
    try:
        with locked(table_path):
            replaced = _upsert_unlocked(table_path, rows, schema.columns, schema.key)
            if tmp is not None:
                os.replace(tmp, errors_path)
                tmp = None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    return replaced
