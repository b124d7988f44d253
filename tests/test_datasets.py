"""Tests of densereg.data.datasets / readers / check: data roots, the readers of every layout, `check`."""

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io

from densereg.data import check, readers
from densereg.data import datasets as ds
from densereg.data import formats
from densereg.data.formats import DatasetError
from densereg.geometry import mirror

REPO = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------------------------------------------------
# Data roots


def test_data_root(monkeypatch, tmp_path):
    monkeypatch.delenv("DENSEREG_DATA", raising=False)
    with pytest.raises(DatasetError, match=r"\$DENSEREG_DATA is not set") as info:
        ds.data_root("real")
    assert "300W_LP/" in str(info.value)  # the message shows the expected layout
    monkeypatch.setenv("DENSEREG_DATA", str(tmp_path / "missing"))
    with pytest.raises(DatasetError, match="not a folder"):
        ds.data_root("real")
    monkeypatch.setenv("DENSEREG_DATA", str(tmp_path))
    assert ds.data_root("real") == tmp_path
    monkeypatch.delenv("DENSEREG_SYNTH", raising=False)
    assert ds.data_root("synthetic") == REPO / "data" / "synthetic"
    monkeypatch.setenv("DENSEREG_SYNTH", str(tmp_path / "s"))
    assert ds.data_root("synthetic") == tmp_path / "s"
    with pytest.raises(KeyError, match="real, synthetic"):
        ds.data_root("imaginary")


# ------------------------------------------------------------------------------------------------------------
# Readers on a tiny generated tree in the native layout


def _face(seed, size=40):
    """68 plausible 0-based points well inside a size×size image, with image-left eye left of image-right."""
    rng = np.random.default_rng(seed)
    points = rng.uniform(8, size - 8, size=(68, 2))
    points[36, 0], points[45, 0] = 10.0, 30.0
    return points


def _image(path, size=40, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((size, size, 3), seed * 20 % 255, np.uint8))


def _pair(folder, stem, ext=".png", seed=0, n=68, annotation_ext=".pts"):
    _image(folder / f"{stem}{ext}", seed=seed)
    points = _face(seed)[:n] if n <= 68 else np.random.default_rng(seed).uniform(5, 35, (n, 2))
    formats.write_pts(folder / f"{stem}{annotation_ext}", points)
    return points


def _fit(folder, stem, seed, flip=False):
    pts = _face(seed)
    _image(folder / f"{stem}.jpg", seed=seed)
    if flip:  # as in the real _Flip files: mirrored, not re-ordered
        pts = np.column_stack([39 - pts[:, 0], pts[:, 1]])
    formats.write_fitting(folder / f"{stem}.mat", formats.Fitting(np.zeros(7), np.zeros(3), np.zeros(2), pts,
                                                                  np.array([0, 0, 40, 40]), model="builtin"))


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "data"
    w = root / "300W"
    for stem in ("134212_1", "134212_2"):
        _pair(w / "afw", stem, ".jpg", seed=1)
    _pair(w / "helen/trainset", "100032540_1", ".jpg", seed=2)
    _pair(w / "helen/testset", "296814969_3", ".jpg", seed=3)
    _pair(w / "lfpw/trainset", "image_0001", seed=4)
    _pair(w / "lfpw/testset", "image_0002", seed=5)
    _pair(w / "ibug", "image_003_1", ".jpg", seed=6)
    _pair(w / "ibug", "image_014", ".jpg", seed=7)
    for i in (1, 2):
        _pair(w / "300W/01_Indoor", f"indoor_00{i}", seed=8 + i)
        formats.write_box_pts(w / "boxes/300w" / f"indoor_00{i}.pts", [1, 2, 30 + i, 33])
    _pair(w / "300W/02_Outdoor", "outdoor_001", seed=11)
    formats.write_box_pts(w / "boxes/300w/outdoor_001.pts", [3, 4, 35, 36])
    labels = root / "SmithCVPR2013_dataset_resized/labels/296814969_3"
    for k in (0, 1):
        _image(labels / f"296814969_3_lbl0{k}.png")

    lp = root / "300W_LP"
    for sub, stem in (("AFW", "AFW_134212_1"), ("HELEN", "HELEN_100032540_1"), ("HELEN", "HELEN_296814969_3"),
                      ("LFPW", "LFPW_image_train_0001"), ("LFPW", "LFPW_image_test_0002"),
                      ("IBUG", "IBUG_image_014"), ("SYNTH", "face_00001")):
        for k in (0, 1):
            _fit(lp / sub, f"{stem}_{k}", seed=k)
    _fit(lp / "AFW_Flip", "AFW_134212_1_0", seed=0, flip=True)

    vw = root / "300VW"
    for video in ("001", "401"):
        for frame in (1, 2, 3):
            _image(vw / video / "imgs" / f"{frame:06d}.jpg", seed=frame)
            formats.write_pts(vw / video / "annot" / f"{frame:06d}.pts", _face(frame), style="300vw")
    (vw / "unreliable.json").write_text(json.dumps({"401": [2]}))

    for split, n in (("train", 2), ("test", 1)):
        for i in range(n):
            _pair(root / "ears" / split, f"{split}_{i}", seed=i, n=55, annotation_ext=".txt")
    return root


