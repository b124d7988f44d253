"""Tests of densereg.datasets: .pts/.mat/image formats (against real files and menpo), readers, `check`."""

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io

from densereg import datasets as ds
from densereg.datasets import DatasetError

REPO = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------------------------------------------------
# .pts format

# Two points written in each style, byte for byte as the official files of that family look.
EXPECTED_BYTES = {
    "300w": b"version: 1\nn_points:  2\n{\n11.500000 21.250000\n1.000000 3.000000\n}",
    "300vw": b"version: 1\r\nn_points: 2\r\n{\r\n11.5 21.25\r\n1 3\r\n}\r\n",
    "ibug": b"version: 1\nn_points: 2\n{\n11.500 21.250\n1.000 3.000\n}\n",
}
POINTS_0BASED = np.array([[10.5, 20.25], [0.0, 2.0]])


@pytest.mark.parametrize("style", sorted(ds.PTS_STYLES))
def test_write_pts_exact_bytes_and_round_trip(tmp_path, style):
    path = tmp_path / "a.pts"
    ds.write_pts(path, POINTS_0BASED, style=style)
    assert path.read_bytes() == EXPECTED_BYTES[style]
    np.testing.assert_array_equal(ds.read_pts(path), POINTS_0BASED)
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary file of the atomic write is gone


def test_write_pts_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="bad.pts"):
        ds.write_pts(tmp_path / "bad.pts", [[1.0, np.nan]])
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        ds.write_pts(tmp_path / "bad.pts", np.zeros((3, 3)))
    with pytest.raises(KeyError, match="300vw"):
        ds.write_pts(tmp_path / "bad.pts", POINTS_0BASED, style="nope")
    assert not (tmp_path / "bad.pts").exists()


@pytest.mark.parametrize("text", [
    "version: 1\nn_points:  2\n{\n11.5 21.25\n1 3\n}",  # 300-W: two spaces, no final newline
    "version: 1\r\nn_points: 2\r\n{\r\n11.5 21.25\r\n1 3\r\n}\r\n",  # 300-VW: CRLF
    "version: 1.0\nn_points: 2\n{\n11.500000   21.250000\n1.000 3.000\n}\n",  # version 1.0, runs of spaces
    "version: 1\n n_points:\t2 \n {\n\t11.5\t21.25 \n\n1 3\n}   \n\n",  # tabs, indents, blank lines
    "\ufeffversion: 1\nn_points: 2\n{\n11.5 21.25\n1 3\n}",  # UTF-8 byte-order mark
])
def test_read_pts_tolerates_variants(tmp_path, text):
    path = tmp_path / "v.pts"
    path.write_bytes(text.encode("utf-8"))
    np.testing.assert_array_equal(ds.read_pts(path), POINTS_0BASED)


@pytest.mark.parametrize("text, expected_n, reason", [
    ("11.5 21.25\n1 3\n", None, "missing '{'"),
    ("version: 1\nn_points: 2\n{\n11.5 21.25\n1 3\n", None, "missing closing '}'"),
    ("version: 1\nn_points: 3\n{\n11.5 21.25\n1 3\n}", None, "n_points 3 but 2 points"),
    ("version: 1\nn_points: 2\n{\n11.5 21.25\n1 3\n}", 68, "expected 68 points, found 2"),
    ("version: 1\nn_points: 2\n{\n11.5 nan\n1 3\n}", None, "non-finite"),
    ("version: 1\nn_points: 2\n{\n11.5 2l.25\n1 3\n}", None, "unparsable"),
    ("version: 1\nn_points: 2\n{\n11.5 21.25 7\n1 3\n}", None, "expected 'x y'"),
    ("version: 1\nn_points: two\n{\n11.5 21.25\n1 3\n}", None, "n_points"),
])
def test_read_pts_errors_name_file_and_problem(tmp_path, text, expected_n, reason):
    path = tmp_path / "broken_file.pts"
    path.write_text(text)
    with pytest.raises(DatasetError) as info:
        ds.read_pts(path, expected_n=expected_n)
    assert str(path) in str(info.value) and reason in str(info.value)
    assert info.value.path == path


def test_read_pts_missing_file_names_it(tmp_path):
    with pytest.raises(DatasetError, match="nowhere.pts"):
        ds.read_pts(tmp_path / "nowhere.pts")


