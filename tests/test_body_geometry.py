"""The body's geometry: MDS unwrapping is isometric on a developable patch, the procedural body has the 24
patches of the released model, and its patch / UV ground truth round-trips through the project's rasteriser."""

from __future__ import annotations

import numpy as np
import pytest

from densereg.geometry import body, camera, rasterize, unwrap


def half_cylinder(radius=1.0, height=3.0, n_around=25, n_up=31):
    """A triangulated half cylinder (angle 0..pi) and the (angle, height) of each vertex."""
    phi, z = np.meshgrid(np.linspace(0, np.pi, n_around), np.linspace(0, height, n_up))
    phi, z = phi.ravel(), z.ravel()
    verts = np.stack([radius * np.cos(phi), radius * np.sin(phi), z], axis=1)
    tris = []
    for i in range(n_up - 1):
        for k in range(n_around - 1):
            a = i * n_around + k
            tris += [(a, a + 1, a + n_around + 1), (a, a + n_around + 1, a + n_around)]
    return verts, np.array(tris), phi, z


def _pairwise(x):
    return np.linalg.norm(x[:, None] - x[None], axis=-1)


def test_cylinder_patch_unwraps_isometrically():
    """A half cylinder is developable: its unwrapping must keep every geodesic distance (here within 2% on
    average, 6% at worst). Straight 3D (chord) distances instead of geodesics would shorten the 3-wide arc to
    its 2-wide chord and fail this."""
    verts, tris, phi, z = half_cylinder()
    flat = unwrap.unwrap_patch(verts, tris)
    true = _pairwise(np.stack([phi * 1.0, z], axis=1))          # the developed plane: (r·phi, z)
    got = _pairwise(flat.xy)
    far = true > 0.5
    rel = np.abs(got[far] - true[far]) / true[far]
    assert rel.mean() < 0.02 and rel.max() < 0.06, (rel.mean(), rel.max())
    assert flat.n_bridged == 0
    assert flat.uv.min() >= 0 and flat.uv.max() <= 1 and np.allclose(np.ptp(flat.uv, axis=0), 1)


def test_classical_mds_recovers_planar_points_exactly():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(30, 2)) * [3.0, 1.0]
    xy = unwrap.classical_mds(_pairwise(pts))
    np.testing.assert_allclose(_pairwise(xy), _pairwise(pts), atol=1e-9)


def test_procedural_body_has_24_patches_each_unwrapped():
    b = body.procedural_body()
    assert b.atlas.n_patches == body.N_PATCHES == 24 and body.N_CLASSES == 25
    assert len(body.patch_names()) == 25
    assert set(np.unique(b.patch)) == set(range(1, 25))
    # every atlas triangle lies in one patch, and every patch chart spans [0, 1]^2
    corners = b.atlas.patch[b.atlas.triangles]
    assert (corners == corners[:, :1]).all()
    for p in range(1, 25):
        uv = b.atlas.uv[b.atlas.patch == p]
        np.testing.assert_allclose(uv.min(axis=0), 0, atol=1e-9)
        np.testing.assert_allclose(uv.max(axis=0), 1, atol=1e-9)


def test_skinning_moves_only_the_posed_limb_rigidly():
    b = body.procedural_body()
    pose = np.zeros((len(body.JOINTS), 3))
    pose[body.JOINTS.index("lower_arm_l")] = [-1.2, 0.0, 0.0]
    posed = b.posed(pose)
    moved = np.linalg.norm(posed - b.verts, axis=1) > 1e-9
    children = {body.JOINTS.index(n) for n in ("lower_arm_l", "hand_l")}
    assert set(np.unique(b.segment[moved])) == children
    seg = b.segment == body.JOINTS.index("lower_arm_l")
    np.testing.assert_allclose(_pairwise(posed[seg][:50]), _pairwise(b.verts[seg][:50]), atol=1e-9)


def _posed_image(size=320):
    b = body.procedural_body()
    pose = np.zeros((len(body.JOINTS), 3))
    pose[0] = [0.0, 0.4, 0.0]
    pose[body.JOINTS.index("upper_arm_r")] = [0.0, 0.0, -0.8]
    verts_img = camera.project_ortho(b.posed(pose), np.eye(3), size * 0.53, size / 2, size * 0.93)
    return b, verts_img


def test_patch_uv_gt_round_trips_through_the_rasteriser():
    """Render the patch index and per-patch UV, then find each visible vertex back: the pixel of its own
    patch whose rendered UV is nearest the vertex's UV must lie within 1.5 px of where it projects, and the
    pixel it projects to must carry its patch (away from patch seams)."""
    b, verts_img = _posed_image()
    gt = unwrap.render_patch_gt(b.atlas, verts_img, 320, 320)
    assert gt.patch.dtype == np.uint8 and set(np.unique(gt.patch)) <= set(range(25))
    assert (gt.mask == (gt.patch > 0)).all() and np.isnan(gt.u[~gt.mask]).all()
    raster = rasterize.rasterize(verts_img, b.triangles, np.zeros(len(verts_img)), 320, 320)
    atlas_img = verts_img[b.atlas.vertex_ids]
    seen = rasterize.visible_vertices(atlas_img, raster.depth, tol=1.0, margin=1, max_step=4.0)
    errors, checked = [], 0
    for p in range(1, 25):
        ids = np.flatnonzero(seen & (b.atlas.patch == p))
        if len(ids) == 0 or (gt.patch == p).sum() < 20:
            continue
        errors.append(rasterize.uv_readback_error(gt.u, gt.v, gt.patch == p, atlas_img, b.atlas.uv, ids))
        col, row = np.round(atlas_img[ids, :2]).astype(int).T
        interior = [(gt.patch[r - 1:r + 2, c - 1:c + 2] == p).all() for r, c in zip(row, col)]
        checked += int(np.sum(interior))
        assert all(gt.patch[r, c] == p for r, c, ok in zip(row, col, interior) if ok)
    errors = np.concatenate(errors)
    assert checked > 200 and len(errors) > 200
    assert np.median(errors) < 0.6 and np.percentile(errors, 95) < 1.5, (np.median(errors), errors.max())


def test_partition_refuses_a_segment_along_the_facing_direction():
    rng = np.random.default_rng(0)
    verts = np.stack([rng.normal(0, 0.01, 10), rng.normal(0, 0.01, 10), np.linspace(0, 1, 10)], axis=1)
    with pytest.raises(ValueError, match="facing"):
        unwrap.partition(verts, np.zeros(10, int), split=[0])
