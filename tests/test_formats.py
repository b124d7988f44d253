"""Tests of densereg.data.formats: .pts/box/.mat/image formats, against real files and menpo."""

import cv2
import numpy as np
import pytest
import scipy.io

from densereg.data import formats
from densereg.data.formats import DatasetError
from densereg.geometry import mirror

# ------------------------------------------------------------------------------------------------------------
# .pts format

# Two points written in each style, byte for byte as the official files of that family look.
EXPECTED_BYTES = {
    "300w": b"version: 1\nn_points:  2\n{\n11.500000 21.250000\n1.000000 3.000000\n}",
    "300vw": b"version: 1\r\nn_points: 2\r\n{\r\n11.5 21.25\r\n1 3\r\n}\r\n",
    "ibug": b"version: 1\nn_points: 2\n{\n11.500 21.250\n1.000 3.000\n}\n",
}
POINTS_0BASED = np.array([[10.5, 20.25], [0.0, 2.0]])


@pytest.mark.parametrize("style", sorted(formats.PTS_STYLES))
def test_write_pts_exact_bytes_and_round_trip(tmp_path, style):
    path = tmp_path / "a.pts"
    formats.write_pts(path, POINTS_0BASED, style=style)
    assert path.read_bytes() == EXPECTED_BYTES[style]
    np.testing.assert_array_equal(formats.read_pts(path), POINTS_0BASED)
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary file of the atomic write is gone


def test_write_pts_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="bad.pts"):
        formats.write_pts(tmp_path / "bad.pts", [[1.0, np.nan]])
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        formats.write_pts(tmp_path / "bad.pts", np.zeros((3, 3)))
    with pytest.raises(KeyError, match="300vw"):
        formats.write_pts(tmp_path / "bad.pts", POINTS_0BASED, style="nope")
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
    np.testing.assert_array_equal(formats.read_pts(path), POINTS_0BASED)


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
        formats.read_pts(path, expected_n=expected_n)
    assert str(path) in str(info.value) and reason in str(info.value)
    assert info.value.path == path


def test_read_pts_missing_file_names_it(tmp_path):
    with pytest.raises(DatasetError, match="nowhere.pts"):
        formats.read_pts(tmp_path / "nowhere.pts")


def test_box_pts_round_trip(tmp_path):
    box = np.array([10.25, 20.5, 110.0, 140.75])
    formats.write_box_pts(tmp_path / "b.pts", box)
    corners = formats.read_pts(tmp_path / "b.pts", expected_n=4)
    np.testing.assert_allclose(corners, [[10.25, 20.5], [10.25, 140.75], [110.0, 140.75], [110.0, 20.5]])
    np.testing.assert_allclose(formats.read_box_pts(tmp_path / "b.pts"), box)
    with pytest.raises(DatasetError, match="expected 4 points"):
        formats.write_pts(tmp_path / "c.pts", POINTS_0BASED)
        formats.read_box_pts(tmp_path / "c.pts")


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
        points = formats.read_pts(real_fixtures / rel, expected_n=n)
        formats.write_pts(tmp_path / "out.pts", points, style=style)
        assert (tmp_path / "out.pts").read_bytes() == (real_fixtures / rel).read_bytes(), rel


def test_real_lfpw_pts_is_one_based_on_disk(real_fixtures):
    path = real_fixtures / "300W/lfpw/trainset/image_0001.pts"
    first_line = path.read_text().splitlines()[3]
    assert first_line == "115.167660 220.807529"
    np.testing.assert_allclose(formats.read_pts(path)[0], [114.16766, 219.807529])


def test_real_box_file(real_fixtures):
    # indoor_001.pts: corners (447.121, 83.349) TL ... (647.195, 283.423) BR, 1-based.
    box = formats.read_box_pts(real_fixtures / "300W/boxes/300w/indoor_001.pts")
    np.testing.assert_allclose(box, [446.121, 82.349, 646.195, 282.423])


