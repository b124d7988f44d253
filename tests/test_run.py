"""Tests of the benchmark runner: the CLI end to end on a tiny 300W-like tree, plug-ins, failures, recording."""

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from benchmarks import initialisers as inits
from benchmarks import records as provenance, run
from benchmarks.experiments import landmarks
from benchmarks.fitters import FITTERS, get_fitter
from benchmarks.baselines.boxes import BoxToShape
from benchmarks.context import RunContext
from densereg.geometry.boxes import iou, pick as pick_detection
from densereg.data import datasets as ds
from densereg.data import formats

REPO = Path(__file__).resolve().parents[1]

# One fixed "face" in the unit square; the outer eye corners (36, 45) are far apart so the NME is well defined.
_rng = np.random.default_rng(0)
BASE = _rng.uniform(0.25, 0.75, (68, 2))
BASE[36], BASE[45] = (0.15, 0.4), (0.85, 0.4)

TREE = {"300W/afw": "afw", "300W/helen/trainset": "helen", "300W/lfpw/trainset": "lfpw",
        "300W/300W/01_Indoor": "indoor", "300W/300W/02_Outdoor": "outdoor"}


def make_300w_tree(root, per_folder=3, seed=1):
    """A tiny 300W tree in the real layout: random 40×40 images, faces = scaled/moved BASE + noise."""
    rng = np.random.default_rng(seed)
    for folder, prefix in TREE.items():
        for i in range(per_folder):
            stem = f"{prefix}_{i + 1:03d}"
            points = BASE * rng.uniform(20, 30) + rng.uniform(2, 8, 2) + rng.normal(0, 0.3, (68, 2))
            formats.write_image(root / folder / f"{stem}.png", rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
            formats.write_pts(root / folder / f"{stem}.pts", points)
    return root


@pytest.fixture(autouse=True)
def _outputs_in_tmp(tmp_path, monkeypatch):
    """Runs default their outputs (./results, ./runs) to the current folder: keep them out of the checkout."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def data(tmp_path, monkeypatch):
    root = make_300w_tree(tmp_path / "data")
    monkeypatch.setenv("DENSEREG_DATA", str(root))
    return root


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """A plug-in module under tmp_path: initialisers and fitters defined outside the project."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "harness_plugin.py").write_text(textwrap.dedent("""
        import numpy as np
        from benchmarks.baselines.boxes import BoxToShape
        from benchmarks.context import factory

        def flaky(image, box, name):
            # Points at the box centre, except one miss, one crash and one wrongly shaped output.
            if name.endswith("indoor_002"):
                return None
            if name.endswith("outdoor_001"):
                raise RuntimeError("boom in the initialiser")
            if name.endswith("outdoor_002"):
                return np.zeros((5, 2))
            x0, y0, x1, y1 = box
            return np.tile([(x0 + x1) / 2, (y0 + y1) / 2], (68, 1))
        flaky.needs_name = True

        @factory
        def learnt(ctx):
            regression = BoxToShape.from_samples(ctx.train_samples())
            seen = ctx.dataset, ctx.source
            def init(image, box):
                assert seen == ("300w", "real")
                return regression(box)
            return init

        def broken_fitter(image, shape):
            raise ValueError("fitter exploded")

        def noisy_fitter(image, shape):
            return shape + np.random.normal(0, 0.5, shape.shape)
    """))
    monkeypatch.syspath_prepend(str(folder))
    sys.modules.pop("harness_plugin", None)
    yield "harness_plugin"
    sys.modules.pop("harness_plugin", None)


def run_cli(*argv):
    return run.main([*map(str, argv), "--no-progress"])


def read_row(results, dataset="300w"):
    rows, columns = provenance.read_csv(results / f"{dataset}.csv")
    return rows, columns


# ------------------------------------------------------------------------------------------------------------
# End to end


def test_mean_shape_end_to_end_writes_row_and_errors(data, tmp_path, capsys):
    results = tmp_path / "results"
    assert run_cli("300w", "--init", "mean-shape", "--fitter", "none", "--results", results) == 0
    rows, columns = read_row(results)
    assert columns == list(provenance.SCHEMAS["landmarks"].columns)
    assert len(rows) == 1
    row = rows[0]
    assert (row["dataset"], row["split"], row["init"], row["fitter"], row["source"], row["preset"]) == \
        ("300w", "test", "mean-shape", "none", "real", "paper")
    assert row["n"] == "6" and row["misses"] == "0"
    assert row["torch"] == provenance.torch_version() and row["commit"] and row["date"]
    assert row["device"].startswith("cpu")
    # The faces are similarity transforms of one shape plus 0.3 px noise: the mean shape in the GT box is close.
    assert 0.3 < float(row["auc_0.1"]) <= 1 and float(row["failure_0.1"]) == 0
    assert float(row["mean_nme"]) < 0.08
    errors_rows, err_cols = provenance.read_csv(results / row["errors"])
    assert err_cols == list(provenance.ERROR_COLUMNS)
    assert row["errors"] == "errors/300w_test_mean-shape_none_real_paper.csv"
    assert [r["name"] for r in errors_rows] == [f"01_Indoor/indoor_00{i}" for i in (1, 2, 3)] + \
        [f"02_Outdoor/outdoor_00{i}" for i in (1, 2, 3)]
    assert all(r["status"] == "ok" and np.isfinite(float(r["error"])) for r in errors_rows)
    # The summary row is exactly what the metrics give on the errors file.
    errors = np.array([float(r["error"]) for r in errors_rows])
    assert float(row["auc_0.1"]) == pytest.approx(landmarks.metrics.auc_and_failure(errors)[0], abs=1e-6)
    out = capsys.readouterr().out
    assert "auc_0.1" in out and "mean-shape" in out  # the row printed as a table


def test_root_folder_is_used_as_it_is_and_labelled(tmp_path, monkeypatch):
    root = make_300w_tree(tmp_path / "mine")
    (root / "synth.json").write_text("{}")          # what densereg.data.synth leaves in a folder it made
    monkeypatch.delenv("DENSEREG_DATA", raising=False)
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    results = tmp_path / "results"
    assert run_cli("300w", "--init", "mean-shape", "--root", root, "--results", results) == 0
    row = read_row(results)[0][0]
    assert row["source"] == "synthetic" and row["errors"] == "errors/300w_test_mean-shape_none_synthetic_cpu.csv"
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before    # nothing written into the data
    (root / "synth.json").unlink()
    assert run_cli("300w", "--init", "mean-shape", "--root", root, "--results", results) == 0
    assert {r["source"] for r in read_row(results)[0]} == {"synthetic", "real"}
    assert run_cli("ears", "--init", "mean-shape", "--root", root, "--results", results) == 2


def test_a_foreign_folder_at_the_synthetic_location_is_never_regenerated(tmp_path, monkeypatch, capsys):
    mine = tmp_path / "synthetic"
    (mine / "300W").mkdir(parents=True)
    (mine / "300W" / "precious.txt").write_text("keep me")
    monkeypatch.setenv("DENSEREG_SYNTH", str(mine))
    assert run_cli("300w", "--init", "mean-shape", "--source", "synthetic", "--results", tmp_path / "r") == 2
    assert "not made by densereg.data.synth" in capsys.readouterr().err
    assert (mine / "300W" / "precious.txt").read_text() == "keep me"


def test_outputs_default_to_the_current_folder(data, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert run_cli("300w", "--init", "mean-shape") == 0
    assert (work / "results" / "300w.csv").is_file()


def test_indoor_split_and_limit_tag(data, tmp_path):
    results = tmp_path / "results"
    assert run_cli("300w", "--init", "mean-shape", "--split", "indoor", "--limit", "2", "--results", results) == 0
    row = read_row(results)[0][0]
    assert row["split"] == "indoor" and row["n"] == "2" and row["tag"] == "limit=2"
    assert row["errors"] == "errors/300w_indoor_mean-shape_none_real_paper_limit=2.csv"


def test_plugin_failures_are_listed_as_inf(data, tmp_path, plugin):
    results = tmp_path / "results"
    assert run_cli("300w", "--init", f"{plugin}:flaky", "--results", results) == 0
    row = read_row(results)[0][0]
    assert row["init"] == "harness_plugin:flaky"
    assert row["n"] == "6" and row["misses"] == "3"
    assert float(row["failure_0.1"]) >= 0.5 - 1e-9
    by_name = {r["name"]: r for r in provenance.read_csv(results / row["errors"])[0]}
    assert by_name["01_Indoor/indoor_002"]["status"] == "miss"
    assert by_name["02_Outdoor/outdoor_001"]["status"] == "init-error"
    assert "boom in the initialiser" in by_name["02_Outdoor/outdoor_001"]["message"]
    assert by_name["02_Outdoor/outdoor_002"]["status"] == "init-invalid"
    assert "(5, 2)" in by_name["02_Outdoor/outdoor_002"]["message"]
    for name in ("01_Indoor/indoor_002", "02_Outdoor/outdoor_001", "02_Outdoor/outdoor_002"):
        assert by_name[name]["error"] == "inf"
    assert by_name["01_Indoor/indoor_001"]["status"] == "ok"


def test_plugin_factory_and_failing_fitter(data, tmp_path, plugin, capsys):
    results = tmp_path / "results"
    assert run_cli("300w", "--init", f"{plugin}:learnt", "--fitter", f"{plugin}:broken_fitter",
                   "--results", results) == 2   # a fitter failing on every image is broken: no row
    err = capsys.readouterr().err
    assert "failed on every one of the 6 images" in err and "fit-error: ValueError: fitter exploded" in err
    assert not (results / "300w.csv").exists()


def test_workers_give_the_same_errors_as_one_process(data, tmp_path, plugin):
    results = tmp_path / "results"
    args = ("300w", "--init", f"{plugin}:learnt", "--fitter", f"{plugin}:noisy_fitter", "--results", results)
    assert run_cli(*args, "--seed", "3") == 0
    row = read_row(results)[0][0]
    serial = provenance.read_csv(results / row["errors"])[0]
    assert run_cli(*args, "--seed", "3", "--workers", "2") == 0
    parallel = provenance.read_csv(results / row["errors"])[0]
    assert [(r["name"], r["error"]) for r in serial] == [(r["name"], r["error"]) for r in parallel]
    assert run_cli(*args, "--seed", "4") == 0  # the seed does matter to a stochastic method
    other = provenance.read_csv(results / row["errors"].replace(".csv", "_s4.csv"))[0]
    assert [r["error"] for r in serial] != [r["error"] for r in other]


def test_same_key_replaces_row_other_tag_seed_or_artefact_adds_one(data, tmp_path):
    results = tmp_path / "results"
    base = ("300w", "--init", "mean-shape", "--results", results)
    assert run_cli(*base) == 0
    assert run_cli(*base) == 0  # same key: replaced
    assert len(read_row(results)[0]) == 1
    assert run_cli(*base, "--seed", "7") == 0
    assert run_cli(*base, "--tag", "again") == 0
    assert run_cli(*base, "--preset", "tiny") == 0
    rows = read_row(results)[0]
    assert sorted((r["tag"], r["preset"], r["seed"]) for r in rows) == [
        ("", "paper", "0"), ("", "paper", "7"), ("", "tiny", "0"), ("again", "paper", "0")]   # default: resolved
    assert (results / "errors" / "300w_test_mean-shape_none_real_tiny.csv").is_file()
    assert (results / "errors" / "300w_test_mean-shape_none_real_paper_s7.csv").is_file()
    assert not list(results.glob(".*.tmp*")) and not list((results / "errors").glob(".*.tmp*"))


def test_rows_are_keyed_by_the_artefacts_they_used(data, tmp_path):
    """A run with another trained artefact (a K=5 checkpoint) never replaces the row of the K=10 one."""
    from benchmarks.context import RunContext

    samples = ds.load_dataset("300w", data, "test")
    results = tmp_path / "results"
    for identity in ("3f2a9c1b7d0e/cpu/K10", "0b1c2d3e4f5a/cpu/K5", "3f2a9c1b7d0e/cpu/K10"):
        ctx = RunContext(source="real", root=data, dataset="300w", runs_dir=tmp_path / "runs")
        ctx.record("densereg", identity)
        landmarks.run(samples, "mean-shape", "none", ctx, split="test", results_dir=results, norm="outer-eye",
                      progress=False)
    rows = read_row(results)[0]
    assert sorted(r["artefacts"] for r in rows) == ["densereg=0b1c2d3e4f5a/cpu/K5", "densereg=3f2a9c1b7d0e/cpu/K10"]
    assert len({r["errors"] for r in rows}) == 2
    for r in rows:   # each row beside its own errors file of n lines
        assert len(provenance.read_csv(results / r["errors"])[0]) == int(r["n"])


def test_boxes_dir_initialiser(data, tmp_path):
    boxes = tmp_path / "boxes"
    for s in ds.load_dataset("300w", data, "test"):
        if s.name != "01_Indoor/indoor_003":  # no box file: a miss
            box = s.box.copy()
            if s.name == "02_Outdoor/outdoor_003":
                box += 100.0  # a box on something else: no overlap with the face, a miss
            formats.write_box_pts(boxes / f"{Path(s.name).name}.pts", box)
    results = tmp_path / "results"
    assert run_cli("300w", "--init", f"boxes:{boxes}", "--results", results) == 0
    row = read_row(results)[0][0]
    assert row["misses"] == "2"
    by_name = {r["name"]: r for r in provenance.read_csv(results / row["errors"])[0]}
    assert by_name["01_Indoor/indoor_003"]["status"] == "miss"
    assert by_name["02_Outdoor/outdoor_003"]["status"] == "miss"
    assert float(by_name["01_Indoor/indoor_001"]["error"]) < 0.1
    assert run_cli("300w", "--init", f"boxes:{tmp_path / 'nowhere'}", "--results", results) == 2


def test_boxes_dir_reads_the_real_300w_box_files(data, tmp_path, real_fixtures):
    """The MDM 300-W test boxes (real files) are found by stem; faces annotated inside them are not missed."""
    box_dir = real_fixtures / "300W" / "boxes" / "300w"
    unit = (BASE - BASE.min(0)) / (BASE.max(0) - BASE.min(0))
    for s in ds.load_dataset("300w", data, "test"):
        x0, y0, x1, y1 = formats.read_box_pts(box_dir / f"{Path(s.name).name}.pts")
        formats.write_pts(s.image_path.with_suffix(".pts"), [x0, y0] + unit * [x1 - x0, y1 - y0])
    results = tmp_path / "results"
    assert run_cli("300w", "--init", f"boxes:{box_dir}", "--results", results) == 0
    row = read_row(results)[0][0]
    assert row["misses"] == "0" and float(row["failure_0.1"]) == 0.0


# ------------------------------------------------------------------------------------------------------------
# Clear errors


def test_missing_real_data_names_layout_and_synthetic_option(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DENSEREG_DATA", str(tmp_path))  # a folder without 300W/
    assert run_cli("300w", "--init", "mean-shape", "--results", tmp_path / "results") == 2
    err = capsys.readouterr().err
    assert "--source synthetic" in err and "300W/" in err and "01_Indoor" in err
    monkeypatch.delenv("DENSEREG_DATA")
    assert run_cli("300w", "--init", "mean-shape", "--source", "real", "--results", tmp_path / "results") == 2
    assert "$DENSEREG_DATA is not set" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("argv, message", [
    (("--init", "nonsense"), "valid: boxes:ARG, densereg, dlib-68, dpm, hog-svm, mean-shape, package.module:callable, "
                            "preds:ARG"),
    (("--init", "mean-shape", "--fitter", "nope"), "unknown fitter 'nope'; valid: aam, mdm, none"),
    (("--init", "no_such_module_xyz:f"), "(and no module named 'no_such_module_xyz')"),
    (("--init", "densereg", "--checkpoint", "/nonexistent/last.pt"), "/nonexistent/last.pt: not found"),
    (("--init", "mean-shape", "--split", "nope"), "unknown 300w split 'nope'"),
])
def test_user_errors_are_clear(data, tmp_path, capsys, argv, message):
    assert run_cli("300w", *argv, "--results", tmp_path / "results") == 2
    assert message in capsys.readouterr().err


def test_method_build_errors_stop_multi_worker_runs_too(data, tmp_path, capsys):
    assert run_cli("300w", "--init", "densereg", "--checkpoint", "/nonexistent/last.pt", "--workers", "2",
                   "--results", tmp_path / "results") == 2
    assert "last.pt: not found" in capsys.readouterr().err


def test_helen_command_needs_exactly_one_of_init_or_method(capsys):
    with pytest.raises(SystemExit) as exc:
        run.main(["helen", "--method", "nope"])
    assert exc.value.code == 2 and "invalid choice: 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run.main(["helen"])
    assert "exactly one of --init" in capsys.readouterr().err


def test_module_entry_point(data, tmp_path):
    """``python -m benchmarks.run`` as a user types it (the docstring's command)."""
    results = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run", "300w", "--init", "mean-shape", "--fitter",
                           "none", "--results", str(results), "--runs", str(tmp_path / "runs")], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "300w_test_mean-shape_none_real_paper.csv" in proc.stdout
    assert len(read_row(results)[0]) == 1


# ------------------------------------------------------------------------------------------------------------
# Units: detection choice, box→shape regression, registries


def test_pick_detection():
    face = np.array([10, 10, 50, 50])
    detections = np.array([[100, 100, 140, 140], [12, 8, 52, 48], [0, 0, 30, 30]])
    index, box = pick_detection(detections, face)
    assert index == 1 and np.array_equal(box, detections[1])
    assert pick_detection(np.zeros((0, 4)), face) is None
    assert pick_detection([[100, 100, 140, 140]], face) is None
    # [0,0,30,30] overlaps the face by 400 / (900 + 1600 - 400) = 0.19: kept only with a lower threshold.
    assert pick_detection([[0, 0, 30, 30]], face) is None
    assert pick_detection([[0, 0, 30, 30]], face, min_iou=0.15)[0] == 0
    assert iou(face, face) == 1.0 and iou(face, [60, 60, 70, 70]) == 0.0


def test_box_to_shape_recovers_a_box_convention():
    rng = np.random.default_rng(5)
    mean = BASE - BASE.mean(axis=0)
    scales = rng.uniform(50, 150, 40)
    shapes = scales[:, None, None] * mean + rng.uniform(0, 300, (40, 1, 2))
    tight = np.array([np.r_[s.min(0), s.max(0)] for s in shapes])
    # A detector's convention: boxes 20% larger than the landmarks and shifted up by 10% of their height.
    w, h = tight[:, 2] - tight[:, 0], tight[:, 3] - tight[:, 1]
    boxes = tight + np.c_[-0.1 * w, -0.2 * h, 0.1 * w, 0.0 * h]
    regression = BoxToShape().fit(boxes, shapes)
    np.testing.assert_allclose(regression(boxes[3]), shapes[3], atol=1e-6)
    np.testing.assert_allclose(regression(boxes), shapes, atol=1e-6)
    # Equivariance: doubling and moving a box doubles and moves the shape.
    moved = regression(boxes[0] * 2 + np.array([5, 7, 5, 7]))
    np.testing.assert_allclose(moved, shapes[0] * 2 + [5, 7], atol=1e-6)
    assert np.sqrt((regression.mean_shape ** 2).sum(1).mean()) == pytest.approx(1.0)


def test_box_to_shape_save_load_and_errors(tmp_path):
    shapes = np.stack([BASE * 100, BASE * 120 + 5, BASE * 90 + 3])
    boxes = np.array([ds.landmarks_box(s) for s in shapes])
    regression = BoxToShape().fit(boxes, shapes)
    regression.save(tmp_path / "b2s.npz")
    np.testing.assert_array_equal(BoxToShape.load(tmp_path / "b2s.npz")(boxes[1]), regression(boxes[1]))
    with pytest.raises(ValueError, match="at least 2"):
        BoxToShape().fit(boxes[:1], shapes[:1])
    with pytest.raises(ValueError, match="positive width"):
        BoxToShape().fit(np.zeros((3, 4)), shapes)
    with pytest.raises(RuntimeError, match="before fit"):
        BoxToShape()(boxes[0])


def test_registries_are_factories_and_lookup_names_keys(tmp_path):
    ctx = RunContext(source="synthetic", root=tmp_path, dataset="300w", runs_dir=tmp_path / "runs")
    shape = np.ones((68, 2))
    assert np.array_equal(get_fitter("none", ctx)(None, shape), shape)
    assert set(FITTERS) >= {"none", "aam", "mdm"}
    assert set(inits.INITIALISERS) >= {"mean-shape", "densereg", "hog-svm", "dpm"}
    with pytest.raises(KeyError, match="boxes:ARG"):
        inits.get_initialiser("gt-box", ctx)
    assert ctx.artefact_dir("mdm", "300w").is_dir()


# ------------------------------------------------------------------------------------------------------------
# preds:DIR (precomputed landmarks, Menpo-benchmark style) and the densereg initialiser over the library API


def test_preds_dir_scores_submitted_landmarks_and_lists_missing_files(data, tmp_path):
    preds = tmp_path / "preds"
    samples = ds.load_dataset("300w", data, "test")
    for i, s in enumerate(samples):
        if s.name == "02_Outdoor/outdoor_002":
            continue                                         # no file: a miss, listed
        target = preds / f"{s.name}.pts" if i % 2 else preds / f"{Path(s.name).name}.pts"   # name or stem
        formats.write_pts(target, s.landmarks + (5.0 if s.name == "01_Indoor/indoor_003" else 0.0))
    results = tmp_path / "results"
    assert run_cli("300w", "--init", f"preds:{preds}", "--results", results) == 0
    row = read_row(results)[0][0]
    assert row["misses"] == "1" and row["n"] == "6"
    by_name = {r["name"]: r for r in provenance.read_csv(results / row["errors"])[0]}
    assert by_name["02_Outdoor/outdoor_002"]["status"] == "miss"
    assert "outdoor_002.pts" in by_name["02_Outdoor/outdoor_002"]["message"]
    assert float(by_name["01_Indoor/indoor_001"]["error"]) == pytest.approx(0.0, abs=1e-5)   # the GT itself
    assert float(by_name["01_Indoor/indoor_003"]["error"]) > 0.1                             # 5 px off


def test_preds_dir_with_a_malformed_file_stops_naming_it(data, tmp_path, capsys):
    preds = tmp_path / "preds"
    preds.mkdir()
    (preds / "indoor_001.pts").write_text("version: 1\nn_points: 68\n{\n1 2\n}\n")
    assert run_cli("300w", "--init", f"preds:{preds}", "--results", tmp_path / "results") == 2
    err = capsys.readouterr().err
    assert "indoor_001.pts" in err
    assert not (tmp_path / "results" / "300w.csv").exists()


def test_densereg_initialiser_is_the_library_read_out_with_the_box_picking_the_face(tiny_synth, tmp_path):
    pytest.importorskip("densereg.readout.predictor",
                        reason="the DenseReg predictor (densereg.readout.predictor) comes with the lib branch")
    from densereg import DenseReg

    ctx = RunContext(source="synthetic", root=tiny_synth, dataset="300w", runs_dir=tmp_path / "runs",
                     preset="tiny")
    init = inits.get_initialiser("densereg", ctx)
    checkpoint = tmp_path / "runs" / "densereg-tiny" / "last.pt"
    assert checkpoint.is_file() and "densereg" in ctx.artefacts and "tiny/K" in ctx.artefacts["densereg"]
    model = DenseReg.load(checkpoint, device="cpu")
    sample = ds.load_dataset("300w", tiny_synth, "test")[0]
    image = sample.image()
    mine, theirs = init(image, sample.box), model.landmarks(image, box=sample.box)
    assert (mine is None) == (theirs is None)
    if mine is not None:
        np.testing.assert_allclose(mine, theirs)
    far = np.array([-500.0, -500.0, -400.0, -400.0])     # a box on no face: a miss, not a crop
    assert init(image, far) is None


def test_build_only_trains_the_artefacts_a_grid_then_uses_and_writes_no_row(tiny_synth, tmp_path, capsys):
    """``--build-only`` (how ./reproduce.sh trains DenseReg and the baselines side by side) builds each
    method's artefact once and evaluates nothing; the grid afterwards finds them and builds nothing."""
    common = ("--source", "synthetic", "--root", str(tiny_synth), "--preset", "tiny", "--runs", str(tmp_path / "runs"),
              "--results", str(tmp_path / "results"), "--no-progress")
    assert run_cli("300w", "--pairs", "densereg+none,mean-shape+mdm", "--build-only", *common) == 0
    err = capsys.readouterr().err
    assert "[build] 300w seed 0: artefacts ready" in err and err.count("built in") >= 2   # DenseReg and MDM
    assert (tmp_path / "runs" / "synthetic" / "densereg-tiny" / "last.pt").is_file()
    assert (tmp_path / "runs" / "synthetic" / "mdm-tiny" / "mdm.pt").is_file()
    assert not (tmp_path / "results" / "300w.csv").exists()
    assert run_cli("300w", "--pairs", "densereg+mdm", "--limit", "2", *common) == 0
    err = capsys.readouterr().err
    assert "built in" not in err and (tmp_path / "results" / "300w.csv").is_file()
