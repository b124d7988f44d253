"""The real-data path, rehearsed on a miniature real tree (``tests/real_tree.py``, built from the fixtures).

Fast tests check that every reader reads the tree, that the BFM stand-in written in the real 3DDFA formats loads,
and that real 300W-LP fittings render to dense GT (the 3DDFA pose convention) and read back to landmarks. The
slow test runs every table target end to end with ``--source real`` and the ``tiny`` presets, exactly as a user
with the real data would: training, every initialiser × fitter of Table 2, Helen segmentation (Table 1), the K
ablation (Fig. 5), the report; every row must say ``real``. Everything is skipped without
``../shared/fixtures/real``; nothing is written into the repository.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from benchmarks import records
from benchmarks import run as bench_run
from benchmarks.experiments import kablation
from densereg.data import check, datasets, formats, groundtruth
from densereg.geometry.bfm import load_bfm
from densereg.geometry.templates import builtin_face, template_for
from densereg.nn.config import make_config
from densereg.readout.forward import UVMap
from densereg.readout.predictor import DenseReg
from conftest import REAL_FIXTURES
from real_tree import HELEN_TEST, N_EXP, N_SHAPE, build_real_tree

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not REAL_FIXTURES.is_dir(), reason=f"real-format fixtures absent: {REAL_FIXTURES}")


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return build_real_tree(REAL_FIXTURES, tmp_path_factory.mktemp("real") / "data")


@pytest.fixture
def no_env(monkeypatch):
    """Neither $DENSEREG_DATA nor $DENSEREG_BFM: data is found only where a command is told it is."""
    monkeypatch.delenv("DENSEREG_DATA", raising=False)
    monkeypatch.delenv("DENSEREG_BFM", raising=False)


def _iod(points):
    return float(np.linalg.norm(points[36] - points[45]))


# ------------------------------------------------------------------------------------------------------------
# Fast: the tree, its readers, the BFM stand-in, dense GT of real fittings


def test_every_reader_reads_the_mini_tree(tree):
    counts = {("300w", "train"): 6, ("300w", "test"): 4, ("300w", "indoor"): 2, ("300w", "outdoor"): 2,
              ("helen", "test"): 2, ("helen", "train"): 2, ("300w-lp", "train"): 2, ("300w-lp", "test"): 2,
              ("ears", "train"): 2, ("ears", "test"): 1}
    for (name, split), n in counts.items():
        samples = datasets.load_dataset(name, tree, split)
        assert len(samples) == n, (name, split)
        assert all(s.image().ndim == 3 and s.box.shape == (4,) for s in samples)
    test = datasets.load_dataset("300w", tree, "test")
    assert all(s.extras["box_source"] == "boxes/300w" for s in test)
    every = datasets.load_dataset("300w-lp", tree, "all", flips=True, profiles=True)
    assert len(every) == 7 and sum(s.extras["flip"] for s in every) == 2
    assert [s.name for s in datasets.load_dataset("300vw", tree, "train", require_all=False)] == [
        "001/000006", "001/000009"]
    problems, _ = check.check_tree(tree)
    assert problems == []


def test_300w_lp_test_split_is_what_train_leaves_out(tree):
    """The fittings of the 300-W test images (HELEN testset here) form the split Fig. 5 is scored on."""
    names = {split: {s.name for s in datasets.load_dataset("300w-lp", tree, split)}
             for split in ("train", "test", "all")}
    assert names["train"].isdisjoint(names["test"]) and names["train"] | names["test"] == names["all"]
    assert names["test"] == {f"HELEN/HELEN_{stem}_0" for stem in HELEN_TEST}
    dataset, split = kablation.EVAL_SETS["real"]
    assert all("fitting" in s.extras for s in datasets.load_dataset(dataset, tree, split))


def test_bfm_standin_is_in_the_real_file_formats(tree):
    real, ours = REAL_FIXTURES / "BFM", tree / "BFM"
    for name in ("u_shp.npy", "u_exp.npy", "keypoints_sim.npy"):
        a, b = np.load(real / name), np.load(ours / name)
        assert a.dtype == b.dtype and a.ndim == b.ndim and a.shape[1:] == b.shape[1:], name
    tri_real, tri = scipy.io.loadmat(real / "tri.mat")["tri"], scipy.io.loadmat(ours / "tri.mat")["tri"]
    assert tri.dtype == tri_real.dtype and tri.shape[0] == 3 and tri.min() == 1
    n = np.load(ours / "u_shp.npy").size // 3
    assert tri.max() == n and scipy.io.loadmat(ours / "BFM_UV.mat")["UV"].shape == (n, 2)
    assert np.load(ours / "w_shp.npy").shape == (3 * n, N_SHAPE) and np.load(ours / "w_exp.npy").shape == (3 * n, N_EXP)


def test_bfm_reader_gives_back_the_builtin_face(tree):
    """Units, winding, landmark ids, UV orientation and the u_shp + u_exp sum all survive the real formats."""
    bfm, face = load_bfm(tree / "BFM"), builtin_face()
    assert bfm.id_basis.shape[0] == N_SHAPE and bfm.exp_basis.shape[0] == N_EXP
    np.testing.assert_array_equal(bfm.landmarks, face.landmarks)
    np.testing.assert_array_equal(bfm.triangles, face.triangles)          # re-wound outwards again
    np.testing.assert_allclose(bfm.uv, face.uv, atol=1e-9)                # v flipped back to grow downwards
    assert abs(bfm.scale * 86262 - 1) < 0.1                               # the BFM's native units
    lm = bfm.vertices[bfm.landmarks]
    assert abs(_iod(lm[:, :2]) - 1) < 0.05                                # template units: 1 = outer-eye distance


def test_real_fittings_render_to_dense_gt_on_their_face(tree, no_env):
    """Every 300W-LP fitting (plain, re-rendered profile, _Flip) poses the stand-in onto its image's face.

    No environment variable is set: the BFM is found in the data root the fitting lies in.
    """
    for sample in datasets.load_dataset("300w-lp", tree, "all", flips=True, profiles=True):
        image = sample.image()
        gt = groundtruth.dense_gt(sample)
        assert gt.mask.shape == image.shape[:2] and gt.mask.mean() > 0.05, sample.name
        assert set(np.unique(gt.parts[gt.mask])) >= {3, 4, 5}, sample.name     # eyes and nose visible
        ys, xs = np.nonzero(gt.mask)
        box = sample.box
        assert xs.min() < box[2] and xs.max() > box[0] and ys.min() < box[3] and ys.max() > box[1]
        if sample.landmarks is not None:                                       # k = 0: pt2d is this image's
            fitting = formats.read_fitting(sample.extras["fitting"])
            template = groundtruth.fitting_template(fitting, sample.extras["fitting"])
            projected = groundtruth.posed_vertices(fitting, template, image.shape[0])[template.landmarks, :2]
            error = np.linalg.norm(projected - sample.landmarks, axis=1).mean() / _iod(sample.landmarks)
            assert error < 0.25, (sample.name, error)   # another face shape than the real BFM, same pose


def test_readout_of_exact_uv_of_a_real_fitting(tree, no_env):
    """DenseReg's read-out on the BFM template: the exact UV of a real fitting gives its landmarks back."""
    sample = datasets.load_dataset("300w-lp", tree, "train")[0]
    fitting = formats.read_fitting(sample.extras["fitting"])
    template = groundtruth.fitting_template(fitting, sample.extras["fitting"])
    image = sample.image()
    gt = groundtruth.dense_gt(sample, template)
    uvmap = UVMap(u=gt.u.astype(np.float32), v=gt.v.astype(np.float32), u_q=gt.u, v_q=gt.v,
                  fg_prob=gt.mask.astype(np.float32), mask=gt.mask)
    model = DenseReg(None, make_config("tiny", source="real"), template, forward=lambda ims: [uvmap for _ in ims])
    points = model.landmarks(image, box=sample.box)
    projected = groundtruth.posed_vertices(fitting, template, image.shape[0])[template.landmarks, :2]
    assert points is not None and np.linalg.norm(points - projected, axis=1).mean() / _iod(projected) < 0.1


