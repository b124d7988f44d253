"""Markdown of the run CSVs that have no paper table to sit beside: Fig. 10's body numbers and sim2real.

    python -m benchmarks.report      (writes results/body.md, results/sim2real.md and the README section)

The paper reports no number for the human body (Sec. 4.6 shows figures only) and nothing on a synthetic-to-real
transfer, so these are our numbers alone, each row labelled with its data source, preset and checkpoint, as
recorded by ``benchmarks.experiments.body`` and ``benchmarks.experiments.sim2real``. Only the latest row of each
key is shown (the CSVs keep their history).
"""

from __future__ import annotations

from pathlib import Path

from benchmarks import records

# (CSV, title, the row identity columns, the number columns shown): what each section shows.
RUN_TABLES = {
    "body": ("body.csv", "Fig. 10 (Sec. 4.6): the human body — patch index and per-patch UV (our numbers; the "
                         "paper has none)",
             ("source", "preset", "seed", "artefacts"),
             ("patch_acc", "miou", "uv_median_correct", "uv_median_all", "uv_auc_all", "n_images")),
    "sim2real": ("sim2real.csv", "Synthetic-trained DenseReg vs dlib's 68-point predictor on every real face here "
                                 "(issue 17; error / outer-eye-corner distance, misses count as failures)",
                 ("method", "variant", "checkpoint", "preset", "training_data"),
                 ("n", "misses", "failure_0.1", "median_nme", "median_nme_unseen")),
}


def _latest(rows: list[dict], keys: tuple[str, ...]) -> list[dict]:
    latest = {}
    for row in rows:   # the CSV is in the order rows were written: a later row of a key replaces an earlier one
        latest[tuple(row.get(k, "") for k in keys)] = row
    return list(latest.values())


def _text(value) -> str:
    """A cell as written in the CSV; an empty cell (read as NaN) stays empty."""
    return "" if value is None or (isinstance(value, float) and value != value) else str(value)


def markdown(results_dir, name: str) -> str:
    """The section of :data:`RUN_TABLES` ``name`` as markdown, or "" when its CSV is absent or empty."""
    csv_name, title, keys, numbers = RUN_TABLES[name]
    path = Path(results_dir) / csv_name
    if not path.is_file():
        return ""
    rows, columns = records.read_csv(path)
    rows = _latest(rows, keys)
    if not rows:
        return ""
    shown = [c for c in (*keys, *numbers) if c in columns]
    lines = [f"### {title}", "", "| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    lines += ["| " + " | ".join(_text(r.get(c)) for c in shown) + " |" for r in rows]
    return "\n".join(lines) + f"\n\nFrom `results/{csv_name}`.\n"
