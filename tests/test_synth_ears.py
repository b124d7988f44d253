"""Synthetic ears (``densereg.data.synth_ears``) read back through the real iBUG ears reader.

What is proved: the files are written in Collection A's layout and PTS format and the real reader gives back
the rendered images and landmarks (to the format's 3 decimals); left and right ears both occur and are
mirror images in the markup; every synthetic ear goes through the TPS ground truth; the set is cached by its
manifest and regenerated only when stale; a folder the generator did not write is never replaced.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from densereg.data import datasets, formats, synth_ears
from densereg.geometry import ear


@pytest.fixture(scope="module")
def ear_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("ears")
    synth_ears.generate(root, seed=5, counts={"train": 4, "test": 3}, progress=False)
    return root


def test_round_trip_through_the_real_reader(ear_root):
    for split, n in (("train", 4), ("test", 3)):
        samples = datasets.load_dataset("ears", ear_root, split)
        assert [s.name for s in samples] == [f"{split}/{split}_{i:04d}" for i in range(n)]
        for i, s in enumerate(samples):
            image, pts, _ = synth_ears.render_ear(np.random.default_rng([5, synth_ears.SPLIT_IDS[split], i]))
            assert np.array_equal(s.image(), image)
            assert s.landmarks.shape == (55, 2) and np.abs(s.landmarks - pts).max() <= 5e-4 + 1e-9
            assert np.allclose(s.box, np.r_[s.landmarks.min(0), s.landmarks.max(0)])
    text = (ear_root / "ears" / "train" / "train_0000.txt").read_text()
    assert text.startswith("version: 1\nn_points: 55\n{\n") and text.endswith("}\n")


def test_left_and_right_ears_are_mirror_images():
    lefts = [synth_ears.place(synth_ears.canonical_ear(), np.random.default_rng(i), 256)[1] for i in range(40)]
    assert 5 < sum(lefts) < 35
    shape = synth_ears.canonical_ear()
    reference = ear.canonical_pose(shape)
    assert np.allclose(ear.canonical_pose(shape * [-1, 1]), reference)
    assert reference[ear.HELIX_ROOT, 0] > 0.5         # the canonical ear faces the same way as the reference


def test_synthetic_ears_go_through_the_tps_ground_truth(ear_root):
    samples = datasets.load_dataset("ears", ear_root, "train")
    reference = ear.reference_ear([s.landmarks for s in samples])
    for s in samples:
        gt = ear.ear_gt(s.landmarks, reference, *s.image().shape[:2])
        assert gt.mask.sum() > 1000
        r, c = np.round(s.landmarks[40, ::-1]).astype(int)
        assert gt.mask[r, c] and abs(gt.u[r, c] - reference[40, 0]) < 0.03


def test_cached_by_manifest_and_rebuilt_when_stale(tmp_path, monkeypatch):
    calls = []
    real = synth_ears.generate
    monkeypatch.setattr(synth_ears, "generate", lambda *a, **k: calls.append(a) or real(*a, **k))
    counts = {"train": 1, "test": 1}
    synth_ears.ensure_ears(tmp_path, counts=counts)
    synth_ears.ensure_ears(tmp_path, counts=counts)
    assert len(calls) == 1
    manifest = json.loads((tmp_path / "ears" / synth_ears.MANIFEST).read_text())
    assert manifest["counts"] == counts
    synth_ears.ensure_ears(tmp_path, counts={"train": 2, "test": 1})
    assert len(calls) == 2 and len(datasets.load_dataset("ears", tmp_path, "train")) == 2


def test_a_foreign_ears_folder_is_never_replaced(tmp_path):
    (tmp_path / "ears" / "train").mkdir(parents=True)
    formats.atomic_write_bytes(tmp_path / "ears" / "train" / "mine.txt", b"x")
    with pytest.raises(FileExistsError, match="not made by"):
        synth_ears.generate(tmp_path, counts={"train": 1, "test": 1}, progress=False)
    assert (tmp_path / "ears" / "train" / "mine.txt").read_bytes() == b"x"
