"""The paper's tables rebuilt from result records: paper numbers beside ours, long CSV lines and markdown.

Read by ``benchmarks.report`` (which writes them) and ``benchmarks.figures`` (which labels curves the same
way). Run rows are read with pandas (``benchmarks.records.read_table``). Every row of ours is the mean ±
standard deviation over the seeds present (``benchmarks.seeds``: the latest row per method, variant and seed;
a K=5 checkpoint is another variant and another row). The paper numbers of Tables 2–4 carry a tolerance
(:func:`tolerance`): where a reproduction on the real test set should land.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from benchmarks import records as provenance, seeds

LONG_COLUMNS = ("table", "row", "metric", "paper", "tolerance", "ours", "std", "n_seeds", "seeds", "superseded",
                "diff", "unit", "source", "preset", "n", "init", "fitter", "tag", "commit", "date")

# The tolerance of the landmark tables: two standard errors of the paper's number from the sampling of its test set
# alone. AUC: the per-image AUC score max(0, 1 - e/0.1) has a standard deviation of at most 0.237 on the published
# 300-W CEDs (Fan et al. 0.237, Deng et al. 0.189; results/reference/), so the AUC tolerance is 2 * 0.237 / sqrt(n)
# (Table 2: ±0.02). Failure rate: binomial, 2 * sqrt(p (1 - p) / n). n is what is independent: Table 2's 600
# faces; Table 3's 64 test videos (frames of one video are correlated, so the videos are the samples; a video's
# mean score varies less than one frame's, so this is conservative); Table 4's 102 ears (no ear CED is
# published: the faces' 0.237 stands in). See results/README.md ("Tolerance").
TOLERANCE_SCORE_STD = 0.237
TOLERANCE_SAMPLES = {"table2": (600, "test faces"), "table3": (64, "test videos"), "table4": (102, "test ears")}


def tolerance_note(table):
    """The footnote of a landmark table with a tolerance column."""
    n, what = TOLERANCE_SAMPLES[table]
    real = {"table2": "300-W test set", "table3": "300-VW test videos", "table4": "ear test set (Collection A)"}[table]
    return (f"tol.: where a reproduction on the real {real} should land around the paper's number: ± two standard "
            f"errors from the sampling of its {n} {what} alone (AUC ±{2 * TOLERANCE_SCORE_STD / n ** 0.5:.2f}; "
            f"failure rate 2·sqrt(p(1−p)/{n})); see results/README.md.")


TOLERANCE_NOTE = tolerance_note("table2")


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
          "fig5": "Fig. 5: AUC of the per-pixel UV error CED for K bins, q and q+r decoding",
          "fig9": "Fig. 9 (Sec. 4.5): monocular depth, and the other branches with and without it"}
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


def tolerance(table, metric, paper_value):
    """± where a reproduction on the real data should land around the paper's ``paper_value`` (Tables 2–4,
    :data:`TOLERANCE_SAMPLES`: AUC ± 2·0.237/√n rounded to 0.01, failure rate in % ± two binomial standard
    errors); None elsewhere."""
    value = _float(paper_value)
    if table not in TOLERANCE_SAMPLES or value is None:
        return None
    n = TOLERANCE_SAMPLES[table][0]
    if metric == "auc":
        return round(2 * TOLERANCE_SCORE_STD / n ** 0.5, 2)
    if metric == "failure_rate":
        p = value / 100.0
        return 200.0 * (p * (1.0 - p) / n) ** 0.5
    return None


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
                tol = tolerance(table, metric, p_text)
                std = o.get("std")
                lines.append({"table": table, "row": row, "metric": metric, "paper": p_text,
                              "tolerance": "" if tol is None else f"{tol:.3g}",
                              "ours": "" if ours_value is None else f"{ours_value:.6g}",
                              "std": "" if std is None or std != std else f"{std:.3g}",
                              "n_seeds": o.get("n_seeds", ""), "seeds": o.get("seeds", ""),
                              "superseded": o.get("superseded", ""),
                              "diff": "" if diff is None else f"{diff:+.6g}", "unit": p_unit or o.get("unit", ""),
                              "source": source, "preset": preset,
                              **{k: o.get(k, "") for k in ("n", "init", "fitter", "tag", "commit", "date")}})
    return lines


RUN_GROUP = ("source", "preset", "init", "fitter", "tag", "artefacts")


def artefact_label(artefacts):
    """Short text of a row's artefact identities: ``densereg cpu/K5`` for ``densereg=3f2a9c1b7d0e/cpu/K5``
    (the hash is left out: the networks of two seeds are one variant; see ``benchmarks.seeds.variant``)."""
    return seeds.variant(artefacts)


METHOD_KEY = ("source", "preset", "init", "fitter", "tag")


def landmark_runs(results_dir, spec):
    """The runs of a landmark table: ``<dataset>.csv`` rows of the table's split, one line per method and
    variant, metrics averaged over seeds (``benchmarks.seeds``: mean, ``<metric>_std``, ``n_seeds``, ``seeds``;
    ``superseded`` rows left out), each labelled with its table row name. The other columns (``artefacts``,
    ``errors``, ``commit``, ``date``, ...) are the latest row's."""
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
    frame, superseded = seeds.latest_per_seed(frame, METHOD_KEY)
    runs = seeds.aggregate(frame, METHOD_KEY, metrics_columns)
    runs["superseded"] = superseded   # rows of the whole table left out (older rows of a method and seed)
    # A method run with several artefact variants (a K=5 and a K=10 checkpoint) in one table: a row per variant.
    variants = runs.groupby(list(METHOD_KEY))["variant"].transform("nunique")
    runs["row"] = [method_name(r.init, r.fitter, r.tag) + (f" ({r.variant})" if v > 1 else "")
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
                ours.append({"row": r["row"], "metric": metric, "ours": float(value) * scale,
                             "std": float(r[f"{column}_std"]) * scale, "n_seeds": r["n_seeds"],
                             "seeds": r["seeds"], "superseded": r["superseded"], "unit": unit,
                             "source": r["source"], "preset": r["preset"], "n": r["n"], "init": r["init"],
                             "fitter": r["fitter"], "tag": r["tag"], "commit": r["commit"], "date": r["date"]})
    return ours


def _seeded_ours(path, keys, value, row, metric, scale, unit, select=None):
    """Rows of a run CSV as our numbers over seeds: ``row(record)`` and ``metric(record)`` name each one;
    ``select(frame)``, when given, keeps only some of the CSV's rows first."""
    import pandas as pd

    frame = provenance.read_table(path)
    if frame.empty or value not in frame.columns:
        return []
    if select is not None:
        frame = select(frame)
    frame = frame.reindex(columns=list(dict.fromkeys([*frame.columns, *keys, "seed", "artefacts", "commit",
                                                      "date"])), fill_value="")
    frame[value] = pd.to_numeric(frame[value], errors="coerce")
    frame = frame[frame[value].notna()]
    if frame.empty:
        return []
    frame, superseded = seeds.latest_per_seed(frame, keys)
    runs = seeds.aggregate(frame, keys, [value])
    variants = runs.groupby(list(keys))["variant"].transform("nunique")
    out = []
    for r, v in zip(runs.to_dict("records"), variants):
        name = row(r) + (f" ({r['variant']})" if v > 1 else "")
        out.append({"row": name, "metric": metric(r), "ours": float(r[value]) * scale,
                    "std": float(r[f"{value}_std"]) * scale, "n_seeds": r["n_seeds"], "seeds": r["seeds"],
                    "superseded": superseded, "unit": unit, "source": r["source"], "preset": r["preset"],
                    "commit": r["commit"], "date": r["date"]})
    return out


def helen_ours(results_dir):
    """Table 1 numbers from ``helen.csv`` (``method, part, iou`` with IoU a fraction), mean ± std over seeds."""
    return _seeded_ours(Path(results_dir) / "helen.csv", ("method", "part", "source", "preset"), "iou",
                        lambda r: r["method"], lambda r: f"iou_{r['part']}", 100.0, "%")


# Fig. 9's columns (``benchmarks.experiments.depth``): (metric = run-row column, scale, unit, header).
FIG9_METRICS = (("landmark_auc", 1.0, "fraction", "landmark AUC@0.1"), ("landmark_failure", 100.0, "%", "failure %"),
                ("uv_auc", 1.0, "fraction", "UV AUC (Fig. 5)"), ("depth_abs_mean", 1.0, "depth range", "depth abs. err"),
                ("depth_ssi_mean", 1.0, "depth range", "SSI abs. err"), ("depth_abs_auc", 1.0, "fraction",
                                                                      "depth AUC@0.1"),
                ("depth_coverage", 100.0, "%", "coverage %"), ("flat_ssi_mean", 1.0, "depth range", "flat-face SSI"))


def _shared_seeds(frame):
    """The rows of the seeds that every model of a (source, preset) has: the with/without comparison is then
    over the same seeds (a chain's seed moves both models alike; unequal seed sets would compare seeds)."""
    import pandas as pd

    frame = frame.assign(seed=frame["seed"].replace("", "0")) if "seed" in frame.columns else frame.assign(seed="0")
    parts = []
    for _, group in frame.groupby(["source", "preset"], sort=False):
        common = set.intersection(*(set(g["seed"]) for _, g in group.groupby("model", sort=False)))
        parts.append(group[group["seed"].isin(common)])
    return pd.concat(parts) if parts else frame


def fig9_ours(results_dir):
    """Fig. 9 numbers from ``fig9_runs.csv`` (one row per model with / without depth and seed), mean ± std over
    the seeds both models have (:func:`_shared_seeds`), plus ``<model>, all seeds`` where a model has more."""
    path, keys = Path(results_dir) / "fig9_runs.csv", ("model", "source", "preset")
    out = []
    for metric, scale, unit, _ in FIG9_METRICS:
        shared = _seeded_ours(path, keys, metric, lambda r: r["model"], lambda r, m=metric: m, scale, unit,
                              select=_shared_seeds)
        every = _seeded_ours(path, keys, metric, lambda r: f"{r['model']}, all seeds", lambda r, m=metric: m,
                             scale, unit)
        counts = {(o["row"], o["source"], o["preset"]): o["n_seeds"] for o in shared}
        out += shared + [o for o in every if o["n_seeds"] != counts.get((o["row"][:-len(", all seeds")],
                                                                          o["source"], o["preset"]))]
    return out


def fig5_ours(results_dir):
    """Fig. 5 numbers from ``fig5_runs.csv`` (``K, decode, auc`` with AUC a fraction), mean ± std over seeds."""
    return _seeded_ours(Path(results_dir) / "fig5_runs.csv", ("K", "decode", "source", "preset"), "auc",
                        lambda r: f"K={int(float(r['K']))} {r['decode']}", lambda r: "auc", 1.0, "fraction")


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
    if key == "ours":   # mean ± std over the seeds (just the mean with one seed)
        return seeds.mean_std_text(value, _float(line.get("std")), digits)
    if key == "tolerance":
        return f"±{value:.{digits}f}"
    return f"{value:+.{digits}f}" if key == "diff" else f"{value:.{digits}f}"


def _seeds_note(group):
    """What the numbers of one table are over: seeds, and the older rows left out (``benchmarks.seeds``)."""
    counts = sorted({int(float(l["n_seeds"])) for l in group if _float(l.get("n_seeds")) is not None})
    if not counts:
        return ""
    text = (f"Ours: mean ± standard deviation over {'/'.join(map(str, counts))} seed(s) of the whole chain "
            "(the std is blank with one seed: the spread is unknown).")
    superseded = max((int(float(l["superseded"])) for l in group if _float(l.get("superseded"))), default=0)
    if superseded:
        text += " " + seeds.SUPERSEDED_NOTE.format(n=superseded)
    return text + "\n"


def markdown(table, lines, level=2):
    """The tables of one paper table (one per source and preset) as markdown, titled with both."""
    from tabulate import tabulate

    parts = []
    for (source, preset), group in _groups(lines).items():
        at = {(l["row"], l["metric"]): l for l in group}
        rows = list(dict.fromkeys(l["row"] for l in group))
        if table in LANDMARK_TABLES:
            headers = ["method", "AUC@0.1 paper", "tol.", "ours", "Δ", "failure@0.1 % paper", "tol.", "ours", "Δ",
                       "AUC@0.08 ours", "failure@0.08 % ours", "seeds", "n"]
            body = []
            for row in rows:
                auc, fail = at.get((row, "auc")), at.get((row, "failure_rate"))
                body.append([row, auc["paper"] if auc else "", _cell(auc, "tolerance", 2), _cell(auc, "ours", 4),
                             _cell(auc, "diff", 4), fail["paper"] if fail else "", _cell(fail, "tolerance", 1),
                             _cell(fail, "ours", 2), _cell(fail, "diff", 2),
                             _cell(at.get((row, "auc_0.08")), "ours", 4),
                             _cell(at.get((row, "failure_rate_0.08")), "ours", 2),
                             (auc or fail or {}).get("n_seeds", ""), (auc or fail or {}).get("n", "")])
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
        elif table == "fig9":  # one line per model (without / with the depth branch)
            headers = ["model", *(h for *_, h in FIG9_METRICS), "seeds"]
            body = [[row, *(_cell(at.get((row, m)), "ours", 4 if u != "%" else 2) for m, _, u, _ in FIG9_METRICS),
                     next((l["n_seeds"] for l in group if l["row"] == row), "")] for row in rows]
        else:  # fig5: one line per K, q and q+r side by side
            ks = sorted({int(r.split()[0][2:]) for r in rows})
            headers, body = ["K", "q paper", "q ours", "Δ", "q+r paper", "q+r ours", "Δ"], []
            for k in ks:
                cells = [k]
                for decode in ("q", "q+r"):
                    line = at.get((f"K={k} {decode}", "auc"))
                    cells += [line["paper"] if line else "", _cell(line, "ours", 3), _cell(line, "diff", 3)]
                body.append(cells)
        note = _seeds_note(group)
        if table in TOLERANCE_SAMPLES:
            note += ("\n" if note else "") + tolerance_note(table) + "\n"
        parts.append(f"{'#' * level} {_group_title(table, source, preset)}\n\n"
                     + tabulate(body, headers=headers, tablefmt="github", disable_numparse=True) + "\n"
                     + (f"\n{note}" if note else ""))
    return "\n".join(parts)
