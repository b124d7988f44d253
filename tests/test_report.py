"""Tests of the report: paper tables rebuilt from hand-written run CSVs, figures, the README section."""

from pathlib import Path

import numpy as np
import pytest

from benchmarks import records as provenance, report, tables

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "results" / "paper.csv"


def run_row(init, fitter, auc, failure, source="synthetic", preset="default", tag="", errors="", n=600,
            artefacts="", seed=0):
    """A 300w.csv row as benchmarks.run writes it (rates as fractions)."""
    return {"dataset": "300w", "split": "test", "init": init, "fitter": fitter, "auc_0.1": auc,
            "failure_0.1": failure, "auc_0.08": auc - 0.1, "failure_0.08": failure + 0.01, "mean_nme": 0.05,
            "median_nme": 0.04, "n": n, "misses": 3, "seconds_per_image": 0.1, "source": source,
            "preset": preset, "seed": seed, "artefacts": artefacts, "commit": "abc123", "torch": "2.13.0", "device": "cpu", "date": "2026",
            "tag": tag, "errors": errors}


@pytest.fixture
def results(tmp_path):
    out = tmp_path / "results"
    rng = np.random.default_rng(0)
    err_file = "errors/300w_test_densereg_mdm_synthetic.csv"
    errors = np.r_[rng.uniform(0, 0.12, 20), np.inf]
    provenance.write_csv(out / err_file, [{"name": f"img{i}", "error": repr(float(e)), "status": "ok", "message": ""}
                                          for i, e in enumerate(errors)], provenance.ERROR_COLUMNS)
    provenance.write_csv(out / "300w.csv", [
        run_row("densereg", "mdm", 0.5, 0.04, errors=err_file, n=21),
        run_row("densereg", "none", 0.40, 0.10, errors="errors/missing.csv"),  # no curve, no crash
        run_row("hog-svm", "mdm", 0.45, 0.08),
        run_row("mypkg.mod:fancy", "none", 0.3, 0.2, tag="v2"),
        run_row("densereg", "mdm", 0.52, 0.036, source="real", preset="paper"),
        {**run_row("densereg", "mdm", 0.1, 0.9), "split": "indoor"},  # not Table 2's split
    ], provenance.SCHEMAS["landmarks"].columns)
    provenance.write_csv(out / "helen.csv", [
        {"method": "DenseReg", "part": "nose", "iou": 0.8, "source": "synthetic", "preset": "default"},
        {"method": "DenseReg", "part": "average", "iou": 0.7, "source": "synthetic", "preset": "default"},
    ], ("method", "part", "iou", "source", "preset"))
    provenance.write_csv(out / "fig5_runs.csv", [
        {"K": K, "decode": d, "auc": a, "source": "synthetic", "preset": "default"}
        for K, d, a in ((5, "q", 0.3), (10, "q", 0.55), (5, "q+r", 0.79), (10, "q+r", 0.8))
    ], ("K", "decode", "auc", "source", "preset"))
    return out


def table(path):
    rows, _ = provenance.read_csv(path)
    return {(r["row"], r["metric"], r["source"], r["preset"]): r for r in rows}