def test_box_pts_round_trip(tmp_path):
    box = np.array([10.25, 20.5, 110.0, 140.75])
    ds.write_box_pts(tmp_path / "b.pts", box)
    corners = ds.read_pts(tmp_path / "b.pts", expected_n=4)
    np.testing.assert_allclose(corners, [[10.25, 20.5], [10.25, 140.75], [110.0, 140.75], [110.0, 20.5]])
    np.testing.assert_allclose(ds.read_box_pts(tmp_path / "b.pts"), box)
    with pytest.raises(DatasetError, match="expected 4 points"):
        ds.write_pts(tmp_path / "c.pts", POINTS_0BASED)
        ds.read_box_pts(tmp_path / "c.pts")


# ------------------------------------------------------------------------------------------------------------
# Real files: each family is read and written back byte for byte


def test_real_pts_files_round_trip_byte_for_byte(real_fixtures, tmp_path):
    cases = [("300W/lfpw/trainset/image_0001.pts", "300w", 68),
             ("300VW/001/annot/000006.pts", "300vw", 68), ("300VW/001/annot/000009.pts", "300vw", 68),
             ("ears/train/train_5.txt", "ibug", 55), ("ears/train/train_20.txt", "ibug", 55)]
    cases += [(str(p.relative_to(real_fixtures)), "ibug", 4)
              for p in sorted((real_fixtures / "300W/boxes/300w").glob("*.pts"))]
    assert len(cases) == 605
    for rel, style, n in cases:
        points = ds.read_pts(real_fixtures / rel, expected_n=n)
        ds.write_pts(tmp_path / "out.pts", points, style=style)
        assert (tmp_path / "out.pts").read_bytes() == (real_fixtures / rel).read_bytes(), rel


def test_real_lfpw_pts_is_one_based_on_disk(real_fixtures):
    path = real_fixtures / "300W/lfpw/trainset/image_0001.pts"
    first_line = path.read_text().splitlines()[3]
    assert first_line == "115.167660 220.807529"
    np.testing.assert_allclose(ds.read_pts(path)[0], [114.16766, 219.807529])


def test_real_box_file(real_fixtures):
    # indoor_001.pts: corners (447.121, 83.349) TL ... (647.195, 283.423) BR, 1-based.
    box = ds.read_box_pts(real_fixtures / "300W/boxes/300w/indoor_001.pts")
    np.testing.assert_allclose(box, [446.121, 82.349, 646.195, 282.423])


def test_menpo_reads_our_pts_and_we_read_menpos(real_fixtures, tmp_path):
    """menpo (the authors' toolkit) is 0-based (y, x) after subtracting 1; we are 0-based (x, y)."""
    from benchmarks.menpo_shim import import_menpo

    mio = import_menpo("io")
    shape = import_menpo("shape")
    points = ds.read_pts(real_fixtures / "300W/lfpw/trainset/image_0001.pts")
    ds.write_pts(tmp_path / "ours.pts", points)
    theirs = mio.import_landmark_file(tmp_path / "ours.pts")["PTS"].points
    np.testing.assert_array_equal(theirs[:, ::-1], points)
    # The other direction: menpo writes (y, x) + 1 with 3 decimals; we read it back to the same points.
    cloud = shape.PointCloud(np.round(points[:, ::-1], 3))
    mio.export_landmark_file(cloud, tmp_path / "menpo.pts", overwrite=True)
    np.testing.assert_allclose(ds.read_pts(tmp_path / "menpo.pts"), np.round(points, 3), atol=1e-9)
    # menpo's image importer attaches the same landmarks and decodes the same pixels.
    image = mio.import_image(real_fixtures / "300W/lfpw/trainset/image_0001.png")
    np.testing.assert_array_equal(image.landmarks["PTS"].points[:, ::-1], points)
    pixels = np.round(np.moveaxis(image.pixels, 0, -1) * 255).astype(np.uint8)
    np.testing.assert_array_equal(pixels, ds.read_image(real_fixtures / "300W/lfpw/trainset/image_0001.png"))


# ------------------------------------------------------------------------------------------------------------
# Images


