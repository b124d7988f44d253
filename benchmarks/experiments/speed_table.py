"""The speed table of the README, from ``results/speed.csv`` (written by ``benchmarks.report``).

One line per measured figure and candidate: the latest row of each (figure, candidate, model, size, batch,
dtype, threads, device), with its value, its speed-up where one was measured side by side, the CPU time, the
target, and the machine's load average when it was measured: on a shared machine a figure means little
without it. Rows come only from the CSV; nothing here measures.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks import records

ORDER = ("inference", "int8", "matmul", "raster", "fit", "gpu-infer", "gpu-train")
KEY = ("figure", "candidate", "model", "size", "batch", "dtype", "threads", "device")


def latest_rows(path) -> list[dict]:
    """The latest row (by date) of each :data:`KEY` in ``path``, in :data:`ORDER` then file order."""
    rows, _ = records.read_csv(path)
    latest: dict = {}
    for row in rows:
        key = tuple(row.get(k, "") for k in KEY)
        if key not in latest or row.get("date", "") >= latest[key].get("date", ""):
            latest[key] = row
    rank = {f: i for i, f in enumerate(ORDER)}
    return sorted(latest.values(), key=lambda r: rank.get(r.get("figure", ""), len(ORDER)))


def markdown(path) -> str:
    """The README's speed section (empty when ``path`` does not exist)."""
    if not Path(path).is_file():
        return ""
    lines = ["### Speed (generated from `results/speed.csv`)", "",
             "Measured by `./reproduce.sh bench` (CPU) and `./reproduce.sh gpu-bench` (GPU machine). The CPU rows "
             "come from a 2-core machine shared with other jobs: `load` is its 1-minute load average at the time, "
             "`×` the speed-up over the baseline measured in the same interleaved rounds, `CPU ms` this process's "
             "CPU time per item (less inflated by the other jobs than the wall clock).", "",
             "| figure | candidate | model | size | batch | dtype | threads | value | × | CPU ms | target | load "
             "| device | date |", "|" + "---|" * 14]
    for r in latest_rows(path):
        value = f"{r.get('value', '')} {r.get('unit', '')}".strip()
        cells = [r.get("figure", ""), r.get("candidate", ""), r.get("model", ""), r.get("size", ""),
                 r.get("batch", ""), r.get("dtype", ""), r.get("threads", ""), value, r.get("ratio", ""),
                 r.get("cpu_ms", ""), r.get("target", ""), r.get("load", "") or "n/a", r.get("device", ""),
                 r.get("date", "")[:10]]
        lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    return "\n".join(lines) + "\n"
