"""Tests of our DPM face detector: distance transform, NMS, the latent feature vector, the SVM, persistence,
and a small end-to-end train/detect run on generated face-like patterns (CLI included). HOG: tests/test_hog.py."""

import json

import cv2
import numpy as np
import pytest

from benchmarks.baselines import distance_transform, dpm, dpm_config, dpm_train, hog
from densereg.data.datasets import Sample, load_dataset
from densereg.data.formats import write_pts

# ------------------------------------------------------------------------------------------------------------
# Distance transform, boxes


@pytest.mark.parametrize("seed", range(5))
def test_distance_transform_1d_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    values, a, b = rng.normal(size=n), rng.uniform(0.01, 3.0), rng.normal()
    out, arg = distance_transform.distance_transform_1d(values, a, b)
    q = np.arange(n)
    brute = np.array([np.max(values - a * (q - p) ** 2 - b * (q - p)) for p in range(n)])
    np.testing.assert_allclose(out, brute, atol=1e-12)
    np.testing.assert_allclose(values[arg] - a * (arg - q) ** 2 - b * (arg - q), brute, atol=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_distance_transform_2d_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(9, 13))
    deformation = np.array([rng.normal(), rng.uniform(0.02, 1), rng.normal(), rng.uniform(0.02, 1)])
    ys, xs = np.mgrid[0:9, 0:13]
    brute = np.empty((9, 13))
    for p in range(9):
        for r in range(13):
            dy, dx = ys - p, xs - r
            cost = deformation[0] * dx + deformation[1] * dx ** 2 + deformation[2] * dy + deformation[3] * dy ** 2
            brute[p, r] = np.max(values - cost)
    out, iy, ix = distance_transform.distance_transform_2d(values, deformation)
    np.testing.assert_allclose(out, brute, atol=1e-12)
    dy, dx = iy - ys, ix - xs
    achieved = values[iy, ix] - (deformation[0] * dx + deformation[1] * dx ** 2 + deformation[2] * dy
                                 + deformation[3] * dy ** 2)
    np.testing.assert_allclose(achieved, brute, atol=1e-12)
    # the subsampled evaluation used when scanning roots (step 2) picks the same entries
    sub, sub_y, sub_x = distance_transform.distance_transform_2d(values, deformation, origin=(1, 2), shape=(4, 5), step=2)
    np.testing.assert_allclose(sub, out[1:9:2, 2:12:2][:4, :5])
    assert np.array_equal(sub_y, iy[1:9:2, 2:12:2][:4, :5]) and np.array_equal(sub_x, ix[1:9:2, 2:12:2][:4, :5])
    with pytest.raises(ValueError, match="positive"):
        distance_transform.distance_transform_2d(values, [0, 0, 0, 1])


def test_box_iou_and_nms_on_hand_made_boxes():
    boxes = np.array([[0, 0, 10, 10],      # best
                      [1, 1, 11, 11],      # IoU 0.68 with the best: suppressed
                      [20, 20, 30, 30],    # disjoint: kept
                      [5, 0, 15, 10],      # IoU 1/3 with the best: kept at 0.5, suppressed at 0.3
                      [21, 21, 29, 29]])   # inside the second kept box, IoU 0.64: suppressed
    scores = np.array([5.0, 4.0, 3.0, 2.0, 1.0])
    assert dpm.box_iou(boxes[0], boxes[1:2])[0] == pytest.approx(81 / 119)
    assert dpm.box_iou(boxes[0], boxes[3:4])[0] == pytest.approx(1 / 3)
    assert dpm.nms(boxes, scores, 0.5).tolist() == [0, 2, 3]
    assert dpm.nms(boxes, scores, 0.3).tolist() == [0, 2]
    assert dpm.nms(boxes, scores[::-1], 0.5).tolist() == [4, 3, 1]   # order follows the scores
    assert dpm.nms(boxes, scores, 0.5, max_keep=2).tolist() == [0, 2]
    assert dpm.nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []


# ------------------------------------------------------------------------------------------------------------
# The model: latent feature vectors, SVM, persistence