def test_read_300w_splits(tree):
    assert [s.name for s in readers.read_300w(tree, "train")] == [
        "afw/134212_1", "afw/134212_2", "helen/trainset/100032540_1", "lfpw/trainset/image_0001"]
    assert len(readers.read_300w(tree, "common")) == 2
    assert [s.name for s in readers.read_300w(tree, "challenging")] == ["ibug/image_003_1", "ibug/image_014"]
    assert len(readers.read_300w(tree, "full")) == 4
    test = readers.read_300w(tree, "test")
    assert [s.name for s in test] == ["01_Indoor/indoor_001", "01_Indoor/indoor_002", "02_Outdoor/outdoor_001"]
    assert [s.name for s in readers.read_300w(tree, "indoor")] == ["01_Indoor/indoor_001", "01_Indoor/indoor_002"]
    np.testing.assert_allclose(test[1].box, [1, 2, 32, 33])  # from boxes/300w, not from the landmarks
    assert test[1].extras["subset"] == "01_Indoor" and test[1].extras["box_source"] == "boxes/300w"
    assert "fitting" not in test[1].extras  # real 300-W images have no fitting beside them
    np.testing.assert_allclose(test[1].landmarks, _face(10), atol=1e-6)
    train = readers.read_300w(tree, "train")[0]
    np.testing.assert_allclose(train.box, ds.landmarks_box(train.landmarks))
    assert train.extras["box_source"] == "landmarks"
    assert train.image().shape == (40, 40, 3)


def test_read_300w_errors(tree):
    (tree / "300W/ibug/image_099.jpg").write_bytes((tree / "300W/ibug/image_014.jpg").read_bytes())
    with pytest.raises(DatasetError, match="image_099.jpg.*image without annotation"):
        readers.read_300w(tree, "challenging")
    (tree / "300W/ibug/image_099.jpg").unlink()
    formats.write_pts(tree / "300W/ibug/image_014.pts", _face(0)[:66])
    with pytest.raises(DatasetError, match="image_014.pts.*expected 68 points, found 66"):
        readers.read_300w(tree, "challenging")
    (tree / "300W/boxes/300w/outdoor_001.pts").unlink()  # boxes for some images only: refuse to mix sources
    with pytest.raises(DatasetError, match="outdoor_001.pts.*box file missing"):
        readers.read_300w(tree, "outdoor")
    with pytest.raises(KeyError, match="challenging, common, full, indoor, outdoor, test, train"):
        readers.read_300w(tree, "val")
    with pytest.raises(DatasetError, match="missing folder"):
        readers.read_300w(tree / "nothing", "train")


