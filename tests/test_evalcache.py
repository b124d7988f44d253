"""Tests of the one-process grid (``--pairs``, initialiser replay) and of row reuse (``--reuse``, evalcache)."""

import numpy as np
import pytest

from benchmarks import evalcache, records, run
from benchmarks.context import Miss
from benchmarks.experiments import landmarks
from densereg.data import formats
from test_run import make_300w_tree, plugin  # noqa: F401 - the plug-in fixture


@pytest.fixture
def data(tmp_path, monkeypatch):
    root = make_300w_tree(tmp_path / "data")
    monkeypatch.setenv("DENSEREG_DATA", str(root))
    return root


def cli(tmp_path, *argv):
    return run.main(["300w", *map(str, argv), "--results", str(tmp_path / "results"),
                     "--runs", str(tmp_path / "runs"), "--no-progress"])


def rows_of(tmp_path):
    return records.read_csv(tmp_path / "results" / "300w.csv")[0]


class CountingInit:
    """Box-centre points, a miss on one image and a crash on another; counts its calls."""

    needs_name = True

    def __init__(self):
        self.calls = 0

    def __call__(self, image, box, name):
        self.calls += 1
        if name.endswith("indoor_002"):
            raise Miss("not found")
        if name.endswith("outdoor_001"):
            raise RuntimeError("boom")
        x0, y0, x1, y1 = box
        return np.tile([(x0 + x1) / 2, (y0 + y1) / 2], (68, 1)) + np.linspace(0, 3, 136).reshape(68, 2)


def shrink(image, shape):
    return shape.mean(0) + 0.9 * (shape - shape.mean(0)) + np.random.normal(0, 0.1, shape.shape)


def test_replayed_initialiser_scores_exactly_what_a_fresh_run_does(data):
    from densereg.data import datasets

    samples = datasets.load_dataset("300w", data, "test")
    init = CountingInit()
    fresh = landmarks.evaluate(samples, (init, shrink), "outer-eye", seed=5, progress=False)
    assert init.calls == len(samples)
    records_ = [r.pop("init") for r in fresh]

    def must_not_run(*args, **kwargs):
        raise AssertionError("a replayed initialiser was called")

    for workers in (1, 2):
        replayed = landmarks.evaluate(samples, (must_not_run, shrink), "outer-eye", seed=5, progress=False,
                                      workers=workers, replays=records_)
        for r in replayed:
            r.pop("init")
        assert [(r["name"], r["error"], r["status"], r["message"]) for r in replayed] == \
            [(r["name"], r["error"], r["status"], r["message"]) for r in fresh]
    statuses = {r["name"].split("/")[-1]: r["status"] for r in fresh}
    assert statuses["indoor_002"] == "miss" and statuses["outdoor_001"] == "init-error"


def test_pairs_run_every_row_in_one_process_and_match_single_runs(data, tmp_path, plugin, monkeypatch):
    calls = []
    real_evaluate = landmarks.evaluate
    monkeypatch.setattr(landmarks, "evaluate", lambda *a, **k: calls.append(k.get("replays") is not None)
                        or real_evaluate(*a, **k))
    init = f"{plugin}:learnt"
    assert cli(tmp_path, "--pairs", f"mean-shape+none,{init}+none,{init}+{plugin}:noisy_fitter", "--seed", "2") == 0
    assert calls == [False, False, True]         # the plug-in initialiser ran once for its two rows
    rows = rows_of(tmp_path)
    assert [(r["init"], r["fitter"]) for r in rows] == [("mean-shape", "none"), (init, "none"),
                                                         (init, f"{plugin}:noisy_fitter")]
    single = tmp_path / "single"
    for row in rows:                              # each row equals the same run made on its own
        assert run.main(["300w", "--init", row["init"], "--fitter", row["fitter"], "--seed", "2", "--results",
                         str(single / "results"), "--runs", str(single / "runs"), "--no-progress"]) == 0
    alone = records.read_csv(single / "results" / "300w.csv")[0]
    def scored(path):
        return [(e["name"], e["error"], e["status"], e["message"]) for e in records.read_csv(path)[0]]

    for r in rows:
        assert scored(tmp_path / "results" / r["errors"]) == scored(single / "results" / r["errors"])
    assert [r["auc_0.1"] for r in alone] == [r["auc_0.1"] for r in rows]


def test_pairs_option_is_validated(data, tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli(tmp_path, "--pairs", "densereg")
    assert "--pairs takes INIT+FITTER" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli(tmp_path, "--pairs", "mean-shape+none", "--init", "mean-shape")
    assert "exactly one of --init" in capsys.readouterr().err


def test_reuse_takes_an_unchanged_row_and_recomputes_whenever_an_input_changed(data, tmp_path, capsys,
                                                                               monkeypatch):
    assert cli(tmp_path, "--init", "mean-shape", "--reuse") == 0
    first = rows_of(tmp_path)
    assert "[cached]" not in capsys.readouterr().err
    assert cli(tmp_path, "--init", "mean-shape", "--reuse") == 0        # nothing changed: reused, said so
    assert "[cached]" in capsys.readouterr().err and rows_of(tmp_path) == first
    assert cli(tmp_path, "--init", "mean-shape") == 0                   # without --reuse: evaluated again
    err = capsys.readouterr().err
    assert "[cached]" not in err and rows_of(tmp_path)[0]["date"] >= first[0]["date"]

    again = rows_of(tmp_path)
    errors_file = tmp_path / "results" / again[0]["errors"]
    assert cli(tmp_path, "--init", "mean-shape", "--reuse") == 0        # the new row was recorded for reuse
    assert "[cached]" in capsys.readouterr().err
    errors_file.write_text(errors_file.read_text().replace("ok", "ok ", 1))   # an edited per-image file
    assert cli(tmp_path, "--init", "mean-shape", "--reuse") == 0
    assert "[cached]" not in capsys.readouterr().err

    monkeypatch.setattr(evalcache, "code_fingerprint", lambda: "other code")   # the harness's code changed
    assert cli(tmp_path, "--init", "mean-shape", "--reuse") == 0
    assert "[cached]" not in capsys.readouterr().err

    pts = sorted(data.rglob("01_Indoor/*.pts"))[0]                      # a test annotation changed
    formats.write_pts(pts, formats.read_pts(pts) + 1.0)
    assert cli(tmp_path, "--init", "mean-shape", "--reuse") == 0
    assert "[cached]" not in capsys.readouterr().err
