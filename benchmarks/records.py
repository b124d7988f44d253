"""Provenance of a benchmark row (commit, torch, device, date) and the atomic CSV writes every output uses.

Why here: each result row must say which code, library and machine produced it (DESIGN.md, "Results"), and
an interrupted or concurrent run must never leave a half-written or interleaved CSV. Everything below is
read-only towards git (``GIT_OPTIONAL_LOCKS=0``, no index refresh) and writes through a temporary file in
the destination folder followed by ``os.replace``.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import io
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

try:  # POSIX advisory locks serialise read-modify-write of a shared CSV; absent on Windows
    import fcntl
except ImportError:  # pragma: no cover - the project targets Linux
    fcntl = None

from densereg.data.formats import atomic_write_bytes  # noqa: E402 - one atomic writer for the project

REPO_ROOT = Path(__file__).resolve().parents[1]


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


def atomic_write_text(path, text):
    """Write ``text`` (UTF-8) to ``path`` through a temporary file in the same folder and ``os.replace``."""
    atomic_write_bytes(path, text.encode("utf-8"))


def csv_text(rows, columns):
    """CSV text (header + rows) of dicts; missing keys are empty cells, extra keys are an error."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buffer.getvalue()


def write_csv(path, rows, columns):
    """Write ``rows`` (dicts) under ``columns`` to ``path`` atomically, replacing any previous file."""
    atomic_write_text(path, csv_text(rows, columns))


def read_csv(path):
    """Rows of a CSV as dicts of strings (no type guessing) and its columns; ``([], [])`` if it is absent.

    Raises:
        ValueError: the file exists but has no header line (the message names the file).
    """
    path = Path(path)
    if not path.is_file():
        return [], []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None:
            raise ValueError(f"{path}: empty CSV without a header line")
        return list(reader), list(reader.fieldnames)


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


def upsert_csv_row(path, row, columns, key):
    """Add ``row`` to the CSV at ``path``, replacing every earlier row with the same values at ``key``.

    Read existing rows, drop those matching the key, append the new row, write a temporary file, rename; an
    advisory lock keeps two concurrent runs from losing each other's rows. Columns of the existing file that
    ``columns`` lacks are kept (after ``columns``), so a file written by a newer harness is never truncated.

    Args:
        path: the CSV (created when absent).
        row: dict of column -> value.
        columns: the column order to write.
        key: the columns that identify a run.

    Returns:
        The number of earlier rows replaced (0 or more).
    """
    with locked(path):
        rows, existing_columns = read_csv(path)
        all_columns = list(columns) + [c for c in existing_columns if c not in columns]
        new = {c: "" if row.get(c) is None else str(row.get(c)) for c in all_columns}
        kept = [r for r in rows if any((r.get(k) or "") != new[k] for k in key)]
        write_csv(path, kept + [new], all_columns)
    return len(rows) - len(kept)
