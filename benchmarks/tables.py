"""The paper's tables rebuilt from result records: paper numbers beside ours, long CSV lines and markdown.

Read by ``benchmarks.report`` (which writes them) and ``benchmarks.figures`` (which labels curves the same
way). Run rows are read with pandas (``benchmarks.records.read_table``): runs of one method that differ only by
seed are averaged; runs that used different trained artefacts are separate rows labelled with them.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from benchmarks import records as provenance

LONG_COLUMNS = ("table", "row", "metric", "paper", "ours", "diff", "unit", "source", "preset", "n", "init",
                "fitter", "tag", "commit", "date")

# How initialisers and fitters are named in the paper's rows ("DenseReg+MDM"; "DenseReg" alone = fitter none).
INIT_NAMES = {"densereg": "DenseReg", "densereg-raw": "DenseReg (raw read-out)", "hog-svm": "HOG-SVM",
              "dpm": "DPM", "mean-shape": "Mean shape in GT box"}
FITTER_NAMES = {"none": "", "aam": "AAM", "mdm": "MDM"}


@dataclass(frozen=True)
class LandmarkTable:
    """A paper table scored from landmark runs: which run CSV and split feed it, and its title."""

    dataset: str
    split: str
    title: str


LANDMARK_TABLES = {
    "table2": LandmarkTable("300w", "test", "Table 2: 300-W private test set (indoor + outdoor), 68 points, "
                                            "error / outer-eye-corner distance"),
    "table3": LandmarkTable("300vw", "test", "Table 3: 300-VW test videos, 68 points, error / outer-eye-corner "
                                             "distance"),
    "table4": LandmarkTable("ears", "test", "Table 4: ears, 55 points, error / GT box (w+h)/2"),
}
TITLES = {**{k: v.title for k, v in LANDMARK_TABLES.items()},
          "table1": "Table 1: Helen test set, face-part segmentation IoU (%)",
          "fig5": "Fig. 5: AUC of the per-pixel UV error CED for K bins, q and q+r decoding"}
# Columns of a landmark table: (metric name in the long CSV, run-row column, scale to the paper's unit, unit).
LANDMARK_METRICS = (("auc", "auc_0.1", 1.0, "fraction"), ("failure_rate", "failure_0.1", 100.0, "%"),
                    ("auc_0.08", "auc_0.08", 1.0, "fraction"), ("failure_rate_0.08", "failure_0.08", 100.0, "%"))
HELEN_PARTS = ("left_eyebrow", "right_eyebrow", "left_eye", "right_eye", "upper_lip", "lower_lip", "nose",
               "other", "average")


def method_name(init, fitter, tag=""):
    """The table row of a run: ``DenseReg+MDM``, ``DenseReg`` (fitter none), ``my.mod:fn+AAM [tag]``."""
    fit = FITTER_NAMES.get(fitter, fitter)
    name = INIT_NAMES.get(init, init) + (f"+{fit}" if fit else "")
    return f"{name} [{tag}]" if tag else name


def _float(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _num(value, digits):
    return "" if value is None else f"{value:.{digits}f}"


# ----------------------------------------------------------------------------------------------------------------
# Long tables: paper numbers beside ours


def read_paper(path):
    """``{table: {(row, metric): (value_text, unit)}}`` from ``paper.csv``, in the file's order."""
    rows, columns = provenance.read_csv(path)
    missing = {"table", "row", "metric", "value", "unit"} - set(columns)
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    paper = defaultdict(dict)
    for r in rows:
        paper[r["table"]][(r["row"], r["metric"])] = (r["value"], r["unit"])
    return paper