def test_menpo_reads_our_pts_and_we_read_menpos(real_fixtures, tmp_path):
    """menpo (the authors' toolkit) is 0-based (y, x) after subtracting 1; we are 0-based (x, y)."""
    from benchmarks.baselines.menpo import import_menpo

    mio = import_menpo("io")
    shape = import_menpo("shape")
    points = formats.read_pts(real_fixtures / "300W/lfpw/trainset/image_0001.pts")
    formats.write_pts(tmp_path / "ours.pts", points)
    theirs = mio.import_landmark_file(tmp_path / "ours.pts")["PTS"].points
    np.testing.assert_array_equal(theirs[:, ::-1], points)
    # The other direction: menpo writes (y, x) + 1 with 3 decimals; we read it back to the same points.
    cloud = shape.PointCloud(np.round(points[:, ::-1], 3))
    mio.export_landmark_file(cloud, tmp_path / "menpo.pts", overwrite=True)
    np.testing.assert_allclose(formats.read_pts(tmp_path / "menpo.pts"), np.round(points, 3), atol=1e-9)
    # menpo's image importer attaches the same landmarks and decodes the same pixels.
    image = mio.import_image(real_fixtures / "300W/lfpw/trainset/image_0001.png")
    np.testing.assert_array_equal(image.landmarks["PTS"].points[:, ::-1], points)
    pixels = np.round(np.moveaxis(image.pixels, 0, -1) * 255).astype(np.uint8)
    np.testing.assert_array_equal(pixels, formats.read_image(real_fixtures / "300W/lfpw/trainset/image_0001.png"))


# ------------------------------------------------------------------------------------------------------------
# Images


def _rgb_pattern(h=6, w=5):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_read_image_modes(tmp_path):
    from PIL import Image

    rgb = _rgb_pattern()
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(formats.read_image(tmp_path / "rgb.png"), rgb)

    grey = rgb[:, :, 0]
    Image.fromarray(grey).save(tmp_path / "grey.png")
    np.testing.assert_array_equal(formats.read_image(tmp_path / "grey.png"), np.dstack([grey] * 3))

    palette = Image.fromarray(rgb).quantize(colors=16)
    palette.save(tmp_path / "palette.png")
    assert Image.open(tmp_path / "palette.png").mode == "P"
    np.testing.assert_array_equal(formats.read_image(tmp_path / "palette.png"), np.asarray(palette.convert("RGB")))

    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(formats.read_image(tmp_path / "rgba.png"), rgb)

    deep = rgb.astype(np.uint16) * 257  # 16-bit image whose 8-bit version is exactly rgb
    cv2.imwrite(str(tmp_path / "deep.png"), deep[:, :, ::-1])
    np.testing.assert_array_equal(formats.read_image(tmp_path / "deep.png"), rgb)

    palette.save(tmp_path / "anim.gif")
    np.testing.assert_array_equal(formats.read_image(tmp_path / "anim.gif"), np.asarray(palette.convert("RGB")))

    for name in ("rgb.png", "grey.png", "palette.png", "rgba.png", "deep.png", "anim.gif"):
        image = formats.read_image(tmp_path / name)
        assert image.dtype == np.uint8 and image.shape == (6, 5, 3), name


def test_write_image_round_trip(tmp_path):
    rgb = _rgb_pattern(12, 10)
    formats.write_image(tmp_path / "a.png", rgb)
    np.testing.assert_array_equal(formats.read_image(tmp_path / "a.png"), rgb)
    smooth = np.dstack([np.full((16, 16), v, np.uint8) for v in (200, 100, 30)])
    formats.write_image(tmp_path / "a.jpg", smooth)
    assert np.abs(formats.read_image(tmp_path / "a.jpg").astype(int) - smooth).max() <= 3  # R and B not swapped
    with pytest.raises(ValueError, match="b.png.*uint8"):
        formats.write_image(tmp_path / "b.png", rgb.astype(np.float32))


def test_read_image_errors_name_file(tmp_path):
    (tmp_path / "junk.png").write_bytes(b"this is not a png")
    with pytest.raises(DatasetError, match="junk.png.*not a decodable image"):
        formats.read_image(tmp_path / "junk.png")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(DatasetError, match="empty.jpg"):
        formats.read_image(tmp_path / "empty.jpg")
    with pytest.raises(DatasetError, match="absent.jpg.*cannot read"):
        formats.read_image(tmp_path / "absent.jpg")


# ------------------------------------------------------------------------------------------------------------
# 3DMM fittings


def test_real_300w_lp_fittings_and_quirks(real_fixtures):
    lp = real_fixtures / "300W_LP"
    k0, k1 = formats.read_fitting(lp / "AFW/AFW_134212_1_0.mat"), formats.read_fitting(lp / "AFW/AFW_134212_1_1.mat")
    flip = formats.read_fitting(lp / "AFW_Flip/AFW_134212_1_0.mat")
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
    assert formats.read_image(lp / "AFW_Flip/AFW_134212_1_0.jpg").shape == (450, 450, 3)
    semantic = mirror.flip_file_landmarks(flip.pt2d)
    np.testing.assert_allclose(semantic, mirror.mirror_landmarks(k0.pt2d, 450))
    assert semantic[36, 0] < semantic[45, 0] and semantic[0, 0] < semantic[16, 0]  # image-left parts on the left
    assert flip.pt2d[36, 0] > flip.pt2d[45, 0]  # ... which the raw order gets wrong


