"""Tests of the landmark read-out from dense UV fields and of the PCA shape model (densereg.readout.landmarks).

Every field here is exact ground truth rendered from the built-in template, so the landmark vertices'
projections are the true answer wherever they are visible.
"""

import numpy as np
import torch
import pytest

from densereg.data import datasets, formats, groundtruth
from densereg.geometry import camera, rasterize
from densereg.geometry.shape_model import ShapeModel
from densereg.readout import landmarks as L
from densereg.geometry.templates import builtin_face

SIZE = 256


@pytest.fixture(scope="module")
def template():
    return builtin_face()


def render_face(template, yaw=0.0, pitch=0.0, roll=0.0, centre=(128.0, 128.0), scale=0.22, seed=0,
                exp=None, size=SIZE):
    """(DenseGT, landmark projections (68, 2), visible (68,) bool) of one posed random identity."""
    rng = np.random.default_rng(seed)
    shape = np.clip(rng.normal(0, 0.8, template.id_basis.shape[0]), -2.5, 2.5)
    cx, cy = centre
    pose = np.array([*np.radians([pitch, yaw, roll]), cx + 1, size - cy, 0.0, scale * size])
    verts = camera.project_3ddfa(template.instance(shape, exp), pose, size)
    depth = rasterize.rasterize(verts, template.triangles, template.uv, size, size).depth
    # Visible with a 1-px margin: landmarks exactly on a silhouette fold are excluded from the accuracy checks.
    visible = rasterize.visible_vertices(verts, depth, tol=1.0, margin=1, max_step=3.0)[template.landmarks]
    return rasterize.render_gt(template, verts, size, size), verts[template.landmarks, :2], visible


def box_of(points):
    return np.concatenate([points.min(0), points.max(0)])


def read(gt, template, region=None, **kw):
    return L.read_landmarks(gt, template.landmark_uv, region, sides=L.landmark_sides(template), **kw)


def training_shapes(template, n, seed):
    """Projected landmarks of random faces in random poses (yaw up to ±90°), like a 300W-LP training set."""
    rng = np.random.default_rng(seed)
    lm = template.landmarks
    mean, idb, exb = template.vertices[lm], template.id_basis[:, lm], template.exp_basis[:, lm]
    out = []
    for _ in range(n):
        shape = np.clip(rng.normal(0, 0.8, len(idb)), -2.5, 2.5)
        exp = np.where(rng.random(len(exb)) < 0.3, rng.uniform(0, 1, len(exb)), 0.0)
        pts = mean + np.tensordot(shape, idb, 1) + np.tensordot(exp, exb, 1)
        pose = [np.radians(np.clip(rng.normal(0, 13), -45, 45)), np.radians(rng.uniform(-90, 90)),
                np.radians(rng.normal(0, 10)), rng.uniform(80, 180), rng.uniform(80, 180), 0.0,
                rng.uniform(40, 70)]
        out.append(camera.project_3ddfa(pts, pose, SIZE)[:, :2])
    return np.array(out)


@pytest.fixture(scope="module")
def shape_model(template):
    return ShapeModel.fit(training_shapes(template, 300, seed=11))


# ------------------------------------------------------------------------------------------------ read-out

@pytest.mark.parametrize("yaw, pitch, roll, mouth", [(0, 0, 0, 0.0), (15, -10, 8, 0.8), (-20, 12, -15, 0.3)])
def test_visible_landmarks_within_a_pixel(template, yaw, pitch, roll, mouth):
    gt, truth, visible = render_face(template, yaw, pitch, roll, exp={"mouth_open": mouth}, seed=yaw + 50)
    points, conf = read(gt, template, box_of(truth))
    assert visible.sum() >= 30
    err = np.linalg.norm(points - truth, axis=1)[visible]
    assert np.isfinite(err).all(), "a visible landmark was reported missing"
    assert np.median(err) < 0.3 and np.percentile(err, 90) < 1.0 and err.max() < 1.5, np.round(err, 2)
    assert conf[visible].min() > 0.5
    found = np.isfinite(points[:, 0])
    assert np.all(conf[~found] == 0) and np.all((conf >= 0) & (conf <= 1))


def test_open_mouth_separates_the_inner_lips(template):
    # 61/67, 62/66 and 63/65 share one UV; with the lips parted each must still land on its own lip.
    gt, truth, _ = render_face(template, 5, 0, 0, exp={"mouth_open": 1.0}, seed=3)
    points, _ = read(gt, template, box_of(truth))
    for upper, lower in ((61, 67), (62, 66), (63, 65)):
        assert truth[lower, 1] - truth[upper, 1] > 3          # the lips really are apart here
        assert np.linalg.norm(points[upper] - truth[upper]) < 1.0
        assert np.linalg.norm(points[lower] - truth[lower]) < 1.0


