"""Thin-plate splines and the ear ground truth built on them (paper Sec. 4.7).

What is proved: the spline is exact at its control points and reproduces affine maps; it is smooth between
its control points (second differences shrink like h², which a kernel with a kink would not give); the ear
region holds every landmark of the real iBUG fixtures; the TPS ground truth of a real ear is the reference at
its landmarks, lies in [0, 1], and mirrors with the ear.
"""

from __future__ import annotations

import numpy as np
import pytest

from densereg.data import formats
from densereg.geometry import ear
from densereg.geometry.tps import ThinPlateSpline


def _points(seed, n=20):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 100, (n, 2)), rng.uniform(0, 1, (n, 2))


def test_landmarks_map_exactly():
    src, dst = _points(0)
    tps = ThinPlateSpline.fit(src, dst)
    assert np.abs(tps(src) - dst).max() < 1e-9


def test_affine_maps_are_reproduced_everywhere():
    src, _ = _points(1)
    A = np.array([[0.8, -0.3], [0.2, 1.1]])
    dst = src @ A.T + [5.0, -2.0]
    tps = ThinPlateSpline.fit(src, dst)
    probe = np.random.default_rng(2).uniform(-50, 150, (200, 2))
    assert np.abs(tps(probe) - (probe @ A.T + [5.0, -2.0])).max() < 1e-8
    assert abs(tps.bending_energy()) < 1e-12


def test_smooth_between_and_at_control_points():
    """Second differences at a control point and between them scale like h² (a C¹ map), not like h."""
    src, dst = _points(3, n=12)
    tps = ThinPlateSpline.fit(src, dst)
    centres = np.concatenate([src[:4], (src[:4] + src[4:8]) / 2])
    for h in (1.0,):
        ratios = []
        for c in centres:
            second = []
            for step in (h, h / 4):
                for d in ([step, 0.0], [0.0, step]):
                    d = np.array(d)
                    second.append(np.abs(tps(c + d) - 2 * tps(c) + tps(c - d)).max())
            ratios.append(max(second[:2]) / max(max(second[2:]), 1e-300))
        # h → h/4: a C² map gives 16, r² log r² at its own centre about 16·log(h)/log(h/4) ≈ 11; a kink gives 4.
        assert min(ratios) > 8, ratios


def test_bad_inputs_are_named():
    src, dst = _points(4)
    with pytest.raises(ValueError, match="collinear"):
        ThinPlateSpline.fit(np.stack([np.arange(5.0), 2 * np.arange(5.0)], 1), dst[:5])
    with pytest.raises(ValueError, match="finite"):
        ThinPlateSpline.fit(np.where(np.arange(20)[:, None] == 3, np.nan, src), dst)
    with pytest.raises(ValueError, match="equal shape"):
        ThinPlateSpline.fit(src, dst[:5])


def test_map_grid_fills_only_the_mask():
    src, dst = _points(5)
    tps = ThinPlateSpline.fit(src, dst)
    mask = np.zeros((30, 40), bool)
    mask[10:20, 5:9] = True
    fx, fy = tps.map_grid(30, 40, mask)
    assert np.isfinite(fx[mask]).all() and np.isnan(fx[~mask]).all()
    assert np.allclose(fx[12, 7], tps([[7.0, 12.0]])[0, 0]) and np.allclose(fy[12, 7], tps([[7.0, 12.0]])[0, 1])


def _real_ears(real_fixtures):
    folder = real_fixtures / "ears" / "train"
    if not folder.is_dir():
        pytest.skip(f"no ear fixtures in {folder}")
    out = []
    for pts in sorted(folder.glob("*.txt")):
        out.append((formats.read_image(pts.with_suffix(".png")), formats.read_pts(pts, expected_n=55)))
    assert out, f"{folder} holds no .txt annotations"
    return out


def test_real_ears_go_through_the_tps_ground_truth(real_fixtures):
    ears = _real_ears(real_fixtures)
    reference = ear.reference_ear([pts for _, pts in ears])
    assert reference.min() >= 0 and reference.max() <= 1
    assert reference[ear.LOBULE, 1] > reference[:20, 1].min()            # canonical: lobule below the top
    assert reference[ear.HELIX_ROOT, 0] > reference[:, 0].mean()        # helix root on the +u side
    for image, pts in ears:
        h, w = image.shape[:2]
        gt = ear.ear_gt(pts, reference, h, w)
        assert gt.mask.sum() > 500
        assert np.nanmin(gt.u) >= 0 and np.nanmax(gt.u) <= 1 and np.isnan(gt.u[~gt.mask]).all()
        # every landmark is in (or within a pixel of) the region, and the spline is exact there
        rows, cols = np.nonzero(gt.mask)
        near = np.min(np.hypot(cols[None] - pts[:, :1], rows[None] - pts[:, 1:]), axis=1)
        assert near.max() <= 1.0, near.max()
        assert np.abs(ear.ear_spline(pts, reference)(pts) - reference).max() < 1e-9
        # at the pixel nearest an inner landmark the field is within a pixel's worth of the reference
        spacing = 1.0 / np.sqrt(gt.mask.sum())
        for k in (25, 40, 52):
            r, c = int(round(pts[k, 1])), int(round(pts[k, 0]))
            assert np.hypot(gt.u[r, c] - reference[k, 0], gt.v[r, c] - reference[k, 1]) < 3 * spacing


def test_a_mirrored_ear_has_the_mirrored_field(real_fixtures):
    image, pts = _real_ears(real_fixtures)[0]
    h, w = image.shape[:2]
    reference = ear.reference_ear([pts])
    mirrored = pts * [-1.0, 1.0] + [w - 1, 0.0]
    a, b = ear.ear_gt(pts, reference, h, w), ear.ear_gt(mirrored, reference, h, w)
    both = a.mask & b.mask[:, ::-1]
    assert both.sum() > 0.95 * a.mask.sum()
    assert np.nanmax(np.abs(a.u[both] - b.u[:, ::-1][both])) < 1e-4
    assert np.allclose(ear.reference_ear([mirrored]), reference, atol=1e-9)


def test_ear_template_reads_like_a_face_template():
    rng = np.random.default_rng(0)
    shapes = [ear.canonical_pose(rng.normal(size=(55, 2))) for _ in range(3)]
    template = ear.EarTemplate(ear.reference_ear(shapes))
    assert template.landmark_uv.shape == (55, 2) and template.triangles.shape[1] == 3
    assert np.allclose(template.vertices[:, :2] * [1, -1], template.landmark_uv)
    with pytest.raises(ValueError, match="55"):
        ear.EarTemplate(np.zeros((68, 2)))