def test_bfm_is_looked_for_in_the_given_data_root(tree, no_env, tmp_path):
    with pytest.raises(FileNotFoundError, match="DENSEREG_BFM"):
        template_for("bfm")
    assert template_for("bfm", tree).name == "bfm"
    bare = tmp_path / "bare"
    shutil.copytree(tree, bare, ignore=shutil.ignore_patterns("BFM"))
    sample = datasets.load_dataset("300w-lp", bare, "train")[0]
    with pytest.raises(FileNotFoundError, match=f"looked in {bare.resolve() / 'BFM'}"):
        groundtruth.dense_gt(sample)


def test_helen_segmentation_without_bfm_is_a_user_error(tree, no_env, tmp_path, capsys):
    """Missing BFM: exit status 2 and the places looked in, not a traceback."""
    bare = tmp_path / "bare"
    shutil.copytree(tree, bare, ignore=shutil.ignore_patterns("BFM"))
    status = bench_run.main(["helen", "--method", "densereg", "--root", bare, "--preset", "tiny",
                             "--results", tmp_path / "results", "--runs", tmp_path / "runs"])
    assert status == 2 and "looked in" in capsys.readouterr().err


def test_each_training_split_has_its_own_artefact_cache(tree, no_env, tmp_path, monkeypatch):
    """An ``ears`` run must not rebuild (delete) the artefacts a ``300w`` run trained: separate folders."""
    seen = {}

    def fake_run(samples, init, fitter, ctx, **kwargs):
        seen[ctx.dataset] = Path(ctx.runs_dir)
        raise ValueError("stop here")

    monkeypatch.setattr(bench_run.landmarks, "run", fake_run)
    for dataset in ("300w", "helen", "ears"):
        bench_run.main([dataset, "--root", tree, "--init", "mean-shape", "--runs", tmp_path / "runs"])
    assert seen["300w"] == seen["helen"] == tmp_path / "runs" / "real"
    assert seen["ears"] != seen["300w"] and seen["ears"].is_relative_to(tmp_path / "runs" / "real")


