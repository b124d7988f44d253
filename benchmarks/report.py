"""Rebuild the paper's tables and figures from the result CSVs, beside the paper's numbers, and the README section.

    python -m benchmarks.report [--results DIR] [--paper FILE] [--readme FILE]

Reads only records (``benchmarks.records``), with pandas: ``paper.csv`` (the paper's numbers), the run CSVs written by ``benchmarks.run``
(``300w.csv`` → Table 2, ``300vw.csv`` → Table 3, ``ears.csv`` → Table 4, rows of the ``test`` split), their
per-image error files under ``errors/`` (each checked to hold its row's ``n`` errors: a cut, header-only or
missing file is reported with its name and gets no curve, and the exit status is 1), and when present ``helen.csv`` (Table 1) and ``fig5_runs.csv``
(Fig. 5), whose columns ``results/README.md`` documents. Writes, atomically, into the results folder:

* ``table1.csv`` … ``table4.csv``, ``fig5.csv``: long format, one line per number: ``table, row, metric,
  paper, ours, diff, unit, source, preset, n, init, fitter, tag, commit, date``. ``ours`` is empty where we
  have not produced the number yet, ``paper`` where the paper has none (our extra rows and the 0.08 columns);
  ``diff = ours − paper``. Failure rates and IoUs are in percent, like the paper; AUCs are fractions.
* ``table1.md`` … ``fig5.md``: the same in the paper's layout (tabulate), one table per data source and
  preset, each titled with both. Runs of one method that differ only by seed are averaged; runs that used
  different trained artefacts (a K=5 and a K=10 checkpoint) are separate rows labelled with the artefacts;
* ``figures/fig7_300w_<source>.png``: the CED of every initialiser × fitter run on the 300-W test set
  (Fig. 7, bottom panel; the paper gives no competitor curves we could redraw for the top panel);
* ``figures/fig5_<source>.png``: AUC against K for the ``q`` and ``q+r`` decodings, ours against the paper's;
* the README section between ``<!-- results:start -->`` and ``<!-- results:end -->`` (appended when the
  markers are absent): every table that holds at least one of our numbers, and the figures.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks import metrics, records as provenance

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RESULTS = Path("results")                       # outputs: the current folder, not the install location
DEFAULT_PAPER = REPO_ROOT / "results" / "paper.csv"     # an input that ships with the code
DEFAULT_README = Path("README.md")
MARK_START, MARK_END = "<!-- results:start -->", "<!-- results:end -->"

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


# ----------------------------------------------------------------------------------------------------------------
# Figures


def _save_figure(fig, path):
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    provenance.atomic_write_bytes(path, buffer.getvalue())
    return path


class ErrorsFileError(ValueError):
    """A per-image errors file is missing, unreadable or disagrees with its row; the message names it."""


def read_errors(path, n=None):
    """Per-image errors (``+inf`` for failures) of an errors file, checked to hold ``n`` of them when given.

    Raises:
        ErrorsFileError: missing file, no ``error`` column, an unreadable value, or not ``n`` lines; the
            message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ErrorsFileError(f"{path}: errors file missing")
    try:
        frame = provenance.read_table(path)
    except ValueError as e:
        raise ErrorsFileError(str(e)) from e
    if "error" not in frame.columns:
        raise ErrorsFileError(f"{path}: no 'error' column")
    try:
        errors = frame["error"].astype(float).to_numpy()
    except (TypeError, ValueError) as e:
        raise ErrorsFileError(f"{path}: unreadable error value ({e})") from e
    if n is not None and len(errors) != int(n):
        raise ErrorsFileError(f"{path}: {len(errors)} per-image errors, but its row says n={n} (cut, or written "
                              "by another run)")
    return errors