def test_profile_far_jaw_is_missing_and_the_model_fills_it(template, shape_model):
    gt, truth, visible = render_face(template, yaw=80, pitch=5, seed=7)
    points, conf = read(gt, template, box_of(truth))
    missing = ~np.isfinite(points[:, 0])
    # yaw > 0 turns the face's image-left side (jaw points 0-7) away from the camera
    assert missing[:6].all(), np.flatnonzero(missing)
    assert np.all(conf[missing] == 0)
    err = np.linalg.norm(points - truth, axis=1)
    assert np.nanmedian(err[visible]) < 0.5
    refined = L.landmarks_from_uv(gt, template, box_of(truth), shape_model)
    assert refined.shape == (68, 2) and np.isfinite(refined).all()
    # Normalised by the 3D outer-eye distance in pixels (the template's unit; f): in profile the image
    # outer-eye distance shrinks towards 0 and would make any error look huge.
    iod = 0.22 * SIZE
    nme = np.linalg.norm(refined - truth, axis=1)
    assert nme[missing].mean() / iod < 0.1 and nme.mean() / iod < 0.05
    raw = L.landmarks_from_uv(gt, template, box_of(truth))
    assert np.isfinite(raw).all()
    np.testing.assert_array_equal(raw[~missing], points[~missing])       # raw keeps the read-out


def test_noise_robustness(template):
    gt, truth, visible = render_face(template, 10, 5, -5, seed=21)
    rng = np.random.default_rng(0)
    u = gt.u + rng.normal(0, 0.01, gt.u.shape).astype(np.float32)
    v = gt.v + rng.normal(0, 0.01, gt.v.shape).astype(np.float32)
    points, _ = L.read_landmarks((u, v), template.landmark_uv, box_of(truth),
                                 sides=L.landmark_sides(template))
    err = np.linalg.norm(points - truth, axis=1)[visible]
    assert np.mean(np.isfinite(err)) > 0.95
    assert np.nanmedian(err) < 2.0, np.round(err, 2)


def test_region_picks_the_face_among_two(template):
    left, lt, lvis = render_face(template, -10, 0, 0, seed=1)
    right, rt, rvis = render_face(template, 25, 5, 10, seed=2, centre=(120.0, 140.0))
    u, v = np.concatenate([left.u, right.u], axis=1), np.concatenate([left.v, right.v], axis=1)
    rt = rt + [SIZE, 0]
    for truth, visible in ((lt, lvis), (rt, rvis)):
        points, _ = L.read_landmarks((u, v), template.landmark_uv, box_of(truth),
                                     sides=L.landmark_sides(template))
        err = np.linalg.norm(points - truth, axis=1)[visible]
        assert np.isfinite(err).all() and err.max() < 1.5
    # without a region every landmark is taken from whichever face shows it best: not both faces at once
    points, _ = L.read_landmarks((u, v), template.landmark_uv)
    assert np.nanmin(np.linalg.norm(points - lt, axis=1)) < 1 or np.nanmin(np.linalg.norm(points - rt, axis=1)) < 1


def test_nearest_is_the_released_integer_rule(template):
    gt, truth, visible = render_face(template, 30, 0, 0, seed=5)
    points, conf = read(gt, template, box_of(truth), method="nearest")
    assert np.isfinite(points).all()                     # no visibility handling: every landmark is reported
    np.testing.assert_array_equal(points, np.round(points))
    err = np.linalg.norm(points - truth, axis=1)[visible]
    assert np.median(err) < 1.0 and err.max() < 2.0
    # each is the argmin pixel of the UV distance (brute force over the whole map)
    d = np.hypot(gt.u[..., None] - template.landmark_uv[:, 0], gt.v[..., None] - template.landmark_uv[:, 1])
    d = np.where(gt.mask[..., None], d, np.inf)
    flat = d.reshape(-1, 68).argmin(0)
    np.testing.assert_array_equal(points[:, ::-1].astype(int), np.stack(np.unravel_index(flat, gt.u.shape), 1))


def test_empty_region_and_bad_arguments(template):
    gt, truth, _ = render_face(template, seed=4)
    points, conf = read(gt, template, (0, 0, 10, 10), margin=0.0)
    assert np.isnan(points).all() and np.all(conf == 0)
    assert np.isnan(L.landmarks_from_uv(gt, template, (0, 0, 10, 10), margin=0.0)).all()
    with pytest.raises(KeyError, match="components"):
        read(gt, template, method="argmin")
    with pytest.raises(ValueError, match="region"):
        read(gt, template, (10, 10, 0, 0))


