"""Table 3 per 300-VW category and its CED figure, from the records of ``benchmarks.experiments.tracking``.

    python -m benchmarks.report          (writes results/table3_categories.md and figures/table3_ced_*.png)

Reads only ``results/300vw.csv`` and the per-frame errors files its rows name. Rows of one method are averaged
over seeds as every table is (``benchmarks.tables.landmark_runs``); frames per second are the latest row's.
The figure has one panel per category and one for the whole test set: the CED on [0, 0.1] of every 68-point
row, with the 0.08 threshold marked (the MDM convention; the headline is 0.1, see the tracking module).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from benchmarks import metrics, records, seeds
from benchmarks.figures import ErrorsFileError, _save_figure, read_errors
from benchmarks.tables import LandmarkTable, landmark_runs

CATEGORY_TITLES = {"cat1": "category 1 (well lit, mild motion)",
                   "cat2": "category 2 (light changes, moderate motion)",
                   "cat3": "category 3 (occlusion, extreme light, fast motion)",
                   "test": "all test videos"}


def category_runs(results_dir):
    """``{split: runs frame}`` of Table 3's rows per category and overall (empty frames left out)."""
    out = {}
    for split in CATEGORY_TITLES:
        runs = landmark_runs(results_dir, LandmarkTable("300vw", split, f"300-VW {split}"))
        if len(runs):
            out[split] = runs
    return out


def _num(value, digits, scale=1.0):
    try:
        return f"{float(value) * scale:.{digits}f}"
    except (TypeError, ValueError):
        return ""


def _mean_std(run, column, digits, scale):
    """``mean ± std`` over the seeds of one run's metric (just the mean with one seed), in the table's unit."""
    std = run.get(f"{column}_std")
    return seeds.mean_std_text(float(run[column]) * scale, None if std is None else float(std) * scale, digits)


def category_markdown(results_dir):
    """Markdown: per (source, preset), one table of every row × category (AUC and failure at 0.1 and 0.08,
    frames per second, frames scored, seeds)."""
    from tabulate import tabulate

    per_split = category_runs(results_dir)
    if not per_split:
        return "No 300-VW rows recorded yet (python -m benchmarks.run 300vw).\n"
    groups = sorted({(r["source"], r["preset"]) for runs in per_split.values() for r in runs.to_dict("records")})
    parts = []
    for source, preset in groups:
        body = []
        for split, runs in per_split.items():
            for r in runs.to_dict("records"):
                if (r["source"], r["preset"]) != (source, preset):
                    continue
                body.append([r["row"], split, *(_mean_std(r, column, digits, scale) for column, digits, scale in
                                                 (("auc_0.1", 4, 1), ("failure_0.1", 2, 100), ("auc_0.08", 4, 1),
                                                  ("failure_0.08", 2, 100))),
                             _num(r.get("frames_per_second"), 1), r["n"], r["n_seeds"]])
        body.sort(key=lambda b: (b[0], list(CATEGORY_TITLES).index(b[1])))
        parts.append(f"## Table 3 per category ({source} data, preset {preset})\n\n"
                     + tabulate(body, headers=["method", "videos", "AUC@0.1", "failure@0.1 %", "AUC@0.08",
                                               "failure@0.08 %", "frames/s", "frames", "seeds"],
                                tablefmt="github", disable_numparse=True) + "\n")
    note = ("Error: mean point-to-point distance over the GT outer-eye-corner distance; frames the 300-VW "
            "`extra` lists flag as unreliable are not scored. Headline threshold 0.1 (the paper's Sec. 4.3 "
            "protocol, which Table 3 follows); 0.08 (MDM / 300-VW convention) beside it. frames/s: the "
            "methods' time per scored frame on the recording machine (DenseReg+MDM includes DenseReg's time; the "
            "tracking row includes DenseReg only on the frames where it re-initialises).\n")
    return "# Table 3 (300-VW) per category\n\n" + "\n".join(parts) + "\n" + note


def ced_figure(results_dir, figures_dir=None, problems=None):
    """Draw ``figures/table3_ced_<source>-<preset>.png`` for each source and preset; returns the paths.

    A row whose errors file is missing or disagrees with its ``n`` gets no curve and is reported (``problems``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results_dir = Path(results_dir)
    figures_dir = Path(figures_dir) if figures_dir is not None else results_dir / "figures"
    per_split = category_runs(results_dir)
    groups = sorted({(r["source"], r["preset"]) for runs in per_split.values() for r in runs.to_dict("records")})
    grid = np.linspace(0, 0.1, 201)
    paths = []
    for source, preset in groups:
        fig, axes = plt.subplots(1, 4, figsize=(17, 4.4), sharey=True)
        colours, handles = {}, {}
        for ax, (split, title) in zip(axes, CATEGORY_TITLES.items()):
            runs = per_split.get(split)
            for r in ([] if runs is None else runs.to_dict("records")):
                if (r["source"], r["preset"]) != (source, preset) or "49 points" in r["tag"]:
                    continue
                try:
                    errors = read_errors(results_dir / r["errors"], r["n"] or None)
                except ErrorsFileError as e:
                    (problems if problems is not None else []).append(str(e))
                    print(f"[report] error: {e}; no 300-VW curve for {r['row']}", file=sys.stderr)
                    continue
                colour = colours.setdefault(r["row"], f"C{len(colours)}")   # one colour per row in every panel
                line, = ax.plot(grid, metrics.ced(errors, grid), color=colour, label=f"{float(r['auc_0.1']):.3f}")
                handles.setdefault(r["row"], line)
            ax.axvline(0.08, color="grey", linestyle=":", linewidth=1)
            ax.set_title(title, fontsize=9)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="upper left", title="AUC@0.1", title_fontsize=7)
        axes[0].set_ylabel("fraction of frames")
        fig.supxlabel("point-to-point error / outer-eye-corner distance (dotted: 0.08)", fontsize=9)
        fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=len(handles), fontsize=8,
                   bbox_to_anchor=(0.5, -0.08))
        fig.suptitle(f"Table 3 CEDs, 300-VW test videos, 68 points ({source} data, preset {preset})")
        figures_dir.mkdir(parents=True, exist_ok=True)
        paths.append(_save_figure(fig, figures_dir / f"table3_ced_{source}-{preset}.png"))
    return paths


def write_category_table(results_dir):
    """Write ``results/table3_categories.md`` (atomically); returns its path."""
    path = Path(results_dir) / "table3_categories.md"
    records.atomic_write_text(path, category_markdown(results_dir))
    return path
