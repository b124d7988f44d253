"""Tests of the templates: densereg.geometry.template (UV/part machinery, registry), densereg.geometry.face_model (the built-in
face) and densereg.geometry.bfm (the BFM loader)."""

import time

import numpy as np
import pytest
from scipy import io as sio

from densereg.geometry import template as tp
from densereg.geometry.bfm import load_bfm
from densereg.geometry.template import PARTS, Template
from densereg.geometry.templates import builtin_face, get_template, template_for


@pytest.fixture(scope="module")
def face():
    return builtin_face()


def _normals(vertices, triangles):
    n = np.cross(vertices[triangles[:, 1]] - vertices[triangles[:, 0]],
                 vertices[triangles[:, 2]] - vertices[triangles[:, 0]])
    return n / (np.linalg.norm(n, axis=1, keepdims=True) + 1e-15)


def _dist(points, a, b):
    return float(np.linalg.norm(points[a] - points[b]))


# ------------------------------------------------------------------------------------------- built-in face

def test_builtin_shapes_and_dtypes(face):
    v, t = face.vertices, face.triangles
    assert len(v) >= 5000 and len(t) >= 10000
    assert v.dtype == np.float64 and v.shape[1] == 3
    assert t.dtype == np.int32 and t.shape[1] == 3 and t.min() >= 0 and t.max() < len(v)
    assert face.uv.shape == (len(v), 2) and face.uv.dtype == np.float64
    assert face.landmarks.shape == (68,) and face.landmarks.dtype == np.int64
    assert face.vertex_parts.shape == (len(v),) and face.vertex_parts.dtype == np.uint8
    assert face.id_basis.shape[0] >= 10 and face.id_basis.shape[1:] == v.shape
    assert face.exp_basis.shape == (6, len(v), 3)
    assert face.exp_names == ("mouth_open", "smile", "pout", "brow_raise", "frown", "eye_closure")
    assert len(face.id_names) == face.id_basis.shape[0]
    assert np.all(np.isin(np.arange(len(v)), t)), "every vertex belongs to a triangle"


def test_builtin_is_cached_and_read_only(face):
    assert builtin_face() is face
    with pytest.raises(ValueError):
        face.vertices[0, 0] = 1.0


def test_builtin_builds_fast():
    start = time.perf_counter()
    builtin_face.__wrapped__()
    assert time.perf_counter() - start < 4.0      # ~0.8 s measured; generous for a loaded 2-core machine


def test_units_and_centre(face):
    lm = face.vertices[face.landmarks]
    assert _dist(lm, 36, 45) == pytest.approx(1.0)
    centre = 0.5 * (face.vertices.min(axis=0) + face.vertices.max(axis=0))
    assert np.all(np.abs(centre) < 0.05)
    assert np.allclose(face.vertices[:, 0].min(), -face.vertices[:, 0].max())   # left-right symmetric


def test_uv_is_the_cylindrical_unwrapping(face):
    u, v = face.uv[:, 0], face.uv[:, 1]
    assert u.min() == pytest.approx(tp.UV_MARGIN) and u.max() == pytest.approx(1 - tp.UV_MARGIN)
    assert v.min() == pytest.approx(tp.UV_MARGIN) and v.max() == pytest.approx(1 - tp.UV_MARGIN)
    # v is an exactly linear, decreasing function of height.
    slope, intercept = np.polyfit(face.vertices[:, 1], v, 1)
    assert slope < 0 and np.allclose(slope * face.vertices[:, 1] + intercept, v, atol=1e-9)
    # u grows with the angle around some vertical axis behind the face: for the front (z above the
    # landmark-mean), u orders vertices of one height exactly as x does.
    row = np.abs(face.vertices[:, 1] - face.vertices[face.landmarks[30], 1]) < 1e-9
    order = np.argsort(face.vertices[row, 0])
    assert np.all(np.diff(u[row][order]) > 0)