def test_read_300w_lp(tree):
    train = readers.read_300w_lp(tree, "train")
    assert [s.name for s in train] == ["AFW/AFW_134212_1_0", "HELEN/HELEN_100032540_1_0",
                                       "LFPW/LFPW_image_train_0001_0", "SYNTH/face_00001_0"]
    sample = train[0]
    assert sample.extras["fitting"] == tree / "300W_LP/AFW/AFW_134212_1_0.mat"
    assert sample.extras["k"] == 0 and sample.extras["model"] == "builtin" and not sample.extras["flip"]
    np.testing.assert_allclose(sample.landmarks, _face(0), atol=1e-9)
    everything = readers.read_300w_lp(tree, "all", flips=True, profiles=True)
    assert len(everything) == 15
    profile = next(s for s in everything if s.name == "AFW/AFW_134212_1_1")
    assert profile.landmarks is None and profile.box.shape == (4,)  # pt2d is k=0's, not this image's
    flipped = next(s for s in everything if s.name == "AFW_Flip/AFW_134212_1_0")
    np.testing.assert_allclose(flipped.landmarks, mirror.mirror_landmarks(_face(0), 40), atol=1e-9)
    assert flipped.landmarks[36, 0] < flipped.landmarks[45, 0]
    assert len(readers.read_300w_lp(tree, "all")) == 7  # no flips, no k >= 1 by default
    # test: the fittings of the 300-W test images, i.e. what train leaves out of the 300-W subsets (not SYNTH)
    assert [s.name for s in readers.read_300w_lp(tree, "test")] == [
        "HELEN/HELEN_296814969_3_0", "IBUG/IBUG_image_014_0", "LFPW/LFPW_image_test_0002_0"]
    with pytest.raises(KeyError, match="all, test, train"):
        readers.read_300w_lp(tree, "val")


def test_read_helen(tree):
    (sample,) = readers.read_helen(tree, "test")
    assert sample.name == "helen/testset/296814969_3" and sample.landmarks.shape == (68, 2)
    assert [p.name for p in sample.extras["parsing_labels"]] == ["296814969_3_lbl00.png", "296814969_3_lbl01.png"]
    assert "parsing_labels" not in readers.read_helen(tree, "train")[0].extras


def test_read_300vw(tree):
    with pytest.raises(DatasetError, match="of the 50 train videos are missing"):
        readers.read_300vw(tree, "train")
    train = readers.read_300vw(tree, "train", require_all=False)
    assert [s.name for s in train] == ["001/000001", "001/000002", "001/000003"]
    assert train[1].extras["frame"] == 2 and train[1].image_path.name == "000002.jpg"
    np.testing.assert_allclose(train[1].landmarks, _face(2), atol=1e-3)
    cat1 = readers.read_300vw(tree, "cat1", require_all=False)
    assert [s.extras["unreliable"] for s in cat1] == [False, True, False]
    assert cat1[0].extras["category"] == "cat1"
    kept = readers.read_300vw(tree, "test", require_all=False, drop_unreliable=True)
    assert [s.name for s in kept] == ["401/000001", "401/000003"]
    (tree / "300VW/401/imgs/000003.jpg").unlink()
    with pytest.raises(DatasetError, match="000003.pts.*no frame image"):
        readers.read_300vw(tree, "cat1", require_all=False)


def test_300vw_unreliable_from_extra_mat(tree):
    (tree / "300VW/extra").mkdir()
    scipy.io.savemat(tree / "300VW/extra/001.mat", {"error": np.array([[1, 3]])})
    assert readers.unreliable_frames_300vw(tree / "300VW", "001") == {1, 3}
    assert readers.unreliable_frames_300vw(tree / "300VW", "401") == {2}