def _random_detector(seed=0, n_parts=3):
    rng = np.random.default_rng(seed)
    config = dpm_config.DPMConfig(interval=3, n_parts=n_parts, n_components=2)
    components = []
    for rh, rw in [(4, 3), (3, 4)]:
        components.append(dpm.Component(
            root=rng.normal(size=(rh, rw, hog.FEATURE_DIM)).astype(np.float32), bias=float(rng.normal()),
            parts=rng.normal(size=(n_parts, 3, 3, hog.FEATURE_DIM)).astype(np.float32),
            anchors=rng.integers(1, 2 * min(rh, rw) - 3 + 2, size=(n_parts, 2)),
            deformation=np.column_stack([rng.normal(size=n_parts), rng.uniform(0.05, 0.5, n_parts),
                                         rng.normal(size=n_parts), rng.uniform(0.05, 0.5, n_parts)]),
            bbox_reg=rng.normal(scale=0.05, size=(1 + 2 * n_parts, 4))))
    return dpm.DPMDetector(components, config)


def test_placement_feature_vector_reproduces_the_score():
    """The latent SVM's premise: score(placement) = w · φ(placement) + bias, with parts at their DT optimum."""
    detector = _random_detector()
    image = np.random.default_rng(5).integers(0, 256, (80, 96, 3)).astype(np.uint8)
    pyr = detector.pyramid(image)
    for k in (0, 2):
        for c, (score, part_y, part_x) in detector.score_level(pyr, k).items():
            comp = detector.components[c]
            for y, x in [(0, 0), (score.shape[0] // 2, score.shape[1] - 1), (score.shape[0] - 1, 1)]:
                phi = detector._placement_features(pyr, k, c, y, x, part_y[:, y, x], part_x[:, y, x])
                assert phi.size == comp.weights().size
                assert float(phi @ comp.weights()) + comp.bias == pytest.approx(score[y, x], rel=1e-4, abs=1e-3)
                # any other placement of a part scores no better (the DT found the maximum)
                moved_y = part_y[:, y, x].copy()
                moved_y[0] += 1
                if moved_y[0] + comp.parts.shape[1] <= pyr.part_map(k).shape[0]:
                    other = detector._placement_features(pyr, k, c, y, x, moved_y, part_x[:, y, x])
                    assert float(other @ comp.weights()) + comp.bias <= score[y, x] + 1e-3


def test_scoring_a_region_matches_the_full_scan():
    detector = _random_detector(seed=1)
    for comp in detector.components:   # stiff springs: optimal parts stay near their anchors, as in trained models
        comp.deformation[:, [1, 3]] = 2.0
    image = np.random.default_rng(6).integers(0, 256, (96, 112, 3)).astype(np.uint8)
    pyr = detector.pyramid(image)
    full = detector.score_level(pyr, 1)
    part = detector.score_level(pyr, 1, region=(2, 5, 3, 7))
    for c, (score, part_y, part_x) in part.items():
        ref_score, ref_y, ref_x = (a[..., 2:2 + score.shape[0], 3:3 + score.shape[1]] for a in full[c])
        assert np.all(score <= ref_score + 1e-6)             # parts move within a window: never better
        same = np.all((part_y == ref_y) & (part_x == ref_x), axis=0)
        assert same.mean() > 0.5                               # and mostly the same optimum
        np.testing.assert_allclose(score[same], ref_score[same], rtol=1e-5)


def test_component_weights_round_trip_and_deformation_floor():
    comp = _random_detector().components[0]
    w = comp.weights()
    before = (comp.root.copy(), comp.parts.copy(), comp.deformation.copy())
    comp.set_weights(w, 1.5)
    assert np.array_equal(comp.root, before[0]) and np.array_equal(comp.parts, before[1])
    np.testing.assert_allclose(comp.deformation, before[2], rtol=1e-6)
    w[-4:] = [0.3, -1.0, 0.2, 0.0]   # last part: negative / zero quadratic weights are lifted to the floor
    comp.set_weights(w, 0.0)
    assert comp.deformation[-1].tolist() == pytest.approx([0.3, dpm.MIN_QUADRATIC_DEFORMATION, 0.2,
                                                           dpm.MIN_QUADRATIC_DEFORMATION])


def test_svm_solves_the_hinge_problem_with_a_regularised_bias():
    rng = np.random.default_rng(0)
    pos = rng.normal(loc=1.0, size=(60, 5)).astype(np.float32)
    neg = rng.normal(loc=-1.0, size=(80, 5)).astype(np.float32)
    config = dpm_config.DPMConfig(svm_c=0.5, svm_epochs=5000, svm_tol=1e-6, bias_feature=1.0)
    w, b = dpm_train._train_svm(pos, neg, config, seed=0)
    x = np.concatenate([pos, neg]).astype(np.float64)
    y = np.r_[np.ones(60), -np.ones(80)]

    def objective(w, b):   # the bias is the weight of a constant feature of value 1, so it is regularised
        return 0.5 * (w @ w + b * b) + config.svm_c * np.maximum(0, 1 - y * (x @ w + b)).sum()

    assert np.mean(np.sign(x @ w + b) == y) > 0.9
    best = objective(w, b)
    for _ in range(500):   # no nearby point does better: the (convex) problem's minimum
        dw, db = rng.normal(scale=1e-3, size=5), rng.normal(scale=1e-3)
        assert objective(w + dw, b + db) >= best - 1e-6


def test_save_load_round_trip_and_errors(tmp_path):
    detector = _random_detector()
    image = np.random.default_rng(2).integers(0, 256, (80, 96, 3)).astype(np.uint8)
    path = detector.save(tmp_path / "m.npz")
    loaded = dpm.DPMDetector.load(path)
    assert loaded.config == detector.config
    a, b = detector.detect(image, threshold=-np.inf), loaded.detect(image, threshold=-np.inf)
    assert len(a) == len(b) > 0
    for (box_a, score_a), (box_b, score_b) in zip(a, b):
        np.testing.assert_allclose(box_a, box_b)
        assert score_a == pytest.approx(score_b)
    assert [s for _, s in a] == sorted((s for _, s in a), reverse=True)
    assert not list(tmp_path.glob(".*tmp"))   # atomic write leaves no temporary file
    with pytest.raises(FileNotFoundError, match="benchmarks.baselines.dpm_train"):
        dpm.DPMDetector.load(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    np.savez(bad, format_version=np.array(dpm.FORMAT_VERSION))
    with pytest.raises(ValueError, match="bad.npz.*missing array"):
        dpm.DPMDetector.load(bad)
    bad.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="bad.npz.*unreadable"):
        dpm.DPMDetector.load(bad)


def test_config_preset_lookup():
    assert dpm_config.config_preset("cpu").interval == 5
    assert dpm_config.config_preset("paper") == dpm_config.DPMConfig()
    assert dpm_config.config_preset("cpu", seed=3).seed == 3
    with pytest.raises(KeyError, match="cpu, paper"):
        dpm_config.config_preset("fast")


# ------------------------------------------------------------------------------------------------------------
# End to end on generated "faces": a bright ellipse with two dark eyes and a mouth, on clutter


def _scene(rng, size=96):
    """An image with one face-like pattern on random clutter, its box and 68 stand-in landmarks."""
    img = np.full((size, size, 3), rng.uniform(60, 140, 3), np.float32)
    for _ in range(10):   # clutter: rectangles, plain bright ellipses, lines
        colour = rng.uniform(0, 255, 3).tolist()
        x, y = rng.integers(0, size, 2)
        kind = rng.integers(3)
        if kind == 0:
            cv2.rectangle(img, (int(x), int(y)), (int(x + rng.integers(5, 30)), int(y + rng.integers(5, 30))),
                          colour, -1)
        elif kind == 1:
            cv2.ellipse(img, (int(x), int(y)), (int(rng.integers(5, 15)), int(rng.integers(5, 20))), 0, 0, 360,
                        colour, -1)
        else:
            cv2.line(img, (int(x), int(y)), tuple(int(v) for v in rng.integers(0, size, 2)), colour, 2)
    a = rng.uniform(17, 23)
    b = 1.25 * a
    cx, cy = rng.uniform(a + 4, size - a - 4), rng.uniform(b + 4, size - b - 4)
    yaw = rng.uniform(-0.15, 0.15)   # shifts the inner features sideways, like a turned head
    c = lambda px, py: (int(round(cx + px + yaw * a)), int(round(cy + py)))
    cv2.ellipse(img, (int(round(cx)), int(round(cy))), (int(round(a)), int(round(b))), 0, 0, 360,
                (235, 205, 180), -1)
    for side in (-1, 1):
        cv2.ellipse(img, c(side * 0.42 * a, -0.25 * b), (max(2, int(0.2 * a)), max(2, int(0.12 * b))), 0, 0, 360,
                    (20, 20, 30), -1)
    cv2.ellipse(img, c(0, 0.48 * b), (int(0.45 * a), max(2, int(0.1 * b))), 0, 0, 360, (90, 20, 30), -1)
    cv2.line(img, c(0, -0.1 * b), c(0, 0.2 * b), (120, 80, 70), 2)
    img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
    angles = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    landmarks = np.column_stack([cx + a * np.cos(angles), cy + b * np.sin(angles)])
    landmarks[30] = (cx + yaw * a, cy + 0.2 * b)   # "nose tip"
    return img, np.array([cx - a, cy - b, cx + a, cy + b])


def _write_tree(root, n_train, n_test, seed):
    """A tiny 300W-layout tree of generated scenes: train faces in afw/, test faces in 300W/01_Indoor."""
    rng = np.random.default_rng(seed)
    for folder in ("afw", "helen/trainset", "lfpw/trainset", "300W/01_Indoor", "300W/02_Outdoor"):
        (root / "300W" / folder).mkdir(parents=True, exist_ok=True)
    for folder, n in (("afw", n_train), ("300W/01_Indoor", n_test)):
        for i in range(n):
            img, box = _scene(rng)
            stem = root / "300W" / folder / f"scene_{i:03d}"
            cv2.imwrite(str(stem.with_suffix(".png")), img[:, :, ::-1])
            # landmarks whose bounding box is the face box (what the reader derives the box from)
            angles = np.linspace(0, 2 * np.pi, 68, endpoint=False)
            cx, cy, a, b = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, (box[2] - box[0]) / 2, (box[3] - box[1]) / 2
            pts = np.column_stack([cx + a * np.cos(angles), cy + b * np.sin(angles)])
            pts[30] = (cx, cy)
            write_pts(stem.with_suffix(".pts"), pts)


TINY = dict(interval=3, n_components=2, root_area=16, n_parts=4, max_positives=40, random_negatives=300,
            neg_images_per_round=20, neg_per_image=5, neg_cache=1500, root_mining_rounds=1, latent_iterations=1,
            part_mining_rounds=1, bbox_samples=60, svm_epochs=60)


def test_train_and_detect_generated_faces(tmp_path):
    rng = np.random.default_rng(0)
    samples = []
    for i in range(24):
        img, box = _scene(rng)
        path = tmp_path / f"train_{i}.png"
        cv2.imwrite(str(path), img[:, :, ::-1])
        samples.append(Sample(name=f"train_{i}", image_path=path, landmarks=None, box=box))
    out = dpm_train.train_dpm(samples, tmp_path / "model" / "dpm.npz", dpm_config.DPMConfig(**TINY), progress=False)
    detector = dpm.DPMDetector.load(out)
    assert all(c.n_parts == 4 for c in detector.components)
    assert detector.info["n_positives"] == 48 and detector.info["train_s"] > 0
    ious = []
    for _ in range(4):
        img, box = _scene(rng)
        found = detector.detect(img)
        assert found, "no detection on a held-out image"
        ious.append(dpm.box_iou(box, found[0][0][None])[0])
    assert min(ious) > 0.5, ious
    assert detector.detect(np.full((96, 96, 3), 128, np.uint8)) == []   # nothing to find on a blank image
    assert detector.detect(img, min_size=1000) == []                    # every window is narrower than that
    found = detector.detect(img, min_size=0.7 * (box[2] - box[0]))      # skipping small windows keeps the face
    assert found and dpm.box_iou(box, found[0][0][None])[0] > 0.5


def test_cli_train_and_eval(tmp_path, capsys):
    _write_tree(tmp_path / "data", n_train=24, n_test=4, seed=1)
    model = tmp_path / "dpm.npz"
    settings = [f"--set={k}={v}" for k, v in TINY.items()]
    dpm_train.main(["--root", str(tmp_path / "data"), "--out", str(model), *settings])
    assert len(load_dataset("300w", tmp_path / "data", "test")) == 4
    dpm.main(["--root", str(tmp_path / "data"), "--model", str(model)])
    stats = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert stats["n"] == 4 and stats["recall_top1"] >= 0.75
    with pytest.raises(SystemExit):
        dpm_train.main(["--root", str(tmp_path / "data"), "--out", str(model), "--set", "nonsense=1"])