def test_small_face_raises_tau_with_the_uv_density(template):
    gt, truth, visible = render_face(template, 0, 0, 0, scale=0.06, seed=9)     # ~15 px between the eyes
    density = L.uv_density(gt.u, gt.v, gt.mask)
    assert L.RADIUS / density < L.MIN_RADIUS_PX              # the fixed tau would be under 2.5 px here
    points, _ = read(gt, template, box_of(truth))
    err = np.linalg.norm(points - truth, axis=1)[visible]
    assert np.mean(np.isfinite(err)) > 0.9 and np.nanmedian(err) < 0.5


def test_synthetic_benchmark_pts_agree_with_the_read_out(tiny_synth, template):
    # Through the dataset layer: .pts (1-based on disk) vs the read-out on the fitting's rendered UV.
    for sample in datasets.load_dataset("300w", tiny_synth, "test"):
        fitting = formats.read_fitting(sample.extras["fitting"])
        h, w = sample.image().shape[:2]
        gt = groundtruth.render_fitting(fitting, h, w, template)
        verts = groundtruth.posed_vertices(fitting, template, h)
        depth = rasterize.rasterize(verts, template.triangles, template.uv, h, w).depth
        visible = rasterize.visible_vertices(verts, depth, 1.0, 1, 3.0)[template.landmarks]
        points, _ = read(gt, template, sample.box)
        err = np.linalg.norm(points - sample.landmarks, axis=1)[visible]
        assert np.mean(np.isfinite(err)) > 0.9 and np.nanmedian(err) < 0.5, (sample.name, np.round(err, 2))


# --------------------------------------------------------------------------------------------- shape model

def test_shape_model_reconstructs_a_training_shape_exactly(template, tmp_path):
    shapes = training_shapes(template, 40, seed=2)
    model = ShapeModel.fit(shapes, n_components=39)
    rec = model.reconstruct(shapes[7], noise=0.0)
    np.testing.assert_allclose(rec, shapes[7], atol=1e-5)
    path = tmp_path / "sub" / "pdm.npz"
    formats.atomic_write_bytes(path, model.npz_bytes())
    loaded = ShapeModel.load(path)
    again = ShapeModel.from_arrays({k: torch.as_tensor(v) for k, v in model.to_arrays().items()})
    np.testing.assert_array_equal(again.components, model.components)
    for name in ("mean", "components", "variances"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(model, name))
    assert loaded.noise_var == model.noise_var
    assert [p.name for p in path.parent.iterdir()] == ["pdm.npz"]       # no temp file left behind
    bad = tmp_path / "bad.npz"
    np.savez(bad, mean=np.zeros((68, 2)))
    with pytest.raises(ValueError, match="bad.npz"):
        ShapeModel.load(bad)


def test_shape_model_fills_missing_points_and_rejects_outliers(template, shape_model):
    truth = training_shapes(template, 1, seed=99)[0]          # not a training shape
    scale = np.linalg.norm(truth[36] - truth[45]) + 1.0
    partial = truth.copy()
    partial[:17] = np.nan                                      # the whole jaw missing
    rec = shape_model.reconstruct(partial)
    assert np.isfinite(rec).all()
    assert np.linalg.norm(rec[:17] - truth[:17], axis=1).mean() < 0.1 * max(scale, 40)
    corrupted = truth.copy()
    corrupted[[30, 40, 50]] += 40.0                            # three gross outliers
    rec = shape_model.reconstruct(corrupted)
    assert np.linalg.norm(rec[[30, 40, 50]] - truth[[30, 40, 50]], axis=1).max() < 5.0
    plain = shape_model.reconstruct(corrupted, outlier_k=None)
    assert np.linalg.norm(plain[[30, 40, 50]] - truth[[30, 40, 50]], axis=1).max() > \
        np.linalg.norm(rec[[30, 40, 50]] - truth[[30, 40, 50]], axis=1).max()
    with pytest.raises(ValueError, match="at least 3"):
        shape_model.reconstruct(np.full((68, 2), np.nan))
    with pytest.raises(ValueError, match="non-finite"):
        ShapeModel.fit(np.stack([truth, partial]))


def test_mean_only_model_is_a_similarity_of_the_mean(template):
    model = ShapeModel.from_template(template)
    assert model.n_components == 0
    angle, s, t = 0.3, 57.0, np.array([100.0, 90.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    placed = s * model.mean @ rot.T + t
    partial = placed.copy()
    partial[40:] = np.nan
    np.testing.assert_allclose(model.reconstruct(partial), placed, atol=1e-9)


# ------------------------------------------------------------------------------------------------ benchmark

def test_benchmark_command_runs(capsys):
    assert L.main(["--bench", "--faces", "2", "--repeats", "2"]) == 0
    out = capsys.readouterr().out
    assert "ms per face" in out and "components" in out and "nearest" in out
    res = L.benchmark(faces=2, repeats=1)
    assert res["components"]["median_error_px"] < 0.5 and res["components"]["ms_per_face"] > 0
