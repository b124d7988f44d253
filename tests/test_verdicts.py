"""The claims' verdicts, mean ± std over seeds and the tolerance column, from made-up run CSVs.

Every test writes its own run CSVs into a temporary results folder and runs the report on it; the repository's
``results/`` is only read (the paper's numbers and the reference curves).
"""

import re
from pathlib import Path

import numpy as np
import pytest

from benchmarks import figures, records as provenance, report, tables, verdicts

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "results" / "paper.csv"
LANDMARKS = provenance.SCHEMAS["landmarks"].columns


def row(init, fitter, auc, failure, seed=0, artefacts="", date="2026-11-30T08:00:00+00:00"):
    """A 300w.csv row of the test split (rates as fractions), synthetic data, preset cpu."""
    return {"dataset": "300w", "split": "test", "init": init, "fitter": fitter, "auc_0.1": auc,
            "failure_0.1": failure, "auc_0.08": auc, "failure_0.08": failure, "n": 600, "misses": 0,
            "source": "synthetic", "preset": "cpu", "seed": seed, "artefacts": artefacts, "date": date,
            "tag": "", "errors": ""}


def seeded(init, fitter, aucs, failures):
    return [row(init, fitter, a, f, seed=s, artefacts=f"{init}={s:012d}/cpu") for s, (a, f) in
            enumerate(zip(aucs, failures))]


def build(tmp_path, landmark_rows=(), helen_rows=(), fig5_rows=()):
    results = tmp_path / "results"
    if landmark_rows:
        provenance.write_csv(results / "300w.csv", list(landmark_rows), LANDMARKS)
    if helen_rows:
        provenance.write_csv(results / "helen.csv", list(helen_rows), ("method", "part", "iou", "source", "preset",
                                                                       "seed", "artefacts", "date"))
    if fig5_rows:
        provenance.write_csv(results / "fig5_runs.csv", list(fig5_rows), ("K", "decode", "auc", "source", "preset",
                                                                          "seed", "artefacts", "date"))
    tables_, _ = report.build_report(results, PAPER, None)
    judged = {v.claim.key: v for v in verdicts.evaluate(tables_)}
    return results, tables_, judged


def test_a_claim_holds_only_when_the_margin_beats_the_seed_spread(tmp_path):
    rows = (seeded("densereg", "none", (0.50, 0.51, 0.52), (0.10, 0.11, 0.12))      # clearly ahead of both
            + seeded("hog-svm", "mdm", (0.30, 0.31, 0.32), (0.30, 0.31, 0.32))
            + seeded("dpm", "mdm", (0.35, 0.36, 0.34), (0.25, 0.26, 0.24))
            + seeded("densereg", "mdm", (0.60, 0.61, 0.62), (0.05, 0.06, 0.07))
            + seeded("densereg", "aam", (0.40, 0.50, 0.60), (0.20, 0.10, 0.30))      # ahead, within the spread
            + seeded("hog-svm", "aam", (0.45, 0.40, 0.50), (0.25, 0.20, 0.30))
            + seeded("dpm", "aam", (0.44, 0.41, 0.50), (0.24, 0.21, 0.30)))
    results, _, judged = build(tmp_path, rows)
    beats = judged["densereg_beats_detector_mdm"]
    assert beats.verdict == verdicts.HOLDS and verdicts.spread_text(beats) == "beyond the spread"
    assert all(c.seeds == "3/3" and c.margin > c.spread > 0 for c in beats.comparisons)
    per_fitter = judged["densereg_init_per_fitter"]
    assert per_fitter.verdict == verdicts.WITHIN   # MDM margins beyond the spread, AAM ones within it
    assert {c.verdict for c in per_fitter.comparisons} == {verdicts.HOLDS, verdicts.WITHIN}
    text = (results / "verdicts.md").read_text()
    assert re.search(r"DenseReg alone beats a face detector followed by MDM\s*\|\s*\*\*holds\*\*\s*\|\s*beyond", text)
    assert re.search(r"for each fitter\s*\|\s*\*\*holds within spread\*\*\s*\|\s*within the spread", text)