def fig7(results_dir, figures_dir, problems=None):
    """CED curves of every 300-W test run, one figure per data source; returns the written paths.

    An errors file that is missing or disagrees with its row is appended to ``problems`` (and printed) and
    gets no curve.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    problems = [] if problems is None else problems
    frame = provenance.read_table(Path(results_dir) / "300w.csv")
    if frame.empty or "split" not in frame.columns:
        return []
    frame = frame.reindex(columns=list(dict.fromkeys([*frame.columns, *RUN_GROUP, "seed", "errors", "n"])),
                          fill_value="")
    frame = frame[frame["split"] == "test"]
    labels = {tuple(r[k] for k in RUN_GROUP): r["row"]
              for r in landmark_runs(results_dir, LANDMARK_TABLES["table2"]).to_dict("records")}
    written = []
    thresholds = np.linspace(0.0, 0.1, 201)
    for source, runs in frame.groupby("source", sort=True):
        fig, ax = plt.subplots(figsize=(7, 5))
        presets = sorted(set(runs["preset"]))
        curves = 0
        for _, r in runs.sort_values("seed").drop_duplicates(list(RUN_GROUP)).iterrows():   # lowest seed
            try:
                if not r["errors"]:
                    raise ErrorsFileError(f"{Path(results_dir) / '300w.csv'}: the row of {r['init']}+{r['fitter']} "
                                          "names no errors file")
                errors = read_errors(Path(results_dir) / r["errors"], r["n"] or None)
            except ErrorsFileError as e:
                problems.append(str(e))
                print(f"[report] error: {e}; no curve for {r['init']}+{r['fitter']}", file=sys.stderr)
                continue
            label = labels.get(tuple(r[k] for k in RUN_GROUP), method_name(r["init"], r["fitter"], r["tag"]))
            if len(presets) > 1:
                label += f" ({r['preset']})"
            ax.plot(thresholds, metrics.ced(errors, thresholds),
                    label=f"{label}: AUC {metrics.auc_and_failure(errors)[0]:.3f}")
            curves += 1
        if not curves:
            plt.close(fig)
            continue
        ax.set(xlim=(0, 0.1), ylim=(0, 1), xlabel="point-to-point error / outer-eye-corner distance",
               ylabel="fraction of images",
               title=f"Fig. 7: 300-W test CED, initialiser × fitter ({source} data, preset {', '.join(presets)})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
        written.append(_save_figure(fig, Path(figures_dir) / f"fig7_300w_{source}.png"))
    return written


def fig5_plot(lines, figures_dir):
    """AUC against K for q and q+r, ours (solid) and the paper's (dashed), one figure per data source."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for source in sorted({l["source"] for l in lines if l["source"] and l["ours"]}):
        group = [l for l in lines if l["source"] == source]
        fig, ax = plt.subplots(figsize=(6, 4))
        for decode, colour in (("q", "tab:blue"), ("q+r", "tab:red")):
            for key, style, who in (("ours", "-o", "ours"), ("paper", "--s", "paper")):
                points = sorted((int(l["row"].split()[0][2:]), float(l[key])) for l in group
                                if l["row"].endswith(f" {decode}") and l[key] != "")
                if points:
                    ax.plot(*zip(*points), style, color=colour, alpha=1.0 if who == "ours" else 0.5,
                            label=f"{decode} ({who})")
        presets = sorted({l["preset"] for l in group if l["ours"]})
        ax.set(xlabel="K (bins per axis)", ylabel="AUC of the UV error CED on [0, 0.1]", ylim=(0, 1),
               title=f"Fig. 5: quantisation granularity ({source} data, preset {', '.join(presets)})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        written.append(_save_figure(fig, Path(figures_dir) / f"fig5_{source}.png"))
    return written


# ----------------------------------------------------------------------------------------------------------------
# README section


def replace_section(text, section):
    """``text`` with the part between the results markers replaced by ``section`` (markers appended if absent).

    Raises:
        ValueError: only one marker, or the end marker before the start marker.
    """
    block = f"{MARK_START}\n{section.strip()}\n{MARK_END}"
    start, end = text.find(MARK_START), text.find(MARK_END)
    if start == -1 and end == -1:
        return text.rstrip("\n") + "\n\n" + block + "\n"
    if start == -1 or end == -1 or end < start:
        raise ValueError(f"README markers malformed: need {MARK_START} before {MARK_END}")
    return text[:start] + block + text[end + len(MARK_END):]


def readme_section(tables, figures, readme):
    """Markdown of the generated results section: the tables holding our numbers and the figures."""
    out = ["## Results (generated)", "",
           "Written by `python -m benchmarks.report` from the CSV files in `results/`; do not edit by hand. "
           "Every title says which data source and preset produced the numbers; synthetic numbers are not the "
           "paper's and are not comparable with them. Failure rates and IoUs in %; Δ = ours − paper.", ""]
    empty = []
    for name, lines in tables.items():
        if any(l["ours"] for l in lines):
            out.append(markdown(name, [l for l in lines if l["source"]], level=3))
        else:
            empty.append(name)
    if empty:
        out.append(f"Not produced yet: {', '.join(empty)} (their `.md` files in `results/` list the paper's values).\n")
    for path in figures:
        rel = os.path.relpath(path, Path(readme).resolve().parent)
        out.append(f"![{Path(path).stem}]({Path(rel).as_posix()})\n")
    return "\n".join(out)


def build_report(results_dir, paper_path, readme, problems=None):
    """Write every table, figure and the README section; returns ``{table: lines}`` and the figure paths.

    Problems with per-image errors files are appended to ``problems`` (each names its file).
    """
    results_dir = Path(results_dir).resolve()
    paper = read_paper(paper_path)
    ours = {name: landmark_ours(results_dir, spec) for name, spec in LANDMARK_TABLES.items()}
    ours["table1"] = helen_ours(results_dir)
    ours["fig5"] = fig5_ours(results_dir)
    tables = {}
    for name in ("table1", "table2", "table3", "table4", "fig5"):
        lines = compare(name, paper.get(name, {}), ours[name])
        tables[name] = lines
        provenance.write_csv(results_dir / f"{name}.csv", lines, LONG_COLUMNS)
        provenance.atomic_write_text(results_dir / f"{name}.md", markdown(name, lines))
    figures_dir = results_dir / "figures"
    figures = fig7(results_dir, figures_dir, problems) + fig5_plot(tables["fig5"], figures_dir)
    # Figures other commands draw (Fig. 6 by benchmarks.experiments.segmentation) are linked when present.
    figures += sorted(figures_dir.glob("fig6_*.png"))
    if readme is not None:
        readme = Path(readme)
        text = readme.read_text(encoding="utf-8") if readme.is_file() else ""
        provenance.atomic_write_text(readme, replace_section(text, readme_section(tables, figures, readme)))
    return tables, figures


def main(argv=None):
    """Command line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="results folder (default results/)")
    parser.add_argument("--paper", type=Path, default=DEFAULT_PAPER, help="the paper's numbers (results/paper.csv)")
    parser.add_argument("--readme", type=Path, default=DEFAULT_README,
                        help="README whose generated results section is rewritten (default README.md)")
    parser.add_argument("--no-readme", action="store_true", help="leave the README alone")
    args = parser.parse_args(argv)
    problems = []
    readme = None if args.no_readme or (args.readme == DEFAULT_README and not args.readme.is_file()) else args.readme
    tables, figures = build_report(args.results, args.paper, readme, problems)
    for name, lines in tables.items():
        n_ours = sum(1 for l in lines if l["ours"])
        print(f"{args.results / name}.csv: {len(lines)} numbers, {n_ours} of ours")
    for path in figures:
        print(f"figure: {path}")
    for problem in problems:
        print(f"benchmarks.report: error: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
