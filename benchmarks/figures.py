"""The paper's figures redrawn from result records: Fig. 7 (CEDs from per-image errors files) and Fig. 5.

Every per-image errors file is checked against its row (``n`` lines, an ``error`` column): a missing, cut or
header-only file is reported with its name and gets no curve, never plotted silently.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np

from benchmarks import metrics, records as provenance
from benchmarks.tables import LANDMARK_TABLES, RUN_GROUP, landmark_runs, method_name


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
