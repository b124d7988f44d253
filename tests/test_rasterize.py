"""Tests of the ground-truth renderer (densereg.geometry.rasterize): coverage, z-buffer, cameras, DenseReg targets."""

from types import SimpleNamespace

import numpy as np
import pytest

from densereg.geometry import camera as C
from densereg.geometry import raster_bench as B
from densereg.geometry import rasterize as R


def _coverage_count(verts_img, triangles, height, width):
    """How many triangles claim each pixel, drawing them one at a time (the z-buffer would hide overlaps)."""
    count = np.zeros((height, width), dtype=int)
    for tri in triangles:
        count += R.rasterize(verts_img, np.asarray([tri]), np.zeros(len(verts_img)), height, width).mask
    return count


# --------------------------------------------------------------------------------------- one triangle

@pytest.mark.parametrize("order", [[0, 1, 2], [0, 2, 1]], ids=["one-winding", "other-winding"])
def test_single_triangle_uv_by_hand(order):
    # Right triangle (1,1) (9,1) (1,9); u = (x-1)/8 and v = (y-1)/8 inside it.
    verts = np.array([[1.0, 1.0, 0.0], [9.0, 1.0, 0.0], [1.0, 9.0, 0.0]])
    uv = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    r = R.rasterize(verts, np.array([order]), uv, 12, 12)
    # Top edge (y = 1) and left edge (x = 1) are in, the hypotenuse x + y = 10 is out: 8+7+...+1 pixels.
    yy, xx = np.mgrid[0:12, 0:12]
    expected = (xx >= 1) & (yy >= 1) & (xx + yy < 10)
    assert expected.sum() == 36
    np.testing.assert_array_equal(r.mask, expected)
    assert r.attr.shape == (12, 12, 2) and r.attr.dtype == np.float32
    np.testing.assert_allclose(r.attr[2, 3], [0.25, 0.125], atol=1e-6)  # row 2, column 3
    np.testing.assert_allclose(r.attr[1, 1], [0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(r.attr[8, 1], [0.0, 0.875], atol=1e-6)
    np.testing.assert_allclose(r.attr[..., 0][expected], (xx[expected] - 1) / 8, atol=1e-6)
    np.testing.assert_allclose(r.attr[..., 1][expected], (yy[expected] - 1) / 8, atol=1e-6)
    np.testing.assert_allclose(r.bary[expected].sum(-1), 1.0, atol=1e-6)
    assert np.isnan(r.attr[~expected]).all() and np.isnan(r.depth[~expected]).all()
    assert (r.triangle[expected] == 0).all() and (r.triangle[~expected] == -1).all()
    assert np.isnan(r.attr[5, 5]).all()  # on the hypotenuse: belongs to the (absent) neighbour


def test_bary_follow_the_triangle_vertex_order():
    verts = np.array([[1.0, 1.0, 0.0], [9.0, 1.0, 0.0], [1.0, 9.0, 0.0]])
    r = R.rasterize(verts, np.array([[2, 0, 1]]), np.zeros(3), 12, 12)
    # Pixel (x=3, y=2): weights of vertices 0, 1, 2 are 5/8, 2/8, 1/8; stored in the order (2, 0, 1).
    np.testing.assert_allclose(r.bary[2, 3], [1 / 8, 5 / 8, 2 / 8], atol=1e-6)


def test_triangle_larger_than_the_image_covers_every_pixel():
    verts = np.array([[-100.0, -100.0, 0.0], [400.0, -100.0, 0.0], [-100.0, 400.0, 0.0]])
    r = R.rasterize(verts, np.array([[0, 1, 2]]), verts[:, :2], 16, 20)
    assert r.mask.all()
    yy, xx = np.mgrid[0:16, 0:20]
    np.testing.assert_allclose(r.attr[..., 0], xx, atol=1e-3)
    np.testing.assert_allclose(r.attr[..., 1], yy, atol=1e-3)


def test_degenerate_offscreen_and_nonfinite_triangles_are_skipped():
    verts = np.array([[1.0, 1.0, 0.0], [5.0, 5.0, 0.0], [9.0, 9.0, 0.0],   # collinear
                      [50.0, 50.0, 0.0], [60.0, 50.0, 0.0], [50.0, 60.0, 0.0],  # off-screen
                      [1.0, 1.0, np.nan], [9.0, 1.0, 0.0], [1.0, 9.0, 0.0]])  # NaN depth
    r = R.rasterize(verts, np.arange(9).reshape(3, 3), np.zeros(9), 12, 12)
    assert not r.mask.any()


def test_bad_inputs_name_the_problem():
    verts = np.zeros((3, 3))
    with pytest.raises(ValueError, match="index vertices"):
        R.rasterize(verts, np.array([[0, 1, 3]]), np.zeros(3), 4, 4)
    with pytest.raises(ValueError, match="attributes"):
        R.rasterize(verts, np.array([[0, 1, 2]]), np.zeros(4), 4, 4)
    with pytest.raises(ValueError, match=r"\(V, 3\)"):
        R.rasterize(np.zeros((3, 2)), np.array([[0, 1, 2]]), np.zeros(3), 4, 4)
    with pytest.raises(ValueError, match="integer"):
        R.rasterize(verts, np.array([[0.0, 1.0, 2.0]]), np.zeros(3), 4, 4)


# ------------------------------------------------------------------------------------------- z-buffer

@pytest.mark.parametrize("near_first", [True, False])
def test_nearer_triangle_wins_whatever_the_drawing_order(near_first):
    far = [[2.0, 2.0, 1.0], [20.0, 2.0, 1.0], [2.0, 20.0, 1.0]]
    near = [[6.0, 6.0, 5.0], [24.0, 6.0, 5.0], [6.0, 24.0, 5.0]]
    verts = np.array(near + far if near_first else far + near)
    label = np.array([1.0] * 3 + [0.0] * 3) if near_first else np.array([0.0] * 3 + [1.0] * 3)
    r = R.rasterize(verts, np.array([[0, 1, 2], [3, 4, 5]]), label, 28, 28)
    near_id = 0 if near_first else 1
    overlap = (10, 10)  # inside both
    assert r.triangle[overlap] == near_id and r.attr[overlap][0] == 1.0 and r.depth[overlap] == 5.0
    assert r.attr[3, 3][0] == 0.0  # only the far one covers (x=3, y=3)


def test_crossing_planes_switch_along_their_intersection():
    # Plane A has z = x, plane B has z = 20 - x: A is nearer right of x = 10, B left of it.
    a = [[0.0, 0.0, 0.0], [20.0, 0.0, 20.0], [20.0, 20.0, 20.0], [0.0, 20.0, 0.0]]
    b = [[0.0, 0.0, 20.0], [20.0, 0.0, 0.0], [20.0, 20.0, 0.0], [0.0, 20.0, 20.0]]
    tris = np.array([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]])
    r = R.rasterize(np.array(a + b), tris, np.array([0.0] * 4 + [1.0] * 4), 20, 20)
    cols = np.arange(20)
    assert (r.attr[5, cols < 10, 0] == 1.0).all() and (r.attr[5, cols > 10, 0] == 0.0).all()
    np.testing.assert_allclose(r.depth[5], np.maximum(cols, 20 - cols), atol=1e-4)


def test_sphere_shows_only_its_front_half():
    vertices, tris, uv = B.uv_sphere(24, 48)
    rng = np.random.default_rng(3)
    for yaw, pitch, roll in rng.uniform(-np.pi, np.pi, size=(3, 3)):
        rot = C.rotation_matrix(yaw, pitch, roll)
        r = R.rasterize(C.project_ortho(vertices, rot, 20.0, 31.5, 31.5), tris, uv, 64, 64)
        u, v = r.attr[..., 0][r.mask], r.attr[..., 1][r.mask]
        # Back to the 3-D point each rendered (u, v) names; in camera space it must face the viewer.
        theta, phi = np.pi * v, 2 * np.pi * u - np.pi
        p = np.stack([np.sin(theta) * np.sin(phi), np.cos(theta), np.sin(theta) * np.cos(phi)], 1) @ rot.T
        # Silhouette facets may dip behind z = 0 by at most the chord sag of a 7.5° facet.
        assert p[:, 2].min() > -0.15
        assert np.median(p[:, 2]) > 0.5
        assert abs(r.mask.sum() - np.pi * 20**2) < 0.05 * np.pi * 20**2
        # Depth of the front surface: sqrt(r² - ρ²) in pixels, up to facet sag.
        yy, xx = np.nonzero(r.mask)
        rho2 = (xx - 31.5) ** 2 + (yy - 31.5) ** 2
        expect = np.sqrt(np.maximum(400.0 - rho2, 0))
        assert np.abs(r.depth[r.mask] - expect)[rho2 < 15**2].max() < 0.5


# ------------------------------------------------------------------------------------- shared edges

@pytest.mark.parametrize("diagonal", ["main", "anti"])
def test_square_split_in_two_is_covered_exactly_once(diagonal):
    # Integer corners: the diagonal runs through pixel centres, so the tie rule decides them.
    verts = np.array([[2.0, 2.0, 0.0], [12.0, 2.0, 0.0], [12.0, 12.0, 0.0], [2.0, 12.0, 0.0]])
    tris = [[0, 1, 2], [0, 2, 3]] if diagonal == "main" else [[0, 1, 3], [1, 2, 3]]
    count = _coverage_count(verts, tris, 16, 16)
    yy, xx = np.mgrid[0:16, 0:16]
    np.testing.assert_array_equal(count, (xx >= 2) & (xx < 12) & (yy >= 2) & (yy < 12))


def test_fan_around_a_pixel_centre_claims_it_once():
    ring = [(15, 10), (15, 15), (10, 15), (5, 15), (5, 10), (5, 5), (10, 5), (15, 5)]
    verts = np.array([[10.0, 10.0, 0.0]] + [[x, y, 0.0] for x, y in ring])
    tris = [[0, 1 + k, 1 + (k + 1) % 8] for k in range(8)]
    count = _coverage_count(verts, tris, 20, 20)
    assert count.max() == 1 and count[10, 10] == 1
    yy, xx = np.mgrid[0:20, 0:20]
    np.testing.assert_array_equal(count, (xx >= 5) & (xx < 15) & (yy >= 5) & (yy < 15))


@pytest.mark.parametrize("snap", [False, True], ids=["jittered", "jittered-on-pixel-centres"])
def test_jittered_grid_has_no_cracks_or_double_cover(snap):
    n, lo, hi = 7, 3.3, 40.7
    s = np.linspace(lo, hi, n)
    yy, xx = np.meshgrid(s, s, indexing="ij")
    rng = np.random.default_rng(1)
    inner = np.zeros_like(xx, dtype=bool)
    inner[1:-1, 1:-1] = True
    xx[inner] += rng.uniform(-1.4, 1.4, inner.sum())
    yy[inner] += rng.uniform(-1.4, 1.4, inner.sum())
    if snap:
        xx[inner], yy[inner] = np.round(xx[inner]), np.round(yy[inner])
    verts = np.stack([xx.ravel(), yy.ravel(), rng.uniform(0, 1, n * n)], 1)
    _, tris, _ = B.height_field(n)
    count = _coverage_count(verts, tris, 44, 44)
    rows, cols = np.mgrid[0:44, 0:44]
    np.testing.assert_array_equal(count, (cols >= 4) & (cols <= 40) & (rows >= 4) & (rows <= 40))
    # The z-buffered render of the whole grid covers the same pixels.
    np.testing.assert_array_equal(R.rasterize(verts, tris, np.zeros(n * n), 44, 44).mask, count == 1)


# -------------------------------------------------------------------------------------------- cameras

def test_rotation_matrix_convention():
    nose = np.array([0.0, 0.0, 1.0])
    assert (C.rotation_matrix(0.3, 0, 0) @ nose)[0] > 0  # yaw > 0: nose to the viewer's right
    assert (C.rotation_matrix(0, 0.3, 0) @ nose)[1] < 0  # pitch > 0: nose down
    assert (C.rotation_matrix(0, 0, 0.3) @ np.array([1.0, 0.0, 0.0]))[1] > 0  # roll > 0: counter-clockwise
    rot = C.rotation_matrix(0.4, -0.7, 1.1)
    np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(C.rotation_matrix(0.4, 0.5, 0.6),
                               C.rotation_matrix(0, 0, 0.6) @ C.rotation_matrix(0.4, 0, 0)
                               @ C.rotation_matrix(0, 0.5, 0), atol=1e-12)


def test_project_ortho_by_hand():
    # yaw 90°: (1, 2, 3) → R v = (3, 2, -1); scale 2 → (6, 4, -2); x = 6 + 10, y = 20 - 4.
    out = C.project_ortho(np.array([[1.0, 2.0, 3.0]]), C.rotation_matrix(np.pi / 2, 0, 0), 2.0, 10.0, 20.0)
    np.testing.assert_allclose(out, [[16.0, 16.0, -2.0]], atol=1e-12)


@pytest.mark.parametrize("pose, expected", [
    # yaw 90°: Ry v = (-3, 2, 1); f = 2, t = (10, 20, 5) → V = (4, 24, 7); x = V_x - 1, y = 100 - V_y.
    ([0, np.pi / 2, 0, 10, 20, 5, 2], [3.0, 76.0, 7.0]),
    # pitch 90°: Rx v = (1, 3, -2) → x = 0, y = 97.
    ([np.pi / 2, 0, 0, 0, 0, 0, 1], [0.0, 97.0, -2.0]),
    # roll 90°: Rz v = (2, -1, 3) → x = 1, y = 101.
    ([0, 0, np.pi / 2, 0, 0, 0, 1], [1.0, 101.0, 3.0]),
    # pitch and yaw 90°: Rx·Ry v = (-3, 1, -2) (Ry·Rx would give (2, 3, 1)).
    ([np.pi / 2, np.pi / 2, 0, 0, 0, 0, 1], [-4.0, 99.0, -2.0]),
], ids=["yaw", "pitch", "roll", "pitch-then-yaw"])
def test_project_3ddfa_by_hand(pose, expected):
    out = C.project_3ddfa(np.array([[1.0, 2.0, 3.0]]), pose, height=100)
    np.testing.assert_allclose(out[0], expected, atol=1e-12)


def test_project_3ddfa_rejects_a_short_pose():
    with pytest.raises(ValueError, match="7 numbers"):
        C.project_3ddfa(np.zeros((1, 3)), [0, 0, 0, 0, 0, 0], 100)


def test_perspective_interpolation_is_exact_on_a_tilted_plane():
    # A square in the plane z = -10 - 0.5·x (camera space), attribute = the 3-D x coordinate.
    corners = np.array([[-4.0, -4.0], [4.0, -4.0], [4.0, 4.0], [-4.0, 4.0]])
    verts = np.column_stack([corners, -10.0 - 0.5 * corners[:, 0]])
    tris = np.array([[0, 1, 2], [0, 2, 3]])
    img = C.project_perspective(verts, np.eye(3), np.zeros(3), focal=40.0, cx=32.0, cy=32.0)
    exact = R.rasterize(img, tris, verts[:, 0], 64, 64, perspective_correct=True)
    affine = R.rasterize(img, tris, verts[:, 0], 64, 64)
    rows, cols = np.nonzero(exact.mask)
    # The ray through pixel (x, y) is (a, b, -1)·d with a = (x - cx)/f; it meets the plane at d = 10/(1 + 0.5a).
    a = (cols - 32.0) / 40.0
    d = 10.0 / (1.0 - 0.5 * a)
    # Tolerance: corners are snapped to 1/256 px, i.e. up to ~2e-3 px ≈ 5e-4 units of x at this scale.
    np.testing.assert_allclose(exact.attr[rows, cols, 0], a * d, atol=1e-3)
    np.testing.assert_allclose(exact.depth[rows, cols], 1.0 / d, rtol=1e-4)
    np.testing.assert_allclose(exact.bary[exact.mask].sum(-1), 1.0, atol=1e-6)
    assert np.abs(affine.attr[rows, cols, 0] - a * d).max() > 0.05  # the correction is not a no-op


def test_project_perspective_rejects_points_behind_the_camera():
    with pytest.raises(ValueError, match="in front of the camera"):
        C.project_perspective(np.array([[0.0, 0.0, 1.0]]), np.eye(3), np.zeros(3), 10.0, 0.0, 0.0)


# --------------------------------------------------------------------------------- DenseReg targets

def _template(vertices, triangles, uv):
    """A duck-typed template: part 2 right of u = 0.5, part 1 left of it."""
    return SimpleNamespace(vertices=vertices, triangles=triangles, uv=uv,
                           part_at=lambda u, v: np.where(np.asarray(u) > 0.5, 2, 1).astype(np.uint8))


def test_render_gt_normalises_depth_and_labels_parts():
    # A plane tilted so that z = column: normalised depth is linear across the columns it covers.
    verts = np.array([[4.0, 4.0, 4.0], [20.0, 4.0, 20.0], [20.0, 20.0, 20.0], [4.0, 20.0, 4.0]])
    uv = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    gt = R.render_gt(_template(verts, np.array([[0, 1, 2], [0, 2, 3]]), uv), verts, 24, 24)
    rows, cols = np.nonzero(gt.mask)
    assert (cols.min(), cols.max()) == (4, 19)
    np.testing.assert_allclose(gt.depth[rows, cols], (cols - 4) / 15, atol=1e-6)
    assert gt.depth.dtype == np.float32 and np.isnan(gt.depth[~gt.mask]).all()
    assert np.isnan(gt.u[~gt.mask]).all() and np.isnan(gt.v[~gt.mask]).all()
    np.testing.assert_allclose(gt.u[rows, cols], (cols - 4) / 16, atol=1e-6)
    assert gt.parts.dtype == np.uint8
    np.testing.assert_array_equal(gt.parts[rows, cols], np.where(gt.u[rows, cols] > 0.5, 2, 1))
    assert (gt.parts[~gt.mask] == 0).all()


def test_render_gt_flat_foreground_is_all_closest_and_empty_image_is_background():
    verts = np.array([[2.0, 2.0, 3.0], [9.0, 2.0, 3.0], [2.0, 9.0, 3.0]])
    tpl = _template(verts, np.array([[0, 1, 2]]), np.zeros((3, 2)))
    gt = R.render_gt(tpl, verts, 12, 12)
    assert gt.mask.any() and (gt.depth[gt.mask] == 1.0).all()
    empty = R.render_gt(tpl, verts + [100.0, 0.0, 0.0], 12, 12)
    assert not empty.mask.any() and np.isnan(empty.depth).all() and (empty.parts == 0).all()


# ---------------------------------------------------------------------- landmark-style UV read-back

def _readback_errors(vertices, tris, uv, rot, size=128, scale=50.0):
    verts_img = C.project_ortho(vertices, rot, scale, size / 2, size / 2)
    r = R.rasterize(verts_img, tris, uv, size, size)
    # margin/max_step leave out silhouette and occlusion-edge vertices (a bump hiding the slope behind it).
    seen = R.visible_vertices(verts_img, r.depth, tol=1.0, margin=2, max_step=5.0)
    ids = np.flatnonzero(seen)
    return ids, R.uv_readback_error(r.attr[..., 0], r.attr[..., 1], r.mask, verts_img, uv, ids)


@pytest.mark.parametrize("yaw, pitch, roll", [(0.0, 0.0, 0.0), (0.45, -0.2, 0.1), (-0.6, 0.3, -0.25)])
def test_visible_vertices_read_back_within_one_pixel(yaw, pitch, roll):
    vertices, tris, uv = B.height_field(41, bumps=0.08)
    ids, err = _readback_errors(vertices, tris, uv, C.rotation_matrix(yaw, pitch, roll))
    assert len(ids) > 0.6 * len(vertices)
    assert err.max() <= 1.0


def test_readback_detects_a_wrong_uv_map():
    vertices, tris, uv = B.height_field(41, bumps=0.08)
    verts_img = C.project_ortho(vertices, C.rotation_matrix(0.3, 0.1, 0.0), 50.0, 64, 64)
    flipped = uv * [1.0, -1.0] + [0.0, 1.0]  # v upside down: what a template with the wrong v direction gives
    r = R.rasterize(verts_img, tris, flipped, 128, 128)
    ids = np.flatnonzero(R.visible_vertices(verts_img, r.depth, margin=2))
    assert np.median(R.uv_readback_error(r.attr[..., 0], r.attr[..., 1], r.mask, verts_img, uv, ids)) > 10


def test_visible_vertices_excludes_hidden_and_silhouette_vertices():
    vertices, tris, uv = B.uv_sphere(16, 32)
    verts_img = C.project_ortho(vertices, np.eye(3), 20.0, 32.0, 32.0)
    r = R.rasterize(verts_img, tris, uv, 64, 64)
    seen = R.visible_vertices(verts_img, r.depth, tol=1.0)
    assert not seen[vertices[:, 2] < -0.2].any() and seen[vertices[:, 2] > 0.8].all()
    inner = R.visible_vertices(verts_img, r.depth, tol=1.0, margin=2)
    assert not (inner & ~seen).any()
    assert not inner[np.hypot(*vertices[:, :2].T) > 0.95].any()


# ------------------------------------------------------------------------------ real BFM (if present)

def test_bfm_mean_face_with_a_300wlp_pose(real_fixtures):
    scipy_io = pytest.importorskip("scipy.io")
    bfm = real_fixtures / "BFM"
    shape = (np.load(bfm / "u_shp.npy") + np.load(bfm / "u_exp.npy")).reshape(-1, 3)
    keypoints = np.load(bfm / "keypoints_sim.npy")[::3] // 3
    tris = scipy_io.loadmat(bfm / "tri.mat")["tri"].T.astype(np.int64) - 1
    uv = scipy_io.loadmat(bfm / "BFM_UV.mat")["UV"]
    fit = scipy_io.loadmat(real_fixtures / "300W_LP" / "AFW" / "AFW_134212_1_0.mat")
    verts_img = C.project_3ddfa(shape, fit["Pose_Para"], height=450)
    # The mean face is not the fitted identity, but the pose alone brings its landmarks near pt2d (1-based);
    # a wrong rotation convention (e.g. the transpose) puts them ~120 px away.
    err = np.linalg.norm(verts_img[keypoints, :2] - (fit["pt2d"].T - 1), axis=1)
    assert err.mean() < 15
    r = R.rasterize(verts_img, tris, uv, 450, 450)
    assert 0.1 < r.mask.mean() < 0.3
    # Landmarks off silhouettes and occlusion edges (the chin over the neck is one) read back within 1 px,
    # except where the surface is foreshortened: the far jaw contour (landmark 12, yaw 27°) gives 1.3 px.
    seen = R.visible_vertices(verts_img, r.depth, tol=1.0, margin=1, max_step=10.0)[keypoints]
    assert seen.sum() >= 45
    err = R.uv_readback_error(r.attr[..., 0], r.attr[..., 1], r.mask, verts_img, uv, keypoints[seen])
    assert np.median(err) < 0.7 and err.max() < 1.5 and (err > 1.0).sum() <= 1


# ------------------------------------------------------------------------------------------ benchmark

def test_benchmark_runs_and_fills_about_half_the_image(capsys):
    result = B.benchmark("sphere", n_triangles=2000, size=64, renders=3)
    assert 1800 < result["triangles"] < 2200 and result["renders_per_s"] > 0
    assert 0.4 < result["foreground_fraction"] < 0.6
    B.main(["--bench", "--mesh", "heightfield", "--triangles", "500", "--size", "32", "--renders", "2"])
    assert "renders/s" in capsys.readouterr().out


def test_bench_mesh_lookup_names_valid_keys():
    with pytest.raises(KeyError, match="heightfield"):
        B.bench_mesh("cube", 100)