def _rgb_pattern(h=6, w=5):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_read_image_modes(tmp_path):
    from PIL import Image

    rgb = _rgb_pattern()
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(ds.read_image(tmp_path / "rgb.png"), rgb)

    grey = rgb[:, :, 0]
    Image.fromarray(grey).save(tmp_path / "grey.png")
    np.testing.assert_array_equal(ds.read_image(tmp_path / "grey.png"), np.dstack([grey] * 3))

    palette = Image.fromarray(rgb).quantize(colors=16)
    palette.save(tmp_path / "palette.png")
    assert Image.open(tmp_path / "palette.png").mode == "P"
    np.testing.assert_array_equal(ds.read_image(tmp_path / "palette.png"), np.asarray(palette.convert("RGB")))

    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(ds.read_image(tmp_path / "rgba.png"), rgb)

    deep = rgb.astype(np.uint16) * 257  # 16-bit image whose 8-bit version is exactly rgb
    cv2.imwrite(str(tmp_path / "deep.png"), deep[:, :, ::-1])
    np.testing.assert_array_equal(ds.read_image(tmp_path / "deep.png"), rgb)

    palette.save(tmp_path / "anim.gif")
    np.testing.assert_array_equal(ds.read_image(tmp_path / "anim.gif"), np.asarray(palette.convert("RGB")))

    for name in ("rgb.png", "grey.png", "palette.png", "rgba.png", "deep.png", "anim.gif"):
        image = ds.read_image(tmp_path / name)
        assert image.dtype == np.uint8 and image.shape == (6, 5, 3), name


def test_write_image_round_trip(tmp_path):
    rgb = _rgb_pattern(12, 10)
    ds.write_image(tmp_path / "a.png", rgb)
    np.testing.assert_array_equal(ds.read_image(tmp_path / "a.png"), rgb)
    smooth = np.dstack([np.full((16, 16), v, np.uint8) for v in (200, 100, 30)])
    ds.write_image(tmp_path / "a.jpg", smooth)
    assert np.abs(ds.read_image(tmp_path / "a.jpg").astype(int) - smooth).max() <= 3  # R and B not swapped
    with pytest.raises(ValueError, match="b.png.*uint8"):
        ds.write_image(tmp_path / "b.png", rgb.astype(np.float32))


def test_read_image_errors_name_file(tmp_path):
    (tmp_path / "junk.png").write_bytes(b"this is not a png")
    with pytest.raises(DatasetError, match="junk.png.*not a decodable image"):
        ds.read_image(tmp_path / "junk.png")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(DatasetError, match="empty.jpg"):
        ds.read_image(tmp_path / "empty.jpg")
    with pytest.raises(DatasetError, match="absent.jpg.*cannot read"):
        ds.read_image(tmp_path / "absent.jpg")


# ------------------------------------------------------------------------------------------------------------
# 3DMM fittings


def test_real_300w_lp_fittings_and_quirks(real_fixtures):
    lp = real_fixtures / "300W_LP"
    k0, k1 = ds.read_fitting(lp / "AFW/AFW_134212_1_0.mat"), ds.read_fitting(lp / "AFW/AFW_134212_1_1.mat")
    flip = ds.read_fitting(lp / "AFW_Flip/AFW_134212_1_0.mat")
    assert k0.pose_para.shape == (7,) and k0.shape_para.shape == (199,) and k0.exp_para.shape == (29,)
    assert k0.pt2d.shape == (68, 2) and k0.model == "bfm"
    np.testing.assert_array_equal(k0.roi, [532, -100, 1120, 488])
    assert np.abs(k0.pose_para[:3]).max() < np.pi  # radians
    # Quirk: the re-rendered k=1 fit keeps k=0's pt2d although its pose differs.
    np.testing.assert_array_equal(k1.pt2d, k0.pt2d)
    assert not np.allclose(k1.pose_para, k0.pose_para)
    # Quirk: _Flip mirrors x as 451 - x (1-based, 450-px image) without re-ordering: 0-based x' = 449 - x.
    raw0 = scipy.io.loadmat(lp / "AFW/AFW_134212_1_0.mat")["pt2d"]
    raw_flip = scipy.io.loadmat(lp / "AFW_Flip/AFW_134212_1_0.mat")["pt2d"]
    np.testing.assert_allclose(raw_flip[0], 451 - raw0[0])
    np.testing.assert_allclose(flip.pt2d[:, 0], 449 - k0.pt2d[:, 0])
    np.testing.assert_array_equal(flip.pt2d[:, 1], k0.pt2d[:, 1])
    assert np.sign(flip.pose_para[1]) == -np.sign(k0.pose_para[1])  # yaw
    assert np.sign(flip.pose_para[2]) == -np.sign(k0.pose_para[2])  # roll
    # Re-ordered, the flipped file's landmarks are the mirrored originals in semantic order.
    assert ds.read_image(lp / "AFW_Flip/AFW_134212_1_0.jpg").shape == (450, 450, 3)
    semantic = ds.flip_file_landmarks(flip.pt2d)
    np.testing.assert_allclose(semantic, ds.mirror_landmarks(k0.pt2d, 450))
    assert semantic[36, 0] < semantic[45, 0] and semantic[0, 0] < semantic[16, 0]  # image-left parts on the left
    assert flip.pt2d[36, 0] > flip.pt2d[45, 0]  # ... which the raw order gets wrong


