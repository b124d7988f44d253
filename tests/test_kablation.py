"""The Fig. 5 K ablation end to end on a tiny synthetic set (tiny preset: the pipeline, not the accuracy)."""

import csv

from benchmarks.experiments import kablation


def test_kablation_writes_rows_for_each_k_and_decode(tiny_synth, tmp_path):
    args = ["--root", str(tiny_synth), "--preset", "tiny", "--ks", "1,3", "--runs", str(tmp_path / "runs"),
            "--results", str(tmp_path / "results")]
    assert kablation.main(args) == 0
    rows = list(csv.DictReader((tmp_path / "results" / "fig5_runs.csv").open()))
    assert [(r["K"], r["decode"]) for r in rows] == [("1", "q+r"), ("3", "q"), ("3", "q+r")]
    for r in rows:
        assert 0.0 <= float(r["auc"]) <= 1.0 and 0.0 <= float(r["auc_maxaxis"]) <= 1.0
        assert int(r["n_pixels"]) > 0 and r["source"] == "synthetic" and r["preset"] == "tiny"
    # A re-run reuses the checkpoints and replaces (not duplicates) the rows.
    assert kablation.main(args) == 0
    assert len(list(csv.DictReader((tmp_path / "results" / "fig5_runs.csv").open()))) == 3
