"""The baselines generalised to the ears' 55 points: MDM's network and loss, mirroring, the DPM's facing proxy.

What is proved: an MDM of 55 points runs and its loss divides by the GT box's average edge (the ears
protocol) while 68-point faces keep the outer-eye distance; a mirrored ear keeps its indices (a left ear is
the mirror image of a right one) while faces are re-ordered; the DPM splits its components by the side the
helix root is on, as it does faces by the nose.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.baselines import dpm_train, mdm
from densereg.geometry import mirror

TINY = mdm.make_config("tiny")


def _ear(rng):
    from densereg.data.synth_ears import canonical_ear

    return canonical_ear() * 80 + 100 + rng.normal(0, 1, (55, 2))


def test_mdm_runs_with_55_points():
    net = mdm.MDMNet(TINY, n_points=55)
    frames = torch.rand(2, 3, TINY.frame_size, TINY.frame_size)
    start = torch.full((2, 55, 2), TINY.frame_size / 2.0) + torch.randn(2, 55, 2)
    steps = net(frames, start)
    assert len(steps) == TINY.steps and steps[-1].shape == (2, 55, 2)


def test_mdm_loss_normalises_ears_by_the_box_and_faces_by_the_eyes():
    rng = np.random.default_rng(0)
    target = torch.from_numpy(_ear(rng)[None])
    moved = target + torch.tensor([3.0, 4.0])      # every point 5 px off
    box = (target[0].amax(0) - target[0].amin(0)).mean()
    assert mdm.mdm_loss([moved], target)["loss"].item() == pytest.approx(5.0 / box.item())
    face = torch.rand(1, 68, 2) * 100
    eyes = torch.linalg.vector_norm(face[0, 36] - face[0, 45])
    assert mdm.mdm_loss([face + torch.tensor([3.0, 4.0])], face)["loss"].item() == pytest.approx(5.0 / eyes.item())


def test_a_mirrored_ear_keeps_its_indices_and_a_face_does_not():
    rng = np.random.default_rng(1)
    ear_pts = _ear(rng)
    flipped = mirror.mirror_landmarks(ear_pts, 256)
    assert np.allclose(flipped[:, 0], 255 - ear_pts[:, 0]) and np.allclose(flipped[:, 1], ear_pts[:, 1])
    face = rng.uniform(0, 200, (68, 2))
    assert np.allclose(mirror.mirror_landmarks(face, 256)[0], [255 - face[16, 0], face[16, 1]])
    with pytest.raises(KeyError, match="landmark count"):
        mirror.mirror_landmarks(face[:10], 256)


def test_dpm_components_split_ears_by_the_helix_root_side():
    rng = np.random.default_rng(2)
    right = _ear(rng)
    left = mirror.mirror_landmarks(right, 256)
    box = lambda p: np.r_[p.min(0), p.max(0)]   # noqa: E731
    assert dpm_train._yaw_proxy(right, box(right)) > 0.1
    assert dpm_train._yaw_proxy(left, box(left)) == pytest.approx(-dpm_train._yaw_proxy(right, box(right)))
    assert dpm_train._yaw_proxy(right[:40], box(right)) == 0.0