def test_triangles_valid_and_consistently_oriented(face):
    t = face.triangles
    assert np.all((t[:, 0] != t[:, 1]) & (t[:, 1] != t[:, 2]) & (t[:, 0] != t[:, 2]))
    edges = np.concatenate([t[:, [0, 1]], t[:, [1, 2]], t[:, [2, 0]]])
    _, counts = np.unique(edges, axis=0, return_counts=True)
    assert counts.max() == 1, "a directed edge used twice means neighbours disagree on orientation"
    n = _normals(face.vertices, t)
    centre = face.vertices[t].mean(axis=1)
    front = (np.abs(centre[:, 0]) < 0.5) & (np.abs(centre[:, 1]) < 0.9)
    assert np.mean(n[front, 2] > 0) > 0.9
    # In UV the mesh does not fold: all triangles wind the same way.
    a = face.uv[t]
    e1, e2 = a[:, 1] - a[:, 0], a[:, 2] - a[:, 0]
    signed = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    assert np.mean(signed < 0) > 0.999 or np.mean(signed > 0) > 0.999


def test_landmarks_semantically_placed(face):
    p = face.vertices[face.landmarks]
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    assert x[36] < x[39] < x[42] < x[45], "eye corners run left to right"
    assert min(y[36], y[39], y[42], y[45]) > y[30], "eye corners above the nose tip"
    centre = [27, 28, 29, 30, 31, 32, 33, 34, 35] + list(range(48, 68))
    assert z[30] == z[centre].max(), "the nose tip protrudes most"
    assert y[8] == y.min(), "the chin is the lowest landmark"
    assert x[48] < x[54] and x[60] < x[64]
    assert y[51] > y[62] >= y[66] > y[57], "outer-upper, inner-upper, inner-lower, outer-lower lips"
    assert np.all(np.diff(x[:9]) > 0) and np.all(np.diff(x[8:17]) > 0), "jaw from image-left to right"
    assert x[0] < x[36] and x[16] > x[45]
    assert np.all(y[17:27].min() > y[36:48].max()), "brows above the eyes"
    assert x[17] < x[21] < x[22] < x[26]
    assert np.all(np.diff(y[27:31]) < 0), "nose bridge runs down to the tip"
    assert y[62] < y[33] < y[30]
    assert y[37] > y[41] and y[38] > y[40] and y[43] > y[47] and y[44] > y[46]
    assert np.allclose(x[:17], -x[16::-1], atol=1e-9), "symmetric jaw"


def test_landmark_uv_order(face):
    luv = face.landmark_uv
    assert np.array_equal(luv, face.uv[face.landmarks])
    assert luv[36, 0] < luv[39, 0] < luv[42, 0] < luv[45, 0]
    assert luv[19, 1] < luv[30, 1] < luv[8, 1]
    assert luv[48, 0] < luv[51, 0] < luv[54, 0]
    assert luv[0, 0] < luv[8, 0] < luv[16, 0]


def test_parts_cover_their_features(face):
    counts = np.bincount(face.vertex_parts, minlength=len(PARTS))
    image = face.part_image(256)
    assert image.shape == (256, 256) and image.dtype == np.uint8
    pixels = np.bincount(image.ravel(), minlength=len(PARTS))
    for k, name in enumerate(PARTS):
        assert counts[k] > 0, f"no vertex labelled {name}"
        assert pixels[k] > 0, f"no part_image pixel labelled {name}"
    luv = face.landmark_uv
    at = face.part_at(*luv.T)
    assert at[30] == PARTS.index("nose")
    eye_centres = np.array([luv[36:42].mean(axis=0), luv[42:48].mean(axis=0)])
    assert list(face.part_at(*eye_centres.T)) == [PARTS.index("left_eye"), PARTS.index("right_eye")]
    brow_inside = np.array([luv[19] + [0, 0.005], luv[24] + [0, 0.005]])
    assert list(face.part_at(*brow_inside.T)) == [PARTS.index("left_eyebrow"), PARTS.index("right_eyebrow")]
    lips = np.array([(luv[51] + luv[62]) / 2, (luv[57] + luv[66]) / 2])
    assert list(face.part_at(*lips.T)) == [PARTS.index("upper_lip"), PARTS.index("lower_lip")]
    assert face.part_at(0.5, 0.01) == 0 and at[0] == 0        # above the forehead; the jaw contour
    # Image-left parts lie left of their image-right twins.
    cols = np.arange(256)[None, :].repeat(256, 0)
    for left, right in (("left_eye", "right_eye"), ("left_eyebrow", "right_eyebrow")):
        assert cols[image == PARTS.index(left)].mean() < cols[image == PARTS.index(right)].mean()
    # The two copies of the mouth line (same UV) carry different lips.
    upper, lower = face.landmarks[62], face.landmarks[66]
    assert face.vertex_parts[upper] == PARTS.index("upper_lip")
    assert face.vertex_parts[lower] == PARTS.index("lower_lip")


