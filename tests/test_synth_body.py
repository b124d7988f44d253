"""The synthetic body set: written in its documented layout, read back, and its stored pose + camera
re-render exactly the stored ground truth (so the .npz says what the image shows)."""

from __future__ import annotations

import numpy as np
import pytest

from densereg.data import formats, synth_body
from densereg.geometry import body, camera, unwrap


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("body") / "set"
    synth_body.generate(root, seed=3, counts={"train": 3, "test": 2}, workers=1)
    return root


def test_layout_and_manifest(tiny_set):
    train = synth_body.load_body(tiny_set, "train")
    assert [s.name for s in train] == ["train/00000", "train/00001", "train/00002"]
    assert len(synth_body.load_body(tiny_set, "test")) == 2
    manifest = synth_body.ensure_body_synthetic(tiny_set, seed=3, counts={"train": 3, "test": 2})
    assert manifest == tiny_set                      # up to date: not regenerated


def test_stored_pose_and_camera_rerender_the_stored_gt(tiny_set):
    for sample in synth_body.load_body(tiny_set, "test"):
        gt, params = synth_body.read_body_gt(sample.extras["gt"])
        image = sample.image()
        assert image.shape == gt.patch.shape + (3,) and gt.mask.mean() > 0.05
        model = body.procedural_body()
        verts = camera.project_ortho(model.posed(params["pose"]), np.eye(3), *params["camera"])
        again = unwrap.render_patch_gt(model.atlas, verts, *gt.patch.shape)
        np.testing.assert_array_equal(again.patch, gt.patch)
        np.testing.assert_allclose(again.u[gt.mask], gt.u[gt.mask], atol=1e-6)


def test_generation_is_deterministic(tiny_set, tmp_path):
    synth_body.generate(tmp_path / "again", seed=3, counts={"train": 3, "test": 2}, workers=2)
    a = synth_body.read_body_gt(tiny_set / "test" / "00001.npz")[0]
    b = synth_body.read_body_gt(tmp_path / "again" / "test" / "00001.npz")[0]
    np.testing.assert_array_equal(a.patch, b.patch)


def test_bad_files_are_named(tiny_set, tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, patch=np.zeros((4, 4), np.uint8))
    with pytest.raises(formats.DatasetError, match="bad.npz.*missing arrays"):
        synth_body.read_body_gt(bad)
    lonely = tmp_path / "x" / "test"
    lonely.mkdir(parents=True)
    formats.write_image(lonely / "00000.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(formats.DatasetError, match="00000.png.*missing"):
        synth_body.load_body(tmp_path / "x", "test")
    with pytest.raises(FileExistsError, match="body.json"):
        synth_body.generate(tmp_path / "x", counts={"train": 1, "test": 1}, workers=1)