def compare(table, paper, ours):
    """Long-format lines of one table: every paper number and every one of ours, per (source, preset).

    Args:
        table: its name (``table2``).
        paper: ``{(row, metric): (value_text, unit)}``.
        ours: dicts with ``row, metric, ours (float), unit, source, preset`` and optional provenance columns.

    Returns:
        List of dicts over :data:`LONG_COLUMNS`; with no runs at all, the paper's numbers with ``ours`` empty.
    """
    groups = sorted({(o["source"], o["preset"]) for o in ours}) or [("", "")]
    lines = []
    for source, preset in groups:
        mine = {(o["row"], o["metric"]): o for o in ours if (o["source"], o["preset"]) == (source, preset)}
        paper_rows = list(dict.fromkeys(row for row, _ in paper))
        rows = paper_rows + [r for r in dict.fromkeys(row for row, _ in mine) if r not in paper_rows]
        for row in rows:
            metrics_here = [m for r, m in paper if r == row] + [m for r, m in mine if r == row]
            for metric in dict.fromkeys(metrics_here):
                p_text, p_unit = paper.get((row, metric), ("", ""))
                o = mine.get((row, metric), {})
                ours_value = o.get("ours")
                p_value = _float(p_text)
                diff = ours_value - p_value if ours_value is not None and p_value is not None else None
                lines.append({"table": table, "row": row, "metric": metric, "paper": p_text,
                              "ours": "" if ours_value is None else f"{ours_value:.6g}",
                              "diff": "" if diff is None else f"{diff:+.6g}", "unit": p_unit or o.get("unit", ""),
                              "source": source, "preset": preset,
                              **{k: o.get(k, "") for k in ("n", "init", "fitter", "tag", "commit", "date")}})
    return lines


RUN_GROUP = ("source", "preset", "init", "fitter", "tag", "artefacts")


def artefact_label(artefacts):
    """Short text of a row's artefact identities: ``cpu/K5`` for ``densereg=3f2a9c1b7d0e/cpu/K5`` (the hash
    when an artefact has no label)."""
    parts = []
    for item in filter(None, str(artefacts).split(";")):
        name, _, identity = item.partition("=")
        digest, _, label = identity.partition("/")
        parts.append(f"{name} {label or digest[:8]}")
    return ", ".join(parts)


def landmark_runs(results_dir, spec):
    """The runs of a landmark table: ``<dataset>.csv`` rows of the table's split, one line per method and
    artefacts, metrics averaged over seeds (``n_seeds``), each labelled with its table row name."""
    import pandas as pd

    frame = provenance.read_table(Path(results_dir) / f"{spec.dataset}.csv")
    if frame.empty:
        return frame
    frame = frame.reindex(columns=list(dict.fromkeys([*frame.columns, *RUN_GROUP, "split", "seed", "n", "commit",
                                                      "date", "errors"])), fill_value="")
    frame = frame[frame["split"] == spec.split].copy()
    metrics_columns = [column for _, column, _, _ in LANDMARK_METRICS]
    for column in metrics_columns:
        frame[column] = pd.to_numeric(frame.get(column, ""), errors="coerce")
    if frame.empty:
        return frame
    grouped = frame.groupby(list(RUN_GROUP), sort=False, dropna=False)
    runs = grouped[metrics_columns].mean().reset_index()
    extra = grouped.agg(n=("n", "first"), n_seeds=("seed", "nunique"), commit=("commit", "last"),
                        date=("date", "max")).reset_index(drop=True)
    runs = pd.concat([runs, extra], axis=1)
    # A method run with several artefacts (a K=5 and a K=10 checkpoint) in one table gets one row per artefact.
    variants = runs.groupby(["source", "preset", "init", "fitter", "tag"])["artefacts"].transform("nunique")
    runs["row"] = [method_name(r.init, r.fitter, r.tag) + (f" ({artefact_label(r.artefacts)})" if v > 1 else "")
                   for r, v in zip(runs.itertuples(), variants)]
    return runs


def landmark_ours(results_dir, spec):
    """Our numbers for a landmark table (see :func:`landmark_runs`), one dict per (row, metric)."""
    runs = landmark_runs(results_dir, spec)
    ours = []
    for r in runs.to_dict("records") if len(runs) else []:
        for metric, column, scale, unit in LANDMARK_METRICS:
            value = r[column]
            if value == value:   # not NaN
                ours.append({"row": r["row"], "metric": metric, "ours": float(value) * scale, "unit": unit,
                             "source": r["source"], "preset": r["preset"], "n": r["n"], "init": r["init"],
                             "fitter": r["fitter"], "tag": r["tag"], "commit": r["commit"], "date": r["date"]})
    return ours


