"""The paper's figures redrawn from result records: Figs. 7 and 12 (CEDs from per-image errors files) and Fig. 5.

Every per-image errors file is checked against its row (``n`` lines, an ``error`` column): a missing, cut or
header-only file is reported with its name and gets no curve, never plotted silently. Fig. 7 has the paper's
two panels: on top DenseReg and DenseReg+MDM beside the published 300-W challenge CEDs of Fan et al. and Deng
et al. (``results/reference/300w_challenge_ced.csv``; on synthetic data drawn dashed grey as the paper's
reference, not comparable, and said so), below every initialiser × fitter run. A curve is the lowest seed's
run; its legend gives the AUC's mean ± std over the seeds (``benchmarks.tables.landmark_runs``).
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np

from benchmarks import metrics, records as provenance, seeds
from benchmarks.tables import LANDMARK_TABLES, METHOD_KEY, RUN_GROUP, landmark_runs, method_name

REFERENCE_CED = Path(__file__).resolve().parents[1] / "results" / "reference" / "300w_challenge_ced.csv"
REFERENCE_METHODS = {"Fan": "Fan et al.", "Deng": "Deng et al."}
TOP_PANEL = (("densereg", "none"), ("densereg", "mdm"))   # (init, fitter) of the paper's Fig. 7 top panel
FIG7_CAPTION = ("Fig. 7, top: DenseReg and DenseReg+MDM beside the 300-W challenge entries of Fan et al. and Deng "
                "et al. (published CEDs, real 300-W test set, results/reference/). On synthetic data those two "
                "curves are drawn dashed grey as the paper's reference only: they are real 300-W and NOT "
                "comparable with ours. Bottom: every initialiser × fitter run.")


def read_reference(path=REFERENCE_CED):
    """``(error grid, {method name: CED})`` of the published 300-W challenge curves, or None when absent."""
    frame = provenance.read_table(path) if Path(path).is_file() else None
    if frame is None or frame.empty or "error" not in frame.columns:
        return None
    grid = frame["error"].astype(float).to_numpy()
    return grid, {name: frame[col].astype(float).to_numpy() for col, name in REFERENCE_METHODS.items()
                  if col in frame.columns}


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


def _curve_runs(results_dir, frame):
    """Per method and variant, the lowest seed's latest row, with its table row name and AUC mean ± std."""
    frame, _ = seeds.latest_per_seed(frame, METHOD_KEY)
    runs = {tuple(r[k] for k in (*METHOD_KEY, "variant")): r
            for r in landmark_runs(results_dir, LANDMARK_TABLES["table2"]).to_dict("records")}
    chosen = frame.sort_values("seed", kind="stable").drop_duplicates([*METHOD_KEY, "variant"], keep="first")
    out = []
    for _, r in chosen.iterrows():
        run = runs.get(tuple(r[k] for k in (*METHOD_KEY, "variant")), {})
        label = run.get("row") or method_name(r["init"], r["fitter"], r["tag"])
        auc = seeds.mean_std_text(run.get("auc_0.1"), run.get("auc_0.1_std"), 3)
        out.append((r, label, auc, int(run.get("n_seeds") or 1)))
    return out


def _errors_of(results_dir, r, problems):
    try:
        if not r["errors"]:
            raise ErrorsFileError(f"{Path(results_dir) / '300w.csv'}: the row of {r['init']}+{r['fitter']} "
                                  "names no errors file")
        return read_errors(Path(results_dir) / r["errors"], r["n"] or None)
    except ErrorsFileError as e:
        problems.append(str(e))
        print(f"[report] error: {e}; no curve for {r['init']}+{r['fitter']}", file=sys.stderr)
        return None


def _top_panel(ax, curves, source, reference):
    """DenseReg and DenseReg+MDM (ours, solid) beside the published 300-W challenge CEDs (dashed)."""
    thresholds = np.linspace(0.0, 0.1, 201)
    for errors, label in curves:
        ax.plot(thresholds, metrics.ced(errors, thresholds), lw=2, label=f"{label} (ours, {source})")
    if reference is not None:
        grid, ceds = reference
        for (name, ced), shade in zip(ceds.items(), ("0.45", "0.7")):
            comparable = source == "real"
            ax.plot(grid, ced, "--", color=None if comparable else shade, lw=1.5,
                    label=f"{name} (published, real 300-W" + (")" if comparable else "; NOT comparable)"))
    ax.set(xlim=(0, 0.1), ylim=(0, 1), ylabel="fraction of images",
           title="Fig. 7 top: DenseReg, DenseReg+MDM and 300-W challenge entries"
                 + ("" if source == "real" else "\n(grey: published real 300-W curves, the paper's reference only)"))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")