def test_flip_permutation():
    p = ds.ibug_flip_permutation()
    assert sorted(p) == list(range(68))
    np.testing.assert_array_equal(p[p], np.arange(68))  # an involution
    pairs = {0: 16, 7: 9, 8: 8, 17: 26, 21: 22, 27: 27, 30: 30, 31: 35, 33: 33, 36: 45, 39: 42, 37: 44, 41: 46,
             48: 54, 51: 51, 57: 57, 60: 64, 62: 62, 66: 66, 61: 63}
    for a, b in pairs.items():
        assert p[a] == b and p[b] == a, (a, b)
    p[0] = 5  # a copy: the module's permutation is untouched
    assert ds.ibug_flip_permutation()[0] == 16
    # Mirroring a symmetric face gives the face back.
    rng = np.random.default_rng(1)
    half = rng.uniform(0, 40, size=(68, 2))
    face = half.copy()
    perm = ds.ibug_flip_permutation()
    for i in range(68):  # point perm[i] is point i mirrored about x = 49.5 (the centre of a 100-px image)
        if perm[i] > i:
            face[perm[i]] = [99 - face[i, 0], face[i, 1]]
        elif perm[i] == i:
            face[i, 0] = 49.5
    np.testing.assert_allclose(ds.mirror_landmarks(face, 100), face)
    np.testing.assert_allclose(ds.mirror_landmarks(ds.mirror_landmarks(half, 100), 100), half)


def test_fitting_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    fitting = ds.Fitting(pose_para=np.array([0.1, -0.4, 0.05, 200.5, 210.25, -80.0, 0.0012]),
                         shape_para=rng.normal(size=40), exp_para=rng.normal(size=10),
                         pt2d=rng.uniform(0, 449, size=(68, 2)), roi=np.array([-20, 3, 400, 460]), model="builtin")
    ds.write_fitting(tmp_path / "s_0.mat", fitting)
    raw = scipy.io.loadmat(tmp_path / "s_0.mat")
    assert raw["Pose_Para"].shape == (1, 7) and raw["Pose_Para"].dtype == np.float32
    assert raw["Shape_Para"].shape == (40, 1) and raw["Exp_Para"].shape == (10, 1)
    assert raw["pt2d"].shape == (2, 68) and raw["roi"].dtype == np.int16
    np.testing.assert_allclose(raw["pt2d"], fitting.pt2d.T + 1)  # 1-based on disk like the real files
    back = ds.read_fitting(tmp_path / "s_0.mat")
    assert back.model == "builtin"
    np.testing.assert_allclose(back.pose_para, fitting.pose_para.astype(np.float32))
    np.testing.assert_array_equal(back.shape_para, fitting.shape_para)
    np.testing.assert_array_equal(back.exp_para, fitting.exp_para)
    np.testing.assert_allclose(back.pt2d, fitting.pt2d, atol=1e-12)
    np.testing.assert_array_equal(back.roi, fitting.roi)
    fitting.roi = np.array([0.5, 1, 2, 3])  # non-integral ROIs are kept as floats
    ds.write_fitting(tmp_path / "s_1.mat", fitting)
    np.testing.assert_array_equal(ds.read_fitting(tmp_path / "s_1.mat").roi, [0.5, 1, 2, 3])


def test_read_fitting_errors(tmp_path):
    scipy.io.savemat(tmp_path / "partial.mat", {"Pose_Para": np.zeros((1, 7)), "pt2d": np.zeros((2, 68))})
    with pytest.raises(DatasetError, match="partial.mat.*Shape_Para, Exp_Para"):
        ds.read_fitting(tmp_path / "partial.mat")
    scipy.io.savemat(tmp_path / "short.mat", {"Pose_Para": np.zeros((1, 6)), "pt2d": np.zeros((2, 68)),
                                              "Shape_Para": np.zeros((3, 1)), "Exp_Para": np.zeros((3, 1))})
    with pytest.raises(DatasetError, match="short.mat.*Pose_Para has 6 values"):
        ds.read_fitting(tmp_path / "short.mat")
    (tmp_path / "garbage.mat").write_bytes(b"hello, not a MATLAB file")
    with pytest.raises(DatasetError, match="garbage.mat.*cannot read"):
        ds.read_fitting(tmp_path / "garbage.mat")


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
    ds.write_pts(folder / f"{stem}{annotation_ext}", points)
    return points