def test_table2_has_paper_ours_and_difference(results, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# project\n\nbefore\n<!-- results:start -->\nstale\n<!-- results:end -->\nafter\n")
    # Rows whose errors file is missing are reported (by file name) and exit 1, but the tables are still built.
    assert report.main(["--results", str(results), "--paper", str(PAPER), "--readme", str(readme)]) == 1
    t2 = table(results / "table2.csv")
    _, columns = provenance.read_csv(results / "table2.csv")
    assert {"row", "metric", "paper", "ours", "source", "preset"} <= set(columns)
    line = t2[("DenseReg+MDM", "auc", "synthetic", "default")]
    assert (line["paper"], float(line["ours"]), float(line["diff"])) == ("0.5219", 0.5, pytest.approx(-0.0219))
    line = t2[("DenseReg+MDM", "failure_rate", "synthetic", "default")]  # percent, like the paper
    assert (line["paper"], float(line["ours"]), float(line["diff"])) == ("3.67", 4.0, pytest.approx(0.33))
    assert float(t2[("DenseReg+MDM", "auc_0.08", "synthetic", "default")]["ours"]) == pytest.approx(0.4)
    assert t2[("DenseReg+MDM", "auc_0.08", "synthetic", "default")]["paper"] == ""
    assert float(t2[("DenseReg", "auc", "synthetic", "default")]["ours"]) == pytest.approx(0.4)
    # A competitor we do not run: the paper's number, ours empty.
    assert t2[("Fan et al.", "auc", "synthetic", "default")]["ours"] == ""
    # Our extra rows and plug-ins land in the same table, paper empty.
    assert t2[("HOG-SVM+MDM", "auc", "synthetic", "default")]["paper"] == ""
    assert float(t2[("mypkg.mod:fancy [v2]", "auc", "synthetic", "default")]["ours"]) == pytest.approx(0.3)
    # Each (source, preset) is its own group; the indoor split is not Table 2.
    assert float(t2[("DenseReg+MDM", "auc", "real", "paper")]["ours"]) == pytest.approx(0.52)
    assert not [k for k, r in t2.items() if r["ours"] == "0.1"]

    md = (results / "table2.md").read_text()
    assert "synthetic data, preset default" in md and "real data, preset paper" in md
    assert "| DenseReg+MDM" in md and "0.5219" in md

    text = readme.read_text()
    assert text.startswith("# project\n\nbefore\n<!-- results:start -->\n")
    assert text.endswith("<!-- results:end -->\nafter\n")
    section = text[text.index("<!-- results:start -->"):text.index("<!-- results:end -->")]
    assert "stale" not in section and "Table 2" in section and "0.5219" in section
    assert "![fig7_300w_synthetic](results/figures/fig7_300w_synthetic.png)" in section
    assert "table3" in section  # named as not produced yet


def test_figures_table1_and_fig5(results, tmp_path):
    report.main(["--results", str(results), "--paper", str(PAPER), "--no-readme"])
    assert not (results / "figures" / "fig7_300w_real.png").exists()  # its errors file is missing: no curve
    for name in ("fig7_300w_synthetic.png", "fig5_synthetic.png"):
        data = (results / "figures" / name).read_bytes()
        assert data[:4] == b"\x89PNG" and len(data) > 5000
    t1 = table(results / "table1.csv")
    line = t1[("DenseReg", "iou_nose", "synthetic", "default")]
    assert (line["paper"], float(line["ours"])) == ("87.71", pytest.approx(80.0))
    assert t1[("DeepLab-v2", "iou_nose", "synthetic", "default")]["ours"] == ""
    f5 = table(results / "fig5.csv")
    line = f5[("K=10 q+r", "auc", "synthetic", "default")]
    assert (line["paper"], float(line["ours"]), float(line["diff"])) == ("0.810", 0.8, pytest.approx(-0.01))
    assert f5[("K=60 q", "auc", "synthetic", "default")]["ours"] == ""
    assert "| 10  | 0.560" in (results / "fig5.md").read_text()


@pytest.mark.parametrize("content, problem", [
    ("name,error,status,message,seconds\n", "0 per-image errors, but its row says n=21"),     # header only
    ("name,error,status,message,seconds\nimg0,0.01,ok,,0.1\n", "1 per-image errors, but its row says n=21"),
    ("", "not a readable CSV"),                                                              # empty file
    ("name,status\nimg0,ok\n", "no 'error' column"),
])
def test_a_bad_errors_file_is_named_and_gets_no_curve(tmp_path, capsys, content, problem):
    results = tmp_path / "results"
    err_file = "errors/300w_test_densereg_mdm_synthetic.csv"
    (results / "errors").mkdir(parents=True)
    (results / err_file).write_text(content)
    provenance.write_csv(results / "300w.csv", [run_row("densereg", "mdm", 0.5, 0.04, errors=err_file, n=21)],
                         provenance.SCHEMAS["landmarks"].columns)
    assert report.main(["--results", str(results), "--paper", str(PAPER), "--no-readme"]) == 1
    err = capsys.readouterr().err
    assert f"{results / err_file}: " in err and problem in err
    assert not (results / "figures" / "fig7_300w_synthetic.png").exists()


def test_seeds_are_averaged_and_artefacts_kept_apart(tmp_path):
    results = tmp_path / "results"
    provenance.write_csv(results / "300w.csv", [
        run_row("densereg", "none", 0.40, 0.10, artefacts="densereg=aaaaaaaaaaaa/cpu/K10", seed=0),
        run_row("densereg", "none", 0.50, 0.20, artefacts="densereg=aaaaaaaaaaaa/cpu/K10", seed=1),
        run_row("densereg", "none", 0.30, 0.30, artefacts="densereg=bbbbbbbbbbbb/cpu/K5", seed=0),
    ], provenance.SCHEMAS["landmarks"].columns)
    report.build_report(results, PAPER, None)
    t2 = table(results / "table2.csv")
    assert float(t2[("DenseReg (densereg cpu/K10)", "auc", "synthetic", "default")]["ours"]) == pytest.approx(0.45)
    assert float(t2[("DenseReg (densereg cpu/K5)", "auc", "synthetic", "default")]["ours"]) == pytest.approx(0.3)


def test_no_runs_gives_paper_only_tables_and_appends_markers(tmp_path):
    results = tmp_path / "results"
    readme = tmp_path / "README.md"
    readme.write_text("# project\n")
    report.main(["--results", str(results), "--paper", str(PAPER), "--readme", str(readme)])
    rows, _ = provenance.read_csv(results / "table2.csv")
    assert len(rows) == 14 and all(r["ours"] == "" and r["paper"] for r in rows)
    assert "paper only" in (results / "table2.md").read_text()
    text = readme.read_text()
    assert text.startswith("# project\n\n<!-- results:start -->\n") and text.endswith("<!-- results:end -->\n")
    assert not (results / "figures").exists() or not list((results / "figures").iterdir())


def test_replace_section_rejects_malformed_markers():
    with pytest.raises(ValueError, match="markers"):
        report.replace_section("<!-- results:end --> <!-- results:start -->", "x")
    with pytest.raises(ValueError, match="markers"):
        report.replace_section("<!-- results:start --> only", "x")
    assert report.replace_section("a\n<!-- results:start -->old<!-- results:end -->b", "new") == \
        "a\n<!-- results:start -->\nnew\n<!-- results:end -->b"


def test_method_names_match_the_paper_rows():
    assert tables.method_name("densereg", "mdm") == "DenseReg+MDM"
    assert tables.method_name("densereg", "none") == "DenseReg"
    assert tables.method_name("dpm", "aam") == "DPM+AAM"
    assert tables.method_name("boxes:/x", "aam", "t") == "boxes:/x+AAM [t]"
