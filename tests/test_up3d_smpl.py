"""The real body path on stand-ins written in the real formats: an SMPL .npz as smplx users have it, and a
UP-3D folder with fits as plain-array .npz. Patching + MDS run on that mesh; fits render to patch / UV GT."""

from __future__ import annotations

import numpy as np
import pytest

from densereg.data import formats, synth_body, up3d
from densereg.geometry import body, smpl

# Which SMPL joint carries each procedural segment in the stand-in.
_REP = {"torso": "spine1", "head": "head", "upper_arm_l": "L_shoulder", "lower_arm_l": "L_elbow",
        "hand_l": "L_wrist", "upper_arm_r": "R_shoulder", "lower_arm_r": "R_elbow", "hand_r": "R_wrist",
        "upper_leg_l": "L_hip", "lower_leg_l": "L_knee", "foot_l": "L_ankle", "upper_leg_r": "R_hip",
        "lower_leg_r": "R_knee", "foot_r": "R_ankle"}
_PARENTS = [0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]


def write_stand_in_smpl(path):
    """A small mesh in SMPL's .npz format: the coarse procedural body with SMPL's 24-joint tree."""
    b = body.make_body(rings=6, around=8)
    rep = np.array([smpl.SMPL_JOINTS.index(_REP[name]) for name in body.JOINTS])
    weights = np.eye(24)[rep[b.segment]]
    targets = {smpl.SMPL_JOINTS.index(_REP[n]): b.joints[j] for j, n in enumerate(body.JOINTS)}
    J = np.zeros((24, len(b.verts)))
    for j in range(24):
        target = targets.get(j, np.array([0.0, 1.0, 0.0]))
        J[j, np.argmin(np.linalg.norm(b.verts - target, axis=1))] = 1.0
    kintree = np.stack([np.array([2**32 - 1] + _PARENTS, np.uint32), np.arange(24, dtype=np.uint32)])
    rng = np.random.default_rng(0)
    np.savez(path, v_template=b.verts, shapedirs=rng.normal(0, 0.002, (len(b.verts), 3, 10)),
             posedirs=np.zeros((len(b.verts), 3, 207)), J_regressor=J, weights=weights, kintree_table=kintree,
             f=b.triangles.astype(np.int32))
    return path


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory):
    return smpl.load_smpl(write_stand_in_smpl(tmp_path_factory.mktemp("smpl") / "SMPL_NEUTRAL.npz"))


def test_smpl_npz_poses_and_is_cut_into_the_24_patches(stand_in):
    np.testing.assert_allclose(stand_in.posed(np.zeros(72)), stand_in.v_template, atol=1e-12)
    pose = np.zeros((24, 3))
    pose[0] = [0, np.pi / 2, 0]                   # a quarter turn about y at the pelvis joint
    turned = stand_in.posed(pose)
    pelvis = stand_in.joints()[0]
    expect = (stand_in.v_template - pelvis) @ body.rodrigues(pose[0]).T + pelvis
    np.testing.assert_allclose(turned, expect, atol=1e-9)
    atlas = stand_in.atlas()                     # partition + MDS on this mesh, not the procedural one
    assert atlas.n_patches == 24 and set(np.unique(atlas.patch)) == set(range(1, 25))
    assert atlas.uv.min() >= 0 and atlas.uv.max() <= 1


def test_smpl_refuses_pickles_and_missing_keys(tmp_path):
    bad = tmp_path / "pickled.npz"
    np.savez(bad, v_template=np.zeros((3, 3)), shapedirs=np.zeros((3, 3, 1)), posedirs=np.zeros((3, 3, 207)),
             J_regressor=np.array([{"sparse": 1}], dtype=object), weights=np.zeros((3, 24)),
             kintree_table=np.zeros((2, 24)), f=np.zeros((1, 3), int))
    with pytest.raises(smpl.SMPLError, match="pickled.npz.*pickled objects"):
        smpl.load_smpl(bad)
    np.savez(tmp_path / "short.npz", v_template=np.zeros((3, 3)))
    with pytest.raises(smpl.SMPLError, match="short.npz.*missing"):
        smpl.load_smpl(tmp_path / "short.npz")


def write_up3d(folder, n=2, pickle_only=()):
    """A UP-3D folder: images, fits as .npz (or only a .pkl for the indices in ``pickle_only``), test.txt."""
    folder.mkdir(parents=True)
    lines = []
    for i in range(n):
        name = f"{i:05d}"
        formats.write_image(folder / f"{name}_image.png", np.full((160, 120, 3), 90, np.uint8))
        if i in pickle_only:
            (folder / f"{name}_body.pkl").write_bytes(b"\x80\x02}q\x00.")
        else:
            pose = np.zeros(72)
            pose[:3] = [np.pi, 0.0, 0.0]          # SMPLify's upright, camera-facing start
            np.savez(folder / f"{name}_body.npz", pose=pose, betas=np.zeros(10), trans=np.array([0.0, -0.9, 0.0]),
                     t=np.array([0.0, 0.0, 4.0 + i]), rt=np.zeros(3), f=np.array(150.0))
        lines.append(f"/{name}_image.png")
    (folder / "test.txt").write_text("\n".join(lines) + "\n")
    return folder


def test_up3d_fit_renders_upright_camera_facing_patches(stand_in, tmp_path):
    root = write_up3d(tmp_path / "data" / "up-3d")
    samples = up3d.read_up3d(tmp_path / "data", "test")
    assert [s.name for s in samples] == ["00000", "00001"]
    gt = up3d.fit_gt(samples[0], stand_in, (160, 120))
    assert gt.mask.sum() > 500
    names = body.patch_names()
    rows = {n: np.nonzero(gt.patch == names.index(n))[0] for n in ("head_front", "foot_l", "foot_r", "torso_front")}
    assert rows["head_front"].size and rows["torso_front"].size              # the front faces the camera
    assert (gt.patch == names.index("torso_back")).sum() < 0.1 * rows["torso_front"].size   # at most at the sides
    assert rows["head_front"].mean() < rows["torso_front"].mean() < rows["foot_l"].mean()   # upright
    # the person's left (SMPL +x) is on the image's right when they face the camera
    assert np.nonzero(gt.patch == names.index("hand_l"))[1].mean() > np.nonzero(gt.patch == names.index("hand_r"))[1].mean()
    # converted into the native layout, readable by the body harness
    out = up3d.convert(root, _save(stand_in, tmp_path), tmp_path / "native")
    native = synth_body.load_body(out, "test")
    stored, params = synth_body.read_body_gt(native[0].extras["gt"])
    assert params["model"] == "smpl" and (stored.patch == gt.patch).all()
    half = synth_body.render_sample_gt(native[0], (80, 60), (0.5, 0.5))
    assert half.patch.shape == (80, 60) and half.mask.any()


def _save(model, tmp_path):
    path = tmp_path / "again.npz"
    parents = model.parents.astype(np.int64)
    np.savez(path, v_template=model.v_template, shapedirs=model.shapedirs, posedirs=model.posedirs,
             J_regressor=model.J_regressor, weights=model.weights,
             kintree_table=np.stack([parents, np.arange(24)]), f=model.faces)
    return path


def test_up3d_refuses_pickled_fits_by_name(tmp_path):
    write_up3d(tmp_path / "up-3d", pickle_only=(1,))
    with pytest.raises(formats.DatasetError, match="00001_body.npz.*does not unpickle"):
        up3d.read_up3d(tmp_path / "up-3d", "test")
    with pytest.raises(formats.DatasetError, match="val.txt"):
        up3d.read_up3d(tmp_path / "up-3d", "val")