def test_helen_landmark_rows_stay_out_of_the_table1_file(tree, no_env, tmp_path):
    results = tmp_path / "results"
    schema = records.SCHEMAS["segmentation"]
    records.write_run(results / "helen.csv", [{"method": "DenseReg", "part": "nose", "iou": "0.5",
                                               "source": "real", "preset": "tiny", "seed": 0}], schema)
    preds = tmp_path / "preds"
    for sample in datasets.load_dataset("helen", tree, "test"):
        formats.write_pts(preds / f"{Path(sample.name).name}.pts", sample.landmarks)
    assert bench_run.main(["helen", "--init", f"preds:{preds}", "--root", tree, "--results", results,
                           "--runs", tmp_path / "runs", "--no-progress"]) == 0
    assert list(records.read_table(results / "helen.csv").columns) == list(schema.columns)
    assert len(records.read_table(results / "helen_landmarks.csv")) == 1


# ------------------------------------------------------------------------------------------------------------
# Slow: every table target end to end on the real tree


TABLE2_INITS = ("densereg", "hog-svm", "dpm", "mean-shape", "dlib-68", "preds")
TABLE2_FITTERS = ("none", "aam", "mdm")


def _cli(args, cwd, env):
    done = subprocess.run([sys.executable, "-m", *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(map(str, args))}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.mark.slow
def test_every_table_target_end_to_end_on_real_data(tree, tmp_path, monkeypatch):
    work = tmp_path / "work"          # the current folder of every command: nothing lands in the repository
    work.mkdir()
    results, runs = work / "results", work / "runs"
    env = {**os.environ, "DENSEREG_DATA": str(tree), "PYTHONPATH": str(REPO)}
    env.pop("DENSEREG_BFM", None)
    monkeypatch.setenv("DENSEREG_DATA", str(tree))
    monkeypatch.delenv("DENSEREG_BFM", raising=False)
    monkeypatch.chdir(work)
    common = ["--source", "real", "--preset", "tiny", "--results", results, "--runs", runs, "--no-progress"]

    # Training, as the README says, into the folder the harness then uses (reused, not retrained).
    _cli(["densereg.nn.train", "--preset", "tiny", "--source", "real", "--out", runs / "real/densereg-tiny"],
         work, env)
    preds = work / "preds"
    for sample in datasets.load_dataset("300w", tree, "test"):
        formats.write_pts(preds / f"{sample.name}.pts", sample.landmarks + 1.5)

    # Table 2: every initialiser x fitter (the first through a fresh process, the rest in this one).
    _cli(["benchmarks.run", "300w", "--init", "densereg", "--fitter", "none", *common], work, env)
    for init in TABLE2_INITS:
        for fitter in TABLE2_FITTERS:
            if (init, fitter) == ("densereg", "none"):
                continue
            spec = f"preds:{preds}" if init == "preds" else init
            assert bench_run.main(["300w", "--init", spec, "--fitter", fitter, *common]) == 0, (init, fitter)
    rows, _ = records.read_csv(results / "300w.csv")
    assert len(rows) == len(TABLE2_INITS) * len(TABLE2_FITTERS)
    assert {r["source"] for r in rows} == {"real"} and {r["preset"] for r in rows} == {"tiny"}
    scores = {(r["init"].split(":")[0], r["fitter"]): float(r["auc_0.1"]) for r in rows}
    assert scores[("preds", "none")] > 0.7 and scores[("dlib-68", "none")] > 0.5   # real faces, real scoring

    # An ears run trains its own AAM and leaves the 300-W one alone.
    aam = (runs / "real/aam.pkl").read_bytes()
    assert bench_run.main(["ears", "--init", "mean-shape", "--fitter", "aam", *common]) == 0
    assert (runs / "real/aam.pkl").read_bytes() == aam

    # Table 1 (Helen segmentation) and Fig. 5 (the K ablation, on 300W-LP's test split).
    for method in ("densereg", "deeplab"):
        _cli(["benchmarks.run", "helen", "--method", method, *common], work, env)
    assert bench_run.main(["fig5", "--ks", "10", "--parallel", "1", *common]) == 0
    for table in ("helen.csv", "fig5_runs.csv"):
        table_rows, _ = records.read_csv(results / table)
        assert table_rows and {r["source"] for r in table_rows} == {"real"}, table

    # The report, into the temporary folder only.
    readme = work / "README.md"
    readme.write_text("# scratch\n")
    _cli(["benchmarks.report", "--results", results, "--readme", readme], work, env)
    for name in ("table1.md", "table2.md", "fig5.md"):
        assert "(real data, preset tiny)" in (results / name).read_text(), name
    assert (results / "figures/fig7_300w_real.png").is_file() and "(real data, preset tiny)" in readme.read_text()