def fig7(results_dir, figures_dir, problems=None, reference_path=REFERENCE_CED):
    """Fig. 7 of every 300-W test source (top and bottom panels, module docstring); returns the written paths.

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
    frame = frame.reindex(columns=list(dict.fromkeys([*frame.columns, *RUN_GROUP, "seed", "errors", "n", "date"])),
                          fill_value="")
    frame = frame[frame["split"] == "test"]
    reference = read_reference(reference_path)
    written = []
    thresholds = np.linspace(0.0, 0.1, 201)
    for source, runs in frame.groupby("source", sort=True):
        fig, (top, ax) = plt.subplots(2, 1, figsize=(7, 9.5), height_ratios=(1, 1.1))
        presets = sorted(set(runs["preset"]))
        curves, top_curves = 0, []
        for r, label, auc, n_seeds in _curve_runs(results_dir, runs):
            errors = _errors_of(results_dir, r, problems)
            if errors is None:
                continue
            if len(presets) > 1:
                label += f" ({r['preset']})"
            seed_text = f"AUC {auc} over {n_seeds} seeds; curve: seed {r['seed']}" if n_seeds > 1 else f"AUC {auc}"
            ax.plot(thresholds, metrics.ced(errors, thresholds), label=f"{label}: {seed_text}")
            if (r["init"], r["fitter"]) in TOP_PANEL and not r["tag"]:
                top_curves.append((errors, label))
            curves += 1
        if not curves:
            plt.close(fig)
            continue
        _top_panel(top, top_curves, source, reference)
        ax.set(xlim=(0, 0.1), ylim=(0, 1), xlabel="point-to-point error / outer-eye-corner distance",
               ylabel="fraction of images",
               title=f"Fig. 7 bottom: 300-W test CED, initialiser × fitter ({source} data, preset "
                     f"{', '.join(presets)})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
        if source != "real":
            fig.text(0.5, 0.005, "Dashed grey (top): published real 300-W CEDs, drawn as the paper's reference; "
                                 f"ours are on {source} data and not comparable with them.", ha="center", fontsize=7)
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


def fig12(results_dir, figures_dir, problems=None):
    """Fig. 12: the ear CEDs (55 points, error / GT box average edge), one curve per Table 4 row, per source.

    Each curve is the latest seed-row's per-image errors (checked against its ``n``; a bad file is appended to
    ``problems`` and gets no curve); the legend gives the row's AUC@0.1 mean ± std over the seeds present.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    problems = [] if problems is None else problems
    runs = landmark_runs(results_dir, LANDMARK_TABLES["table4"])
    written = []
    thresholds = np.linspace(0.0, 0.1, 201)
    for source, group in (runs.groupby("source", sort=True) if len(runs) else []):
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        curves = 0
        for r in group.to_dict("records"):
            try:
                errors = read_errors(Path(results_dir) / r["errors"], r["n"] or None)
            except ErrorsFileError as e:
                problems.append(str(e))
                print(f"[report] error: {e}; no Fig. 12 curve for {r['row']}", file=sys.stderr)
                continue
            auc = seeds.mean_std_text(r.get("auc_0.1"), r.get("auc_0.1_std"), 3)
            ax.plot(thresholds, metrics.ced(errors, thresholds),
                    label=f"{r['row']} ({r['preset']}): AUC {auc}, {int(r.get('n_seeds') or 1)} seed(s)")
            curves += 1
        if not curves:
            plt.close(fig)
            continue
        ax.set(xlim=(0, 0.1), ylim=(0, 1), xlabel="point-to-point error / GT box average edge (55 points)",
               ylabel="fraction of images", title=f"Fig. 12: ear landmarks, test CED ({source} data)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
        written.append(_save_figure(fig, Path(figures_dir) / f"fig12_ears_{source}.png"))
    return written