def test_part_at_indexes_the_part_image(face):
    size = 64
    image = face.part_image(size)
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, size, 200), rng.integers(0, size, 200)
    got = face.part_at(cols / (size - 1), rows / (size - 1), size=size)
    assert np.array_equal(got, image[rows, cols])
    nan = face.part_at(np.array([np.nan, 0.5]), np.array([0.5, np.nan]))
    assert nan.tolist() == [0, 0]
    grid = face.part_at(np.full((3, 4), 0.5), np.full((3, 4), 0.5))
    assert grid.shape == (3, 4) and grid.dtype == np.uint8


def test_instance_zero_is_mean_and_rejects_bad_coefficients(face):
    assert np.array_equal(face.instance(), face.vertices)
    zeros = face.instance(np.zeros(face.id_basis.shape[0]), np.zeros(6))
    assert np.array_equal(zeros, face.vertices)
    assert np.allclose(face.instance(None, {"smile": 0.5}), face.instance(None, [0, 0.5, 0, 0, 0, 0]))
    with pytest.raises(ValueError, match="identity modes"):
        face.instance(np.zeros(face.id_basis.shape[0] + 1))
    with pytest.raises(KeyError, match="mouth_open"):
        face.instance(None, {"grin": 1.0})


def test_identity_modes_are_plausible_and_keep_the_mesh_unfolded(face):
    rest = _normals(face.vertices, face.triangles)
    for k, name in enumerate(face.id_names):
        field = face.id_basis[k]
        largest = np.linalg.norm(field, axis=1).max()
        assert 0.01 < largest < 0.2, f"{name}: one s.d. moves some vertex by {largest:.3f}"
        for c in (-2.5, 2.5):
            coef = np.zeros(len(face.id_names))
            coef[k] = c
            flipped = np.sum(np.einsum("ij,ij->i", rest, _normals(face.instance(coef), face.triangles)) < 0)
            assert flipped == 0, f"{name}={c} folds {flipped} triangles"
    rng = np.random.default_rng(1)
    for _ in range(5):
        verts = face.instance(np.clip(rng.normal(0, 1, len(face.id_names)), -2.5, 2.5), rng.uniform(0, 1, 6))
        flipped = np.sum(np.einsum("ij,ij->i", rest, _normals(verts, face.triangles)) < 0)
        assert flipped <= 0.001 * len(face.triangles)


