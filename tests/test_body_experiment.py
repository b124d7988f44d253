"""The body experiment (Fig. 10): its metrics on hand-made predictions, and the command end to end on a tiny
generated set (row with provenance, figure)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import records, run
from benchmarks.experiments import body as body_exp
from densereg.data import synth_body
from densereg.geometry.unwrap import PatchGT


def _gt():
    patch = np.zeros((4, 4), np.uint8)
    patch[1:3, 1:3] = 5
    u = np.where(patch > 0, 0.5, np.nan).astype(np.float32)
    return PatchGT(patch, u, u.copy(), patch > 0)


def test_score_counts_wrong_patches_as_failures_and_errors_within_right_ones():
    gt = _gt()
    perfect = {"patch": gt.patch.copy(), "u": gt.u.copy(), "v": gt.v.copy()}
    s = body_exp.score([perfect], [gt])
    assert s["patch_acc"] == 1 and s["pixel_acc"] == 1 and s["uv_median_all"] == 0 and s["uv_auc_all"] > 0.99
    off = {"patch": gt.patch.copy(), "u": gt.u + 0.03, "v": gt.v + 0.04}
    off["patch"][1, 1] = 7                      # one of four foreground pixels in the wrong patch
    s = body_exp.score([off], [gt])
    assert s["patch_acc"] == 0.75 and s["pixel_acc"] == 15 / 16
    assert s["uv_mean_correct"] == pytest.approx(0.05, abs=1e-6)     # 3-4-5, within the right patches
    assert s["uv_failure_all"] == pytest.approx(0.25)                # the wrong patch: +inf overall


def test_body_command_end_to_end(tmp_path):
    root = tmp_path / "set"
    synth_body.generate(root, seed=2, counts={"train": 3, "test": 2}, workers=1)
    argv = ["body", "--root", str(root), "--preset", "tiny", "--iterations", "2", "--results",
            str(tmp_path / "results"), "--runs", str(tmp_path / "runs"), "--no-progress"]
    assert run.main(argv) == 0
    rows, _ = records.read_csv(tmp_path / "results" / "body.csv")
    assert len(rows) == 1 and rows[0]["source"] == "synthetic" and rows[0]["preset"] == "tiny+iterations=2"
    assert rows[0]["artefacts"].startswith("body=") and rows[0]["artefacts"].endswith("/tiny/body")
    assert 0 <= float(rows[0]["patch_acc"]) <= 1 and rows[0]["commit"]
    assert (tmp_path / "results" / "figures" / "fig10_synthetic.png").stat().st_size > 1000
    assert run.main(argv) == 0                               # re-run: the row is replaced, the model reused
    assert len(records.read_csv(tmp_path / "results" / "body.csv")[0]) == 1


def test_body_command_refuses_a_missing_root(tmp_path, capsys):
    assert run.main(["body", "--root", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err