def test_300vw_video_frames(tmp_path):
    """Without extracted frames, frame k of vid.avi is decoded (1-based, like annot/%06d.pts)."""
    video = tmp_path / "300VW/001"
    (video / "annot").mkdir(parents=True)
    writer = cv2.VideoWriter(str(video / "vid.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 25, (32, 24))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write MJPG video")
    for k in range(1, 4):
        writer.write(np.full((24, 32, 3), 60 * k, np.uint8))
        formats.write_pts(video / "annot" / f"{k:06d}.pts", _face(k) / 2, style="300vw")
    writer.release()
    samples = readers.read_300vw(tmp_path, "train", require_all=False)
    assert [s.extras["frame"] for s in samples] == [1, 2, 3]
    assert samples[1].image_path == video / "vid.avi"
    frame = samples[1].image()
    assert frame.shape == (24, 32, 3) and abs(int(frame.mean()) - 120) <= 3
    problems, counts = check.check_tree(tmp_path)
    assert problems == [] and counts["videos"] == 1


def test_read_ears(tree, real_fixtures):
    train = readers.read_ears(tree, "train")
    assert [s.name for s in train] == ["train/train_0", "train/train_1"]
    assert train[0].landmarks.shape == (55, 2)
    np.testing.assert_allclose(train[0].box, ds.landmarks_box(train[0].landmarks))
    real = readers.read_ears(real_fixtures, "train")
    assert [s.name for s in real] == ["train/train_20", "train/train_5"]
    assert real[1].image().shape == (993, 891, 3)
    with pytest.raises(KeyError, match="test, train"):
        readers.read_ears(tree, "val")


def test_readers_on_real_fixtures(real_fixtures):
    lp = readers.read_300w_lp(real_fixtures, "all", flips=True, profiles=True)
    assert [s.name for s in lp] == ["AFW/AFW_134212_1_0", "AFW/AFW_134212_1_1",
                                    "AFW_Flip/AFW_134212_1_0", "AFW_Flip/AFW_134212_1_1"]
    assert lp[0].extras["model"] == "bfm" and lp[1].landmarks is None
    vw = readers.read_300vw(real_fixtures, "train", require_all=False)
    assert [s.name for s in vw] == ["001/000006", "001/000009"] and vw[0].image().shape == (720, 1280, 3)
    with pytest.raises(DatasetError, match="afw.*missing folder"):
        readers.read_300w(real_fixtures, "train")


OPTIONS = {"300vw": {"require_all": False}, "300w-lp": {"flips": True, "profiles": True}}


@pytest.mark.parametrize("name", sorted(ds.DATASETS))
def test_reader_contract(tree, name):
    """Every registered reader returns sorted, uniquely named Samples with sane boxes and loadable images."""
    assert set(ds.SPLITS) == set(ds.DATASETS)
    for split in ds.SPLITS[name]:
        try:
            samples = ds.load_dataset(name, tree, split, **OPTIONS.get(name, {}))
        except DatasetError as e:  # 300-VW splits with no video in the tiny tree
            assert name == "300vw" and "missing" in str(e)
            continue
        names = [s.name for s in samples]
        assert names == sorted(names) and len(set(names)) == len(names) and names, (name, split)
        for sample in samples:
            assert isinstance(sample, ds.Sample) and sample.extras["split"] == split
            assert sample.box.shape == (4,) and (sample.box[2:] >= sample.box[:2]).all()
            assert sample.landmarks is None or (sample.landmarks.ndim == 2 and sample.landmarks.shape[1] == 2)
        assert samples[0].image().shape == (40, 40, 3)


def test_load_dataset_names_valid_keys(tree):
    with pytest.raises(KeyError, match="300vw, 300w, 300w-lp, ears, helen"):
        ds.load_dataset("aflw", tree, "test")


def test_synthetic_layout_is_read_by_the_readers(tmp_path):
    """What the generator writes through synthetic_paths is exactly what the real-data readers read."""
    counts = {"train": 4, "indoor": 2, "outdoor": 1, "helen": 2}
    for split, n in counts.items():
        for index in range(n):
            paths = ds.synthetic_paths(tmp_path, split, index)
            points = _face(index)
            formats.write_image(paths["image"], np.full((40, 40, 3), 99, np.uint8))
            formats.write_pts(paths["pts"], points)
            if "box" in paths:
                formats.write_box_pts(paths["box"], ds.landmarks_box(points))
            formats.write_fitting(paths["fitting"], formats.Fitting(np.zeros(7), np.zeros(3), np.zeros(2), points,
                                                                    np.array([0, 0, 40, 40]), model="builtin"))
            if "lp_image" in paths:
                paths["lp_image"].write_bytes(paths["image"].read_bytes())
    train = ds.load_dataset("300w", tmp_path, "train")
    assert len(train) == 4 and {s.extras["subset"] for s in train} == {"afw", "helen/trainset", "lfpw/trainset"}
    test = ds.load_dataset("300w", tmp_path, "test")
    assert [s.name for s in test] == ["01_Indoor/indoor_001", "01_Indoor/indoor_002", "02_Outdoor/outdoor_001"]
    assert all(s.extras["box_source"] == "boxes/300w" and s.extras["fitting"].suffix == ".mat" for s in test)
    assert formats.read_fitting(test[0].extras["fitting"]).model == "builtin"
    helen = ds.load_dataset("helen", tmp_path, "test")
    assert len(helen) == 2 and all("fitting" in s.extras for s in helen)
    lp = ds.load_dataset("300w-lp", tmp_path, "train")
    assert [s.name for s in lp] == [f"SYNTH/SYNTH_train_{i:05d}_0" for i in range(4)]
    assert all(s.extras["model"] == "builtin" for s in lp)
    np.testing.assert_allclose(lp[2].landmarks, _face(2), atol=1e-9)
    assert check.check_tree(tmp_path)[0] == []
    with pytest.raises(KeyError, match="helen, indoor, outdoor, train"):
        ds.synthetic_paths(tmp_path, "common", 0)


# ------------------------------------------------------------------------------------------------------------
# `check`


def test_check_clean_tree_and_real_fixtures(tree, real_fixtures, capsys):
    assert check.main([str(tree)]) == 0
    assert "0 problem(s)" in capsys.readouterr().out
    problems, counts = check.check_tree(real_fixtures)
    assert problems == [] and counts["pts"] == 605 and counts["mat"] == 6


def test_check_finds_planted_problems(tree, capsys):
    bad = {
        tree / "300W/afw/134212_2.pts": "non-finite",
        tree / "300W/ibug/image_777.jpg": "image without annotation",
        tree / "300W/lfpw/testset/image_0002.png": "not a decodable image",
        tree / "300W/ibug/image_014.pts": "points far outside",
        tree / "ears/test/test_0.txt": "expected 55 points",
        tree / "300W_LP/SYNTH/face_00001_1.mat": "missing field",
        tree / "300W/helen/trainset/orphan.pts": "annotation without image",
    }
    text = (tree / "300W/afw/134212_2.pts").read_text()
    (tree / "300W/afw/134212_2.pts").write_text(text.replace("\n", "\nnan 1.0\n", 4).replace(": 68", ": 69"))
    _image(tree / "300W/ibug/image_777.jpg")
    (tree / "300W/lfpw/testset/image_0002.png").write_bytes(b"\x89PNG truncated")
    formats.write_pts(tree / "300W/ibug/image_014.pts", _face(0) + [500, 0])
    formats.write_pts(tree / "ears/test/test_0.txt", _face(0)[:50])
    scipy.io.savemat(tree / "300W_LP/SYNTH/face_00001_1.mat", {"Pose_Para": np.zeros((1, 7))})
    formats.write_pts(tree / "300W/helen/trainset/orphan.pts", _face(0))
    assert check.main([str(tree)]) == 1
    out = capsys.readouterr().out
    for path, reason in bad.items():
        assert any(str(path) in line and reason in line for line in out.splitlines()), (path, reason, out)
    assert f"{len(bad)} problem(s)" in out


def test_check_of_a_folder_without_data_is_not_clean(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not an annotation\n")       # a stray non-data file only
    (tmp_path / "sub").mkdir()
    assert check.main([str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert "nothing to check" in captured.err and str(tmp_path) in captured.err
    assert "0 problem" not in captured.out + captured.err


def test_check_command_line(tree):
    (tree / "ears/train/stray.png").write_bytes((tree / "ears/train/train_0.png").read_bytes())
    run = subprocess.run([sys.executable, "-m", "densereg.data.check", str(tree)], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stderr
    assert "stray.png: image without annotation" in run.stdout