def test_expressions_move_the_expected_landmarks(face):
    rest = face.vertices[face.landmarks]

    def pose(**coef):
        return face.instance(None, coef)[face.landmarks]

    assert _dist(rest, 62, 66) < 1e-9, "the mouth is closed at rest"
    opened = pose(mouth_open=1.0)
    assert _dist(opened, 62, 66) > 0.15 and opened[66, 1] < rest[66, 1]
    assert opened[8, 1] < rest[8, 1] - 0.1, "the jaw drops"
    assert np.allclose(opened[17:48], rest[17:48], atol=1e-3), "opening the mouth leaves eyes and brows alone"
    closed = pose(eye_closure=1.0)
    for a, b in ((37, 41), (38, 40), (43, 47), (44, 46)):
        assert _dist(closed, a, b) < 0.35 * _dist(rest, a, b)
    assert np.allclose(closed[48:68], rest[48:68])
    smile = pose(smile=1.0)
    assert smile[48, 1] > rest[48, 1] + 0.03 and smile[54, 1] > rest[54, 1] + 0.03
    assert _dist(smile, 48, 54) > _dist(rest, 48, 54)
    pout = pose(pout=1.0)
    assert pout[51, 2] > rest[51, 2] + 0.03 and _dist(pout, 48, 54) < _dist(rest, 48, 54)
    raised = pose(brow_raise=1.0)
    assert raised[19, 1] > rest[19, 1] + 0.03 and raised[24, 1] > rest[24, 1] + 0.03
    frown = pose(frown=1.0)
    assert _dist(frown, 21, 22) < _dist(rest, 21, 22) and frown[21, 1] < rest[21, 1]
    # Opening the mouth in full separates the lip rows without folding a triangle.
    normals = _normals(face.instance(None, {"mouth_open": 1.0}), face.triangles)
    assert np.all(np.einsum("ij,ij->i", normals, _normals(face.vertices, face.triangles)) > 0)


# ------------------------------------------------------------------------------------- shared UV helpers

def test_rasterize_uv_labels_nearest_vertex():
    uv = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    tris = np.array([[0, 1, 2], [1, 3, 2]])
    image = tp.rasterize_uv_labels(uv, tris, np.array([1, 2, 3, 4]), 11)
    assert image[0, 0] == 1 and image[0, 10] == 2 and image[10, 0] == 3 and image[10, 10] == 4
    assert np.all(image > 0)
    half = tp.rasterize_uv_labels(uv[:3], tris[:1], np.array([5, 5, 5]), 11)
    assert half[0, 0] == 5 and half[10, 10] == 0


def test_parts_from_landmarks_on_builtin_landmarks(face):
    polys = tp.part_polygons(face.landmark_uv)
    assert set(polys) == set(PARTS[1:])
    labels = tp.parts_from_landmarks(face.uv, face.landmark_uv)
    assert np.array_equal(labels[face.vertex_parts == 0], np.zeros(np.sum(face.vertex_parts == 0)))


def test_template_validation_names_the_problem(face):
    fields = dict(name="bad", vertices=face.vertices, triangles=face.triangles, uv=face.uv,
                  landmarks=face.landmarks, vertex_parts=face.vertex_parts, id_basis=face.id_basis,
                  exp_basis=face.exp_basis, exp_names=face.exp_names)
    with pytest.raises(ValueError, match="uv"):
        Template(**{**fields, "uv": face.uv * 2})
    with pytest.raises(ValueError, match="landmarks"):
        Template(**{**fields, "landmarks": face.landmarks[:10]})
    with pytest.raises(ValueError, match="exp_names"):
        Template(**{**fields, "exp_names": ("a",)})
    with pytest.raises(ValueError, match="triangles"):
        Template(**{**fields, "triangles": face.triangles + len(face.vertices)})


# ----------------------------------------------------------------------------------------------- registry

def test_registry_lookup(face, tmp_path):
    assert get_template("builtin") is face
    with pytest.raises(KeyError, match="builtin"):
        get_template("no-such-template")
    _fake_bfm_npy(tmp_path)
    assert get_template(tmp_path).name == "bfm"


def test_template_for_a_fitting_model(face, tmp_path, monkeypatch):
    assert template_for("builtin") is face
    with pytest.raises(ValueError, match="unknown fitting model 'nope'"):
        template_for("nope")
    monkeypatch.delenv("DENSEREG_BFM", raising=False)
    monkeypatch.setenv("DENSEREG_DATA", str(tmp_path))          # no BFM folder under it
    with pytest.raises(FileNotFoundError, match="DENSEREG_BFM"):
        template_for("bfm")
    (tmp_path / "BFM").mkdir()
    _fake_bfm_npy(tmp_path / "BFM")
    assert template_for("bfm").name == "bfm"