def test_a_reversed_claim_does_not_hold_and_a_missing_row_is_not_measured(tmp_path):
    rows = (seeded("densereg", "none", (0.30, 0.31, 0.29), (0.30, 0.31, 0.29))
            + seeded("hog-svm", "mdm", (0.50, 0.51, 0.52), (0.10, 0.11, 0.12))       # detector+MDM ahead
            + seeded("densereg", "mdm", (0.6, 0.6, 0.6), (0.01, 0.01, 0.01)))         # best, zero spread
    _, _, judged = build(tmp_path, rows)
    beats = judged["densereg_beats_detector_mdm"]
    assert beats.verdict == verdicts.FAILS and verdicts.spread_text(beats) == "beyond the spread"
    assert {c.verdict for c in beats.comparisons} == {verdicts.FAILS, verdicts.MISSING}   # DPM+MDM: no row
    assert judged["densereg_mdm_best"].verdict == verdicts.HOLDS
    for key in ("qr_beats_regression", "k10_at_least_k1", "iou_average", "iou_eyebrows_lips"):
        assert judged[key].verdict == verdicts.MISSING and judged[key].source == ""


def test_one_seed_says_spread_unknown_and_never_holds(tmp_path):
    rows = [row("densereg", "none", 0.5, 0.1), row("hog-svm", "mdm", 0.3, 0.3), row("dpm", "mdm", 0.3, 0.3)]
    results, _, judged = build(tmp_path, rows)
    beats = judged["densereg_beats_detector_mdm"]
    assert beats.verdict == verdicts.ONE_SEED and verdicts.spread_text(beats) == "one seed: spread unknown"
    assert "one seed: spread unknown" in (results / "verdicts.md").read_text()


@pytest.mark.parametrize("k10, verdict", [((0.79, 0.80, 0.81), verdicts.HOLDS),     # slightly below: within
                                          ((0.60, 0.61, 0.62), verdicts.FAILS)])    # worse beyond the spread
def test_at_least_claim_allows_equality_within_the_spread(tmp_path, k10, verdict):
    fig5 = [{"K": K, "decode": "q+r", "auc": a, "source": "synthetic", "preset": "cpu", "seed": s,
             "artefacts": f"densereg={s:012d}/cpu/K{K}", "date": "2026"}
            for K, aucs in ((1, (0.80, 0.81, 0.82)), (10, k10)) for s, a in enumerate(aucs)]
    _, tables_, judged = build(tmp_path, fig5_rows=fig5)
    assert judged["k10_at_least_k1"].verdict == verdict
    line = next(l for l in tables_["fig5"] if l["row"] == "K=10 q+r" and l["ours"])
    assert float(line["ours"]) == pytest.approx(np.mean(k10)) and float(line["std"]) == pytest.approx(0.01)
    assert judged["qr_beats_regression"].verdict == verdicts.FAILS   # K=10 not above K=1; K=5, K=20 missing


def test_table1_claims_and_helen_mean_over_seeds(tmp_path):
    helen = [{"method": m, "part": p, "iou": v + 0.01 * s, "source": "synthetic", "preset": "cpu", "seed": s,
              "artefacts": f"x={s:012d}/cpu", "date": "2026"}
             for s in range(3) for m, base in (("DenseReg", 0.7), ("DeepLab-v2", 0.5))
             for p, v in (("average", base), ("left_eyebrow", base), ("right_eyebrow", base),
                          ("upper_lip", base), ("lower_lip", 0.6))]
    results, _, judged = build(tmp_path, helen_rows=helen)
    assert judged["iou_average"].verdict == verdicts.HOLDS
    assert judged["iou_eyebrows_lips"].verdict == verdicts.FAILS   # lower lip equal: not beaten
    assert "71.00 ± 1.00" in (results / "table1.md").read_text()


