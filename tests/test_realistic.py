"""The realistic synthetic style: ground truth stays on the face, renders are reproducible, face sizes span the
range, and every piece (head, lighting, occluders, scenes) does what its module says."""

from __future__ import annotations

import json

import numpy as np
import pytest

from densereg.data import datasets, groundtruth, lighting, occluders, realistic, scenes, synth
from densereg.geometry import head
from densereg.geometry.templates import builtin_face

SIZE = 128   # small renders keep the tests fast; the code paths are those of 256-px images


@pytest.fixture(scope="module")
def template():
    return builtin_face()


def _fitting(out, size):
    from densereg.data import formats

    return formats.Fitting(pose_para=out["pose_para"], shape_para=out["shape_para"], exp_para=out["exp_para"],
                           pt2d=out["landmarks"], roi=np.zeros(4), model="builtin")


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_dense_gt_covers_exactly_the_face_pixels_and_no_head_pixel(template, seed):
    out = realistic.render(template, np.random.default_rng(seed), SIZE, occluder_prob=0.0)
    gt = groundtruth.render_fitting(_fitting(out, SIZE), SIZE, SIZE, template)
    # The face is drawn last, so the pixels showing it are exactly the GT foreground ...
    np.testing.assert_array_equal(out["face_mask"], gt.mask)
    # ... and the head (skull, hair, ears, neck, shoulders) shows around it with no UV.
    assert out["head_mask"].sum() > 0.2 * gt.mask.sum()
    assert not (out["head_mask"] & gt.mask).any()
    assert np.isnan(gt.u[out["head_mask"]]).all()


@pytest.mark.parametrize("variant", sorted(realistic.VARIANTS))
def test_every_ablation_renders_with_the_same_ground_truth_rule(template, variant):
    drop = realistic.VARIANTS[variant]
    out = realistic.render(template, np.random.default_rng(7), SIZE, occluder_prob=0.0, drop=drop)
    gt = groundtruth.render_fitting(_fitting(out, SIZE), SIZE, SIZE, template)
    np.testing.assert_array_equal(out["face_mask"], gt.mask)
    assert out["head_mask"].any() == ("head" not in drop)
    assert variant in synth.STYLES


def test_an_unknown_change_is_refused(template):
    with pytest.raises(ValueError, match="renderer change"):
        realistic.render(template, np.random.default_rng(0), SIZE, drop=("hair-physics",))


def test_same_seed_same_image_other_seed_other_image(template):
    a = realistic.render(template, np.random.default_rng([5, 1]), SIZE)
    b = realistic.render(template, np.random.default_rng([5, 1]), SIZE)
    c = realistic.render(template, np.random.default_rng([5, 2]), SIZE)
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["landmarks"], b["landmarks"])
    assert not np.array_equal(a["image"], c["image"])


def test_face_sizes_span_40_px_to_most_of_the_frame_with_landmarks_inside(template):
    widths, inside = [], []
    for i in range(300):
        rng = np.random.default_rng([11, i])
        _, _, _, verts, _ = realistic.sample_face(template, rng, 256)
        lm = verts[template.landmarks, :2]
        widths.append(np.ptp(lm[:, 0]))
        inside.append((lm >= 0).all() and (lm <= 255).all())
    widths = np.array(widths)
    assert all(inside)
    assert widths.min() < 45 and widths.max() > 180           # an order of magnitude, as real benchmarks
    # log-uniform: each half of the log range holds a fair share of the faces
    mid = np.exp(np.log(scenes.FACE_WIDTH_PX).mean())
    assert 0.25 < np.mean(widths < mid) < 0.75


def test_head_has_every_part_and_each_hair_style(template):
    for style in head.HAIR_STYLES:
        h = head.build_head(np.random.default_rng(0), style)
        labels = set(h.labels.tolist())
        assert {head.HEAD_PARTS.index("skin"), head.HEAD_PARTS.index("clothes")} <= labels
        assert (head.HEAD_PARTS.index("hair") in labels) == (style != "bald")
        assert h.triangles.max() < len(h.vertices) and np.isfinite(h.vertices).all()
        clothes = h.triangles[h.labels == head.HEAD_PARTS.index("clothes")]
        assert h.body[clothes].all() and h.body.sum() == len(np.unique(clothes))   # the body is the shoulders
    with pytest.raises(ValueError, match="hair style"):
        head.build_head(np.random.default_rng(0), "mohawk")