def test_flip_permutation():
    p = mirror.ibug_flip_permutation()
    assert sorted(p) == list(range(68))
    np.testing.assert_array_equal(p[p], np.arange(68))  # an involution
    pairs = {0: 16, 7: 9, 8: 8, 17: 26, 21: 22, 27: 27, 30: 30, 31: 35, 33: 33, 36: 45, 39: 42, 37: 44, 41: 46,
             48: 54, 51: 51, 57: 57, 60: 64, 62: 62, 66: 66, 61: 63}
    for a, b in pairs.items():
        assert p[a] == b and p[b] == a, (a, b)
    p[0] = 5  # a copy: the module's permutation is untouched
    assert mirror.ibug_flip_permutation()[0] == 16
    # Mirroring a symmetric face gives the face back.
    rng = np.random.default_rng(1)
    half = rng.uniform(0, 40, size=(68, 2))
    face = half.copy()
    perm = mirror.ibug_flip_permutation()
    for i in range(68):  # point perm[i] is point i mirrored about x = 49.5 (the centre of a 100-px image)
        if perm[i] > i:
            face[perm[i]] = [99 - face[i, 0], face[i, 1]]
        elif perm[i] == i:
            face[i, 0] = 49.5
    np.testing.assert_allclose(mirror.mirror_landmarks(face, 100), face)
    np.testing.assert_allclose(mirror.mirror_landmarks(mirror.mirror_landmarks(half, 100), 100), half)


def test_fitting_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    fitting = formats.Fitting(pose_para=np.array([0.1, -0.4, 0.05, 200.5, 210.25, -80.0, 0.0012]),
                              shape_para=rng.normal(size=40), exp_para=rng.normal(size=10),
                              pt2d=rng.uniform(0, 449, size=(68, 2)), roi=np.array([-20, 3, 400, 460]),
                              model="builtin")
    formats.write_fitting(tmp_path / "s_0.mat", fitting)
    raw = scipy.io.loadmat(tmp_path / "s_0.mat")
    assert raw["Pose_Para"].shape == (1, 7) and raw["Pose_Para"].dtype == np.float32
    assert raw["Shape_Para"].shape == (40, 1) and raw["Exp_Para"].shape == (10, 1)
    assert raw["pt2d"].shape == (2, 68) and raw["roi"].dtype == np.int16
    np.testing.assert_allclose(raw["pt2d"], fitting.pt2d.T + 1)  # 1-based on disk like the real files
    back = formats.read_fitting(tmp_path / "s_0.mat")
    assert back.model == "builtin"
    np.testing.assert_allclose(back.pose_para, fitting.pose_para.astype(np.float32))
    np.testing.assert_array_equal(back.shape_para, fitting.shape_para)
    np.testing.assert_array_equal(back.exp_para, fitting.exp_para)
    np.testing.assert_allclose(back.pt2d, fitting.pt2d, atol=1e-12)
    np.testing.assert_array_equal(back.roi, fitting.roi)
    fitting.roi = np.array([0.5, 1, 2, 3])  # non-integral ROIs are kept as floats
    formats.write_fitting(tmp_path / "s_1.mat", fitting)
    np.testing.assert_array_equal(formats.read_fitting(tmp_path / "s_1.mat").roi, [0.5, 1, 2, 3])


def test_read_fitting_errors(tmp_path):
    scipy.io.savemat(tmp_path / "partial.mat", {"Pose_Para": np.zeros((1, 7)), "pt2d": np.zeros((2, 68))})
    with pytest.raises(DatasetError, match="partial.mat.*Shape_Para, Exp_Para"):
        formats.read_fitting(tmp_path / "partial.mat")
    scipy.io.savemat(tmp_path / "short.mat", {"Pose_Para": np.zeros((1, 6)), "pt2d": np.zeros((2, 68)),
                                              "Shape_Para": np.zeros((3, 1)), "Exp_Para": np.zeros((3, 1))})
    with pytest.raises(DatasetError, match="short.mat.*Pose_Para has 6 values"):
        formats.read_fitting(tmp_path / "short.mat")
    (tmp_path / "garbage.mat").write_bytes(b"hello, not a MATLAB file")
    with pytest.raises(DatasetError, match="garbage.mat.*cannot read"):
        formats.read_fitting(tmp_path / "garbage.mat")