def test_only_the_latest_row_of_a_method_and_seed_is_averaged_and_the_table_says_so(tmp_path):
    rows = [row("densereg", "none", 0.10, 0.9, seed=0, artefacts="densereg=oldoldoldold/cpu/K10", date="2026-01"),
            row("densereg", "none", 0.40, 0.1, seed=0, artefacts="densereg=aaaaaaaaaaaa/cpu/K10", date="2026-02"),
            row("densereg", "none", 0.50, 0.1, seed=1, artefacts="densereg=bbbbbbbbbbbb/cpu/K10", date="2026-02")]
    results, tables_, _ = build(tmp_path, rows)
    auc = next(l for l in tables_["table2"] if l["row"] == "DenseReg" and l["metric"] == "auc")
    assert float(auc["ours"]) == pytest.approx(0.45) and auc["n_seeds"] == 2 and auc["superseded"] == 1
    assert float(auc["std"]) == pytest.approx(np.std([0.4, 0.5], ddof=1), abs=1e-3)
    text = (results / "table2.md").read_text()
    assert "0.4500 ± 0.0707" in text and "1 older row(s)" in text
    one = tables.landmark_runs(results, tables.LANDMARK_TABLES["table2"])
    assert len(one) == 1 and one.loc[0, "seeds"] == "0,1"   # one row: the seeds' networks are one variant


def test_table2_paper_numbers_carry_a_tolerance(tmp_path):
    assert tables.tolerance("table2", "auc", "0.5219") == 0.02
    assert tables.tolerance("table3", "auc", "0.5937") == 0.06      # 64 test videos: 2 * 0.237 / 8
    assert tables.tolerance("table4", "auc", "0.4842") == 0.05      # 102 ears
    assert tables.tolerance("table4", "failure_rate", "15.69") == pytest.approx(200 * (0.1569 * 0.8431 / 102) ** 0.5)
    assert tables.tolerance("table2", "failure_rate", "3.67") == pytest.approx(1.535, abs=1e-3)
    assert tables.tolerance("table1", "iou_average", "71.96") is None
    _, tables_, _ = build(tmp_path, [row("densereg", "mdm", 0.5, 0.05)])
    line = next(l for l in tables_["table2"] if l["row"] == "DenseReg+MDM" and l["metric"] == "failure_rate")
    assert line["tolerance"] == "1.54" and line["paper"] == "3.67"
    assert "±0.02" in (tmp_path / "results" / "table2.md").read_text()


def test_the_carried_reference_curves_are_the_papers_table2_rows():
    grid, ceds = figures.read_reference()
    assert set(ceds) == {"Fan et al.", "Deng et al."}
    for name, auc, failure in (("Fan et al.", 0.4802, 0.1483), ("Deng et al.", 0.4752, 0.055)):
        keep = grid <= 0.1
        area = np.trapezoid(ceds[name][keep], grid[keep]) / 0.1
        assert area == pytest.approx(auc, abs=0.005) and 1 - np.interp(0.1, grid, ceds[name]) == pytest.approx(failure)


def test_fig7_draws_the_top_panel_with_the_reference_apart_and_captioned(tmp_path, monkeypatch):
    results = tmp_path / "results"
    errors = "errors/e.csv"
    provenance.write_csv(results / errors, [{"name": f"i{i}", "error": repr(0.01 * i), "status": "ok",
                                             "message": ""} for i in range(10)], provenance.ERROR_COLUMNS)
    provenance.write_csv(results / "300w.csv", [{**row("densereg", "mdm", 0.5, 0.0), "errors": errors, "n": 10}],
                         LANDMARKS)
    drawn = []
    import matplotlib.axes

    original = matplotlib.axes.Axes.plot
    monkeypatch.setattr(matplotlib.axes.Axes, "plot", lambda self, *a, **kw: drawn.append((a, kw))
                        or original(self, *a, **kw))
    paths = figures.fig7(results, results / "figures")
    assert [p.name for p in paths] == ["fig7_300w_synthetic.png"]
    reference = [kw for a, kw in drawn if "published" in kw.get("label", "")]
    assert len(reference) == 2 and all("NOT comparable" in kw["label"] and kw["color"] in ("0.45", "0.7")
                                       for kw in reference)
    assert sum("DenseReg+MDM (ours" in kw.get("label", "") for a, kw in drawn) == 1   # top panel, ours
    section = report.readme_section({}, paths, tmp_path / "README.md")
    assert "NOT comparable" in section and "real 300-W" in section
