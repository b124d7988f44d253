"""DenseReg on ear UV: TPS training targets through the one training loop, the reference ear kept in the
checkpoint, and the 55-point read-out from a UV field.

What is proved: an ears config trains on thin-plate-spline targets (not 3D fittings) whose UV is the
reference ear's at the landmarks; the checkpoint carries that reference and ``DenseReg.load`` reads landmarks
against it; the face read-out (``densereg.readout``) with the ear template recovers the 55 landmarks of an
exact TPS field to sub-pixel accuracy.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from densereg.data import datasets, groundtruth, synth_ears
from densereg.geometry import ear
from densereg.nn import train
from densereg.nn.config import make_config
from densereg.readout.faces import find_faces


@pytest.fixture(scope="module")
def ear_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("ears")
    synth_ears.generate(root, seed=1, counts={"train": 6, "test": 2}, progress=False)
    return root


def test_an_ears_config_trains_on_tps_targets(ear_root):
    cfg = make_config("tiny", dataset="ears", source="synthetic", root=str(ear_root), crop=96, image_scale=0.5)
    assert cfg.template == "ear"
    samples = train.training_samples(cfg)
    batches = train.TrainingBatches(samples, cfg)
    assert isinstance(batches.targets, groundtruth.EarTargets)
    reference = ear.reference_ear([s.landmarks for s in samples])
    assert np.allclose(batches.targets.reference, reference)
    example = batches.example(0, 0)
    assert example["mask"].sum() > 50
    u = example["u"][example["mask"]]
    assert np.isfinite(u).all() and u.min() >= 0 and u.max() <= 1
    assert np.isnan(example["u"][~example["mask"]]).all()


def test_ear_targets_follow_the_image_scale(ear_root):
    samples = datasets.load_dataset("ears", ear_root, "train")
    targets = groundtruth.EarTargets(samples)
    s = samples[0]
    h, w = s.image().shape[:2]
    gt = targets(s, (h, w), (h // 2, w // 2))
    assert gt.u.shape == (h // 2, w // 2)
    for k in (25, 40, 52):
        c, r = np.round((s.landmarks[k] + 0.5) / 2 - 0.5).astype(int)
        assert np.hypot(gt.u[r, c] - targets.reference[k, 0], gt.v[r, c] - targets.reference[k, 1]) < 0.05


def test_face_configs_still_ask_for_fittings(ear_root):
    samples = datasets.load_dataset("ears", ear_root, "train")
    with pytest.raises(ValueError, match="no 3D fitting"):
        train.TrainingBatches(samples, make_config("tiny", source="synthetic"))


def test_a_checkpoint_with_the_reference_ear_loads_as_an_ear_model(ear_root, tmp_path):
    from densereg import DenseReg
    from densereg.nn.checkpoint import save_checkpoint
    from densereg.nn.tasks import build_model

    cfg = make_config("tiny", dataset="ears", source="synthetic", root=str(ear_root))
    model = build_model(cfg)
    reference = ear.reference_ear([s.landmarks for s in datasets.load_dataset("ears", ear_root, "train")])
    state = train._state(model, torch.optim.SGD(model.parameters(), lr=0.1), cfg.iterations, cfg, "fp",
                         reference=reference)
    save_checkpoint(tmp_path / "last.pt", state)
    loaded = DenseReg.load(tmp_path / "last.pt", device="cpu")
    assert isinstance(loaded.template, ear.EarTemplate) and np.allclose(loaded.template.landmark_uv, reference)
    del state["template_landmarks"]
    save_checkpoint(tmp_path / "bad.pt", state)
    with pytest.raises(ValueError, match="bad.pt.*no template_landmarks"):
        DenseReg.load(tmp_path / "bad.pt", device="cpu")


@pytest.mark.slow
def test_the_checkpoint_keeps_the_reference_ear(ear_root, tmp_path):
    from densereg import DenseReg

    cfg = make_config("tiny", dataset="ears", source="synthetic", root=str(ear_root), crop=64, image_scale=0.5)
    last = train.train(cfg, tmp_path / "run", progress=False)
    state = torch.load(last, weights_only=True)
    assert state["template_landmarks"].shape == (55, 2)
    model = DenseReg.load(last, device="cpu")
    assert isinstance(model.template, ear.EarTemplate)
    assert np.allclose(model.template.landmark_uv, state["template_landmarks"].numpy())
    sample = datasets.load_dataset("ears", ear_root, "test")[0]
    found = model.landmarks(sample.image())
    assert all(p.shape == (55, 2) for p in found)     # 4 steps of training: maybe no ear, never a wrong shape


class _Field:
    def __init__(self, gt):
        self.u, self.v, self.mask, self.fg_prob = gt.u, gt.v, gt.mask, gt.mask.astype(np.float32)


def test_readout_recovers_the_landmarks_of_an_exact_tps_field(ear_root):
    samples = datasets.load_dataset("ears", ear_root, "train")
    reference = ear.reference_ear([s.landmarks for s in samples])
    template = ear.EarTemplate(reference)
    errors = []
    for s in samples[:3]:
        gt = ear.ear_gt(s.landmarks, reference, *s.image().shape[:2])
        faces = find_faces(_Field(gt), template, None)
        assert len(faces) == 1
        errors.append(np.linalg.norm(faces[0].landmarks - s.landmarks, axis=1))
    errors = np.concatenate(errors)
    assert np.median(errors) < 0.5 and np.percentile(errors, 95) < 1.5, (np.median(errors), errors.max())