def test_shoulders_turn_less_than_the_head_about_the_neck_base(template):
    person = head.build_head(np.random.default_rng(0))
    pose = np.array([0.0, np.radians(60), 0.0, 129.0, 128.0, 0.0, 40.0])     # a head turned 60 degrees
    verts = realistic.posed_head(person, pose, 256)
    rigid = realistic.camera.project_3ddfa(person.vertices, pose, 256)
    np.testing.assert_allclose(verts[~person.body], rigid[~person.body])
    width = np.ptp(verts[person.body, 0])
    frontal = np.ptp(realistic.camera.project_3ddfa(person.vertices[person.body], pose * [0, 0, 0, 1, 1, 1, 1],
                                                    256)[:, 0])
    assert width > 0.9 * frontal > 0.9 * np.ptp(rigid[person.body, 0])      # barely turned, unlike the head


def test_sh_lighting_is_uniform_under_ambience_and_brightest_facing_the_light():
    normals = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 1.0, 0.0]])
    ambient = np.zeros((9, 3))
    ambient[0] = 0.5 / 0.282095
    np.testing.assert_allclose(lighting.irradiance(normals, ambient), 0.5, rtol=1e-6)
    key = lighting.directional_sh([0.0, 1.0, 0.0], [1.0, 1.0, 1.0])   # light from above (y up)
    e = lighting.irradiance(normals, key)[:, 0]
    # image frame has y down: the normal (0, -1, 0) faces up, towards the light; (0, 1, 0) faces away
    assert e[2] == e.max() and e[3] == e.min()


@pytest.mark.parametrize("name", sorted(occluders.OCCLUDERS))
def test_every_occluder_covers_part_of_the_face(template, name):
    out = realistic.render(template, np.random.default_rng(4), SIZE, occluder_prob=0.0)
    lm = out["landmarks"]
    got, rgb, alpha = occluders.random_occluder(np.random.default_rng(0), lm, SIZE, SIZE, np.array([.6, .4, .3]),
                                                name=name)
    assert got == name and rgb.shape == (SIZE, SIZE, 3) and alpha.shape == (SIZE, SIZE)
    assert 0 <= alpha.min() and alpha.max() <= 1 and 0 <= rgb.min() and rgb.max() <= 1
    x0, y0 = np.floor(lm.min(0)).astype(int)
    x1, y1 = np.ceil(lm.max(0)).astype(int)
    face_cover = (alpha[max(y0, 0):y1 + 1, max(x0, 0):x1 + 1] > 0.5).mean()
    assert 0.01 < face_cover < 0.9


def test_scenes_give_every_kind_and_camera_output_is_uint8():
    kinds = {scenes.background(np.random.default_rng(i), 64, 64)[1] for i in range(30)}
    assert kinds == set(scenes.SCENE_KINDS)
    image = scenes.camera(np.random.default_rng(0), np.full((32, 32, 3), 0.5, np.float32), harsh=True)
    assert image.dtype == np.uint8 and image.shape == (32, 32, 3)


def test_synth_style_realistic_writes_a_readable_benchmark(tmp_path, template):
    root = tmp_path / "bench"
    synth.generate(root, seed=1, counts={"train": 2, "test": 2, "helen": 1}, workers=1, progress=False,
                   style="realistic")
    assert json.loads((root / "synth.json").read_text())["style"] == "realistic"
    samples = datasets.load_dataset("300w", root, "test")
    assert len(samples) == 2
    gt = groundtruth.dense_gt(samples[0], template)
    assert gt.mask.any() and np.isfinite(gt.u[gt.mask]).all()
    with pytest.raises(KeyError, match="style"):
        synth.generate(tmp_path / "other", counts={"train": 1, "test": 0, "helen": 0}, style="cartoon")
    assert not (tmp_path / "other").exists()