def _fit(folder, stem, seed, flip=False):
    pts = _face(seed)
    _image(folder / f"{stem}.jpg", seed=seed)
    if flip:  # as in the real _Flip files: mirrored, not re-ordered
        pts = np.column_stack([39 - pts[:, 0], pts[:, 1]])
    ds.write_fitting(folder / f"{stem}.mat", ds.Fitting(np.zeros(7), np.zeros(3), np.zeros(2), pts,
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
        ds.write_box_pts(w / "boxes/300w" / f"indoor_00{i}.pts", [1, 2, 30 + i, 33])
    _pair(w / "300W/02_Outdoor", "outdoor_001", seed=11)
    ds.write_box_pts(w / "boxes/300w/outdoor_001.pts", [3, 4, 35, 36])
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
            ds.write_pts(vw / video / "annot" / f"{frame:06d}.pts", _face(frame), style="300vw")
    (vw / "unreliable.json").write_text(json.dumps({"401": [2]}))

    for split, n in (("train", 2), ("test", 1)):
        for i in range(n):
            _pair(root / "ears" / split, f"{split}_{i}", seed=i, n=55, annotation_ext=".txt")
    return root


def test_read_300w_splits(tree):
    assert [s.name for s in ds.read_300w(tree, "train")] == [
        "afw/134212_1", "afw/134212_2", "helen/trainset/100032540_1", "lfpw/trainset/image_0001"]
    assert len(ds.read_300w(tree, "common")) == 2
    assert [s.name for s in ds.read_300w(tree, "challenging")] == ["ibug/image_003_1", "ibug/image_014"]
    assert len(ds.read_300w(tree, "full")) == 4
    test = ds.read_300w(tree, "test")
    assert [s.name for s in test] == ["01_Indoor/indoor_001", "01_Indoor/indoor_002", "02_Outdoor/outdoor_001"]
    assert [s.name for s in ds.read_300w(tree, "indoor")] == ["01_Indoor/indoor_001", "01_Indoor/indoor_002"]
    np.testing.assert_allclose(test[1].box, [1, 2, 32, 33])  # from boxes/300w, not from the landmarks
    assert test[1].extras["subset"] == "01_Indoor" and test[1].extras["box_source"] == "boxes/300w"
    assert "fitting" not in test[1].extras  # real 300-W images have no fitting beside them
    np.testing.assert_allclose(test[1].landmarks, _face(10), atol=1e-6)
    train = ds.read_300w(tree, "train")[0]
    np.testing.assert_allclose(train.box, ds.landmarks_box(train.landmarks))
    assert train.extras["box_source"] == "landmarks"
    assert train.image().shape == (40, 40, 3)


def test_read_300w_errors(tree):
    (tree / "300W/ibug/image_099.jpg").write_bytes((tree / "300W/ibug/image_014.jpg").read_bytes())
    with pytest.raises(DatasetError, match="image_099.jpg.*image without annotation"):
        ds.read_300w(tree, "challenging")
    (tree / "300W/ibug/image_099.jpg").unlink()
    ds.write_pts(tree / "300W/ibug/image_014.pts", _face(0)[:66])
    with pytest.raises(DatasetError, match="image_014.pts.*expected 68 points, found 66"):
        ds.read_300w(tree, "challenging")
    (tree / "300W/boxes/300w/outdoor_001.pts").unlink()  # boxes for some images only: refuse to mix sources
    with pytest.raises(DatasetError, match="outdoor_001.pts.*box file missing"):
        ds.read_300w(tree, "outdoor")
    with pytest.raises(KeyError, match="challenging, common, full, indoor, outdoor, test, train"):
        ds.read_300w(tree, "val")
    with pytest.raises(DatasetError, match="missing folder"):
        ds.read_300w(tree / "nothing", "train")


def test_read_300w_lp(tree):
    train = ds.read_300w_lp(tree, "train")
    assert [s.name for s in train] == ["AFW/AFW_134212_1_0", "HELEN/HELEN_100032540_1_0",
                                       "LFPW/LFPW_image_train_0001_0", "SYNTH/face_00001_0"]
    sample = train[0]
    assert sample.extras["fitting"] == tree / "300W_LP/AFW/AFW_134212_1_0.mat"
    assert sample.extras["k"] == 0 and sample.extras["model"] == "builtin" and not sample.extras["flip"]
    np.testing.assert_allclose(sample.landmarks, _face(0), atol=1e-9)
    everything = ds.read_300w_lp(tree, "all", flips=True, profiles=True)
    assert len(everything) == 15
    profile = next(s for s in everything if s.name == "AFW/AFW_134212_1_1")
    assert profile.landmarks is None and profile.box.shape == (4,)  # pt2d is k=0's, not this image's
    flipped = next(s for s in everything if s.name == "AFW_Flip/AFW_134212_1_0")
    np.testing.assert_allclose(flipped.landmarks, ds.mirror_landmarks(_face(0), 40), atol=1e-9)
    assert flipped.landmarks[36, 0] < flipped.landmarks[45, 0]
    assert len(ds.read_300w_lp(tree, "all")) == 7  # no flips, no k >= 1 by default
    with pytest.raises(KeyError, match="all, train"):
        ds.read_300w_lp(tree, "test")


def test_read_helen(tree):
    (sample,) = ds.read_helen(tree, "test")
    assert sample.name == "helen/testset/296814969_3" and sample.landmarks.shape == (68, 2)
    assert [p.name for p in sample.extras["parsing_labels"]] == ["296814969_3_lbl00.png", "296814969_3_lbl01.png"]
    assert "parsing_labels" not in ds.read_helen(tree, "train")[0].extras


def test_read_300vw(tree):
    with pytest.raises(DatasetError, match="of the 50 train videos are missing"):
        ds.read_300vw(tree, "train")
    train = ds.read_300vw(tree, "train", require_all=False)
    assert [s.name for s in train] == ["001/000001", "001/000002", "001/000003"]
    assert train[1].extras["frame"] == 2 and train[1].image_path.name == "000002.jpg"
    np.testing.assert_allclose(train[1].landmarks, _face(2), atol=1e-3)
    cat1 = ds.read_300vw(tree, "cat1", require_all=False)
    assert [s.extras["unreliable"] for s in cat1] == [False, True, False]
    assert cat1[0].extras["category"] == "cat1"
    kept = ds.read_300vw(tree, "test", require_all=False, drop_unreliable=True)
    assert [s.name for s in kept] == ["401/000001", "401/000003"]
    (tree / "300VW/401/imgs/000003.jpg").unlink()
    with pytest.raises(DatasetError, match="000003.pts.*no frame image"):
        ds.read_300vw(tree, "cat1", require_all=False)


def test_300vw_unreliable_from_extra_mat(tree):
    (tree / "300VW/extra").mkdir()
    scipy.io.savemat(tree / "300VW/extra/001.mat", {"error": np.array([[1, 3]])})
    assert ds.unreliable_frames_300vw(tree / "300VW", "001") == {1, 3}
    assert ds.unreliable_frames_300vw(tree / "300VW", "401") == {2}


def test_300vw_video_frames(tmp_path):
    """Without extracted frames, frame k of vid.avi is decoded (1-based, like annot/%06d.pts)."""
    video = tmp_path / "300VW/001"
    (video / "annot").mkdir(parents=True)
    writer = cv2.VideoWriter(str(video / "vid.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 25, (32, 24))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write MJPG video")
    for k in range(1, 4):
        writer.write(np.full((24, 32, 3), 60 * k, np.uint8))
        ds.write_pts(video / "annot" / f"{k:06d}.pts", _face(k) / 2, style="300vw")
    writer.release()
    samples = ds.read_300vw(tmp_path, "train", require_all=False)
    assert [s.extras["frame"] for s in samples] == [1, 2, 3]
    assert samples[1].image_path == video / "vid.avi"
    frame = samples[1].image()
    assert frame.shape == (24, 32, 3) and abs(int(frame.mean()) - 120) <= 3
    problems, counts = ds.check_tree(tmp_path)
    assert problems == [] and counts["videos"] == 1


def test_read_ears(tree, real_fixtures):
    train = ds.read_ears(tree, "train")
    assert [s.name for s in train] == ["train/train_0", "train/train_1"]
    assert train[0].landmarks.shape == (55, 2)
    np.testing.assert_allclose(train[0].box, ds.landmarks_box(train[0].landmarks))
    real = ds.read_ears(real_fixtures, "train")
    assert [s.name for s in real] == ["train/train_20", "train/train_5"]
    assert real[1].image().shape == (993, 891, 3)
    with pytest.raises(KeyError, match="test, train"):
        ds.read_ears(tree, "val")


def test_readers_on_real_fixtures(real_fixtures):
    lp = ds.read_300w_lp(real_fixtures, "all", flips=True, profiles=True)
    assert [s.name for s in lp] == ["AFW/AFW_134212_1_0", "AFW/AFW_134212_1_1",
                                    "AFW_Flip/AFW_134212_1_0", "AFW_Flip/AFW_134212_1_1"]
    assert lp[0].extras["model"] == "bfm" and lp[1].landmarks is None
    vw = ds.read_300vw(real_fixtures, "train", require_all=False)
    assert [s.name for s in vw] == ["001/000006", "001/000009"] and vw[0].image().shape == (720, 1280, 3)
    with pytest.raises(DatasetError, match="afw.*missing folder"):
        ds.read_300w(real_fixtures, "train")


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
            ds.write_image(paths["image"], np.full((40, 40, 3), 99, np.uint8))
            ds.write_pts(paths["pts"], points)
            if "box" in paths:
                ds.write_box_pts(paths["box"], ds.landmarks_box(points))
            ds.write_fitting(paths["fitting"], ds.Fitting(np.zeros(7), np.zeros(3), np.zeros(2), points,
                                                          np.array([0, 0, 40, 40]), model="builtin"))
            if "lp_image" in paths:
                paths["lp_image"].write_bytes(paths["image"].read_bytes())
    train = ds.load_dataset("300w", tmp_path, "train")
    assert len(train) == 4 and {s.extras["subset"] for s in train} == {"afw", "helen/trainset", "lfpw/trainset"}
    test = ds.load_dataset("300w", tmp_path, "test")
    assert [s.name for s in test] == ["01_Indoor/indoor_001", "01_Indoor/indoor_002", "02_Outdoor/outdoor_001"]
    assert all(s.extras["box_source"] == "boxes/300w" and s.extras["fitting"].suffix == ".mat" for s in test)
    assert ds.read_fitting(test[0].extras["fitting"]).model == "builtin"
    helen = ds.load_dataset("helen", tmp_path, "test")
    assert len(helen) == 2 and all("fitting" in s.extras for s in helen)
    lp = ds.load_dataset("300w-lp", tmp_path, "train")
    assert [s.name for s in lp] == [f"SYNTH/SYNTH_train_{i:05d}_0" for i in range(4)]
    assert all(s.extras["model"] == "builtin" for s in lp)
    np.testing.assert_allclose(lp[2].landmarks, _face(2), atol=1e-9)
    assert ds.check_tree(tmp_path)[0] == []
    with pytest.raises(KeyError, match="helen, indoor, outdoor, train"):
        ds.synthetic_paths(tmp_path, "common", 0)


# ------------------------------------------------------------------------------------------------------------
# `check`


def test_check_clean_tree_and_real_fixtures(tree, real_fixtures, capsys):
    assert ds.main(["check", str(tree)]) == 0
    assert "0 problem(s)" in capsys.readouterr().out
    problems, counts = ds.check_tree(real_fixtures)
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
    ds.write_pts(tree / "300W/ibug/image_014.pts", _face(0) + [500, 0])
    ds.write_pts(tree / "ears/test/test_0.txt", _face(0)[:50])
    scipy.io.savemat(tree / "300W_LP/SYNTH/face_00001_1.mat", {"Pose_Para": np.zeros((1, 7))})
    ds.write_pts(tree / "300W/helen/trainset/orphan.pts", _face(0))
    assert ds.main(["check", str(tree)]) == 1
    out = capsys.readouterr().out
    for path, reason in bad.items():
        assert any(str(path) in line and reason in line for line in out.splitlines()), (path, reason, out)
    assert f"{len(bad)} problem(s)" in out


def test_check_command_line(tree):
    (tree / "ears/train/stray.png").write_bytes((tree / "ears/train/train_0.png").read_bytes())
    run = subprocess.run([sys.executable, "-m", "densereg.datasets", "check", str(tree)], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stderr
    assert "stray.png: image without annotation" in run.stdout