# ------------------------------------------------------------------------------------------------ the BFM

NATIVE = 86000.0      # the fake BFM is the built-in face in BFM-like units


def _fake_geometry():
    """The built-in face written as a 3DDFA BFM would be: large units, inward winding, v growing up."""
    f = builtin_face()
    verts = f.vertices * NATIVE + [0.0, 0.0, 50000.0]
    tri_1based = (f.triangles[:, [0, 2, 1]] + 1).astype(np.uint16)
    uv_up = f.uv * [1.0, -1.0] + [0.0, 1.0]
    return f, verts, tri_1based, uv_up


def _fake_bfm_npy(root, n_id=3, n_exp=2, with_uv=True):
    """3DDFA ``train.configs`` layout: flat npy vectors, 204 keypoints, tri.mat 3×T, BFM_UV.mat."""
    f, verts, tri, uv_up = _fake_geometry()
    n = len(verts)
    rng = np.random.default_rng(0)
    exp_mean = rng.normal(0, 10.0, (n, 3))
    np.save(root / "u_shp.npy", (verts - exp_mean).reshape(-1, 1).astype(np.float32))
    np.save(root / "u_exp.npy", exp_mean.reshape(-1, 1).astype(np.float32))
    w = rng.normal(0, 1.0, (3 * n, n_id)).astype(np.float32)
    w_exp = rng.normal(0, 1.0, (3 * n, n_exp)).astype(np.float32)
    np.save(root / "w_shp.npy", w)
    np.save(root / "w_exp.npy", w_exp)
    sio.savemat(root / "tri.mat", {"tri": tri.T})
    np.save(root / "keypoints_sim.npy", (3 * f.landmarks[:, None] + np.arange(3)).ravel().astype(np.int64))
    if with_uv:
        sio.savemat(root / "BFM_UV.mat", {"UV": uv_up})
    return f, w, w_exp


def test_load_bfm_npy_layout(tmp_path):
    f, w, w_exp = _fake_bfm_npy(tmp_path)
    bfm = load_bfm(tmp_path)
    assert bfm.name == "bfm" and len(bfm.vertices) == len(f.vertices)
    assert np.array_equal(bfm.landmarks, f.landmarks)
    lm = bfm.vertices[bfm.landmarks]
    assert _dist(lm, 36, 45) == pytest.approx(1.0, rel=1e-5)
    assert bfm.scale == pytest.approx(1 / NATIVE, rel=1e-4)
    # Mean = u_shp + u_exp, rescaled; the same shape as the source up to the offset.
    assert np.allclose(bfm.vertices - bfm.vertices.mean(0), f.vertices - f.vertices.mean(0), atol=1e-5)
    # Triangles re-wound outwards, v flipped back to growing downwards.
    assert np.array_equal(bfm.triangles, f.triangles)
    assert np.allclose(bfm.uv, f.uv)
    assert bfm.landmark_uv[19, 1] < bfm.landmark_uv[30, 1] < bfm.landmark_uv[8, 1]
    # Bases keep the native coefficient meaning: instance(c) / scale is the native shape.
    c_id, c_exp = np.array([0.5, -1.0, 2.0]), np.array([1.5, 0.25])
    native = (np.load(tmp_path / "u_shp.npy") + np.load(tmp_path / "u_exp.npy")).ravel().astype(np.float64)
    native = native + w.astype(np.float64) @ c_id + w_exp.astype(np.float64) @ c_exp
    assert np.allclose(bfm.instance(c_id, c_exp) / bfm.scale, native.reshape(-1, 3), atol=1e-2)
    assert bfm.id_basis.shape == (3, len(f.vertices), 3) and len(bfm.exp_names) == 2
    assert np.all(np.bincount(bfm.vertex_parts, minlength=len(PARTS)) > 0)