def helen_ours(results_dir):
    """Table 1 numbers from ``helen.csv`` (``method, part, iou`` with IoU a fraction; the last row of a key wins)."""
    rows, _ = provenance.read_csv(Path(results_dir) / "helen.csv")
    return [{"row": r["method"], "metric": f"iou_{r['part']}", "ours": _float(r["iou"]) * 100.0, "unit": "%",
             "source": r.get("source", ""), "preset": r.get("preset", ""), "commit": r.get("commit", ""),
             "date": r.get("date", "")} for r in rows if _float(r.get("iou")) is not None]


def fig5_ours(results_dir):
    """Fig. 5 numbers from ``fig5_runs.csv`` (``K, decode, auc`` with AUC a fraction)."""
    rows, _ = provenance.read_csv(Path(results_dir) / "fig5_runs.csv")
    return [{"row": f"K={int(float(r['K']))} {r['decode']}", "metric": "auc", "ours": _float(r["auc"]),
             "unit": "fraction", "source": r.get("source", ""), "preset": r.get("preset", ""),
             "commit": r.get("commit", ""), "date": r.get("date", "")}
            for r in rows if _float(r.get("auc")) is not None]


# ----------------------------------------------------------------------------------------------------------------
# Markdown in the paper's layouts


def _group_title(table, source, preset):
    if not source:
        return f"{TITLES[table]} (paper only: no runs recorded yet)"
    return f"{TITLES[table]} ({source} data, preset {preset})"


def _groups(lines):
    groups = defaultdict(list)
    for line in lines:
        groups[(line["source"], line["preset"])].append(line)
    return groups


def _cell(line, key, digits):
    value = _float(line.get(key)) if line else None
    if value is None:
        return ""
    return f"{value:+.{digits}f}" if key == "diff" else f"{value:.{digits}f}"


def markdown(table, lines, level=2):
    """The tables of one paper table (one per source and preset) as markdown, titled with both."""
    from tabulate import tabulate

    parts = []
    for (source, preset), group in _groups(lines).items():
        at = {(l["row"], l["metric"]): l for l in group}
        rows = list(dict.fromkeys(l["row"] for l in group))
        if table in LANDMARK_TABLES:
            headers = ["method", "AUC@0.1 paper", "ours", "Δ", "failure@0.1 % paper", "ours", "Δ",
                       "AUC@0.08 ours", "failure@0.08 % ours", "n"]
            body = []
            for row in rows:
                auc, fail = at.get((row, "auc")), at.get((row, "failure_rate"))
                body.append([row, auc["paper"] if auc else "", _cell(auc, "ours", 4), _cell(auc, "diff", 4),
                             fail["paper"] if fail else "", _cell(fail, "ours", 2), _cell(fail, "diff", 2),
                             _cell(at.get((row, "auc_0.08")), "ours", 4),
                             _cell(at.get((row, "failure_rate_0.08")), "ours", 2),
                             (auc or fail or {}).get("n", "")])
        elif table == "table1":  # the paper's layout: one line per part, methods side by side
            headers, body = ["part"], []
            for method in rows:
                headers += [f"{method} paper", "ours", "Δ"]
            for part in HELEN_PARTS:
                cells = [part.replace("_", " ")]
                for method in rows:
                    line = at.get((method, f"iou_{part}"))
                    cells += [line["paper"] if line else "", _cell(line, "ours", 2), _cell(line, "diff", 2)]
                body.append(cells)
        else:  # fig5: one line per K, q and q+r side by side
            ks = sorted({int(r.split()[0][2:]) for r in rows})
            headers, body = ["K", "q paper", "q ours", "Δ", "q+r paper", "q+r ours", "Δ"], []
            for k in ks:
                cells = [k]
                for decode in ("q", "q+r"):
                    line = at.get((f"K={k} {decode}", "auc"))
                    cells += [line["paper"] if line else "", _cell(line, "ours", 3), _cell(line, "diff", 3)]
                body.append(cells)
        parts.append(f"{'#' * level} {_group_title(table, source, preset)}\n\n"
                     + tabulate(body, headers=headers, tablefmt="github", disable_numparse=True) + "\n")
    return "\n".join(parts)