def test_load_bfm_mat_layout_matches_npy_layout(tmp_path):
    npy_dir, mat_dir = tmp_path / "npy", tmp_path / "mat"
    npy_dir.mkdir()
    mat_dir.mkdir()
    _fake_bfm_npy(npy_dir)
    f, verts, tri, uv_up = _fake_geometry()
    u_shp = np.load(npy_dir / "u_shp.npy")
    sio.savemat(mat_dir / "Model_Shape.mat", {
        "mu_shape": u_shp, "w": np.load(npy_dir / "w_shp.npy"), "tri": tri.astype(np.float64),   # T×3 here
        "keypoints": (f.landmarks + 1)[None, :].astype(np.float64)})                          # 1-based ids
    sio.savemat(mat_dir / "Model_Expression.mat", {"mu_exp": np.load(npy_dir / "u_exp.npy"),
                                                   "w_exp": np.load(npy_dir / "w_exp.npy")})
    sio.savemat(mat_dir / "BFM_UV.mat", {"UV": uv_up})
    a, b = load_bfm(npy_dir), load_bfm(mat_dir)
    assert np.array_equal(a.landmarks, b.landmarks) and np.array_equal(a.triangles, b.triangles)
    assert np.allclose(a.vertices, b.vertices) and np.allclose(a.uv, b.uv)
    assert np.allclose(a.exp_basis, b.exp_basis) and np.allclose(a.id_basis, b.id_basis)


def test_load_bfm_errors_name_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_bfm(tmp_path / "absent")
    _fake_bfm_npy(tmp_path, with_uv=False)
    with pytest.raises(FileNotFoundError, match="BFM_UV.mat"):
        load_bfm(tmp_path)
    cyl = load_bfm(tmp_path, uv="cylindrical")          # the documented alternative
    assert cyl.landmark_uv[36, 0] < cyl.landmark_uv[45, 0]
    assert cyl.landmark_uv[19, 1] < cyl.landmark_uv[30, 1] < cyl.landmark_uv[8, 1]
    (tmp_path / "tri.mat").unlink()
    with pytest.raises(FileNotFoundError, match="tri"):
        load_bfm(tmp_path, uv="cylindrical")
    (tmp_path / "u_shp.npy").unlink()
    with pytest.raises(FileNotFoundError, match="u_shp.npy"):
        load_bfm(tmp_path)
    sio.savemat(tmp_path / "BFM_UV.mat", {"UV": np.zeros((5, 2))})
    np.save(tmp_path / "u_shp.npy", np.zeros(3 * len(builtin_face().vertices), np.float32))
    sio.savemat(tmp_path / "tri.mat", {"tri": _fake_geometry()[2].T})
    with pytest.raises(ValueError, match="BFM_UV.mat.*shape"):
        load_bfm(tmp_path)


def test_load_bfm_real_fixture(real_fixtures):
    root = real_fixtures / "BFM"
    if not (root / "u_shp.npy").is_file():
        pytest.skip("no BFM mean shape among the fixtures")
    bfm = load_bfm(root)
    assert bfm.vertices.shape == (53215, 3) and bfm.triangles.shape == (105840, 3)
    assert bfm.id_basis.shape[0] == 0 and bfm.exp_basis.shape[0] == 0      # the fixtures carry no bases
    lm = bfm.vertices[bfm.landmarks]
    assert _dist(lm, 36, 45) == pytest.approx(1.0)
    assert lm[36, 0] < lm[45, 0] and lm[8, 1] == lm[:, 1].min() and lm[30, 1] < lm[36, 1]
    luv = bfm.landmark_uv
    assert luv[36, 0] < luv[45, 0] and luv[19, 1] < luv[30, 1] < luv[8, 1]     # v flipped to grow down
    n = _normals(bfm.vertices, bfm.triangles)
    front = np.abs(bfm.vertices[bfm.triangles].mean(axis=1)[:, 0]) < 0.3
    assert np.mean(n[front, 2] > 0) > 0.95
    image = bfm.part_image(256)
    assert np.all(np.bincount(image.ravel(), minlength=len(PARTS)) > 0)
    assert bfm.part_at(*luv[30]) == PARTS.index("nose")
