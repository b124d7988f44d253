"""Tests for benchmarks.baselines.mdm: geometry, patches, network, loss, resumable training and the fitter contract."""

import csv

import cv2
import numpy as np
import pytest
import torch

from benchmarks.baselines import mdm, mdm_frame, mdm_train
from benchmarks.metrics import nme
from densereg.data import datasets, formats

# A network small enough to train in a second: 36-px mean-shape diagonal in a 48-px frame, 10×10 patches.
TINY = mdm.MDMConfig(patch_size=10, steps=2, hidden=16, conv_channels=4, reference_diagonal=36.0, frame_size=48,
                     batch_size=2, iterations=6, ema_decay=0.9, checkpoint_every=3, learning_rate=1e-3)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One intra-op thread: these tiny networks gain nothing from two, and on the shared 2-core machine the
    second thread's OpenMP barriers make them an order of magnitude slower under load."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def face68(rng, centre=(64.0, 64.0), size=60.0):
    """A plausible 68-point face: the built-in mean-like layout jittered, eyes corners apart."""
    t = np.linspace(0, np.pi, 17)
    jaw = np.column_stack([-np.cos(t), np.sin(t) * 0.9 + 0.1])
    brows = np.column_stack([np.linspace(-0.8, -0.2, 5), np.full(5, -0.45)])
    brows = np.vstack([brows, brows[::-1] * [-1, 1]])
    nose = np.column_stack([np.zeros(4), np.linspace(-0.25, 0.15, 4)])
    nose = np.vstack([nose, np.column_stack([np.linspace(-0.2, 0.2, 5), np.full(5, 0.22)])])
    a = np.linspace(0, 2 * np.pi, 7)[:-1]
    eye = np.column_stack([np.cos(a) * 0.18, np.sin(a) * 0.07])
    eyes = np.vstack([eye[[3, 2, 1, 0, 5, 4]] + [-0.45, -0.25], eye[[3, 2, 1, 0, 5, 4]] + [0.45, -0.25]])
    b = np.linspace(0, 2 * np.pi, 13)[:-1]
    mouth = np.column_stack([-np.cos(b) * 0.35, np.sin(b) * 0.12 + 0.5])
    c = np.linspace(0, 2 * np.pi, 9)[:-1]
    inner = np.column_stack([-np.cos(c) * 0.25, np.sin(c) * 0.05 + 0.5])
    shape = np.vstack([jaw, brows, nose, eyes, mouth, inner])
    assert shape.shape == (68, 2)
    return shape * size / 2 + centre + rng.normal(0, 0.5, (68, 2))


def tiny_samples(tmp_path, n=8, size=96):
    """``n`` images of a bright face-shaped blob with dark eyes and mouth, written as a 300-W-like split."""
    rng = np.random.default_rng(0)
    samples = []
    for i in range(n):
        shape = face68(rng, centre=rng.uniform(40, 56, 2), size=rng.uniform(40, 52))
        image = np.full((size, size, 3), 40, np.uint8)
        cv2.fillPoly(image, [np.round(np.vstack([shape[:17], shape[17:27][::-1]])).astype(np.int32)], (200, 170, 150))
        for part in (slice(36, 42), slice(42, 48), slice(48, 60)):
            cv2.fillPoly(image, [np.round(shape[part]).astype(np.int32)], (30, 20, 20))
        path = tmp_path / f"face_{i}.png"
        formats.write_image(path, image)
        samples.append(datasets.Sample(f"face_{i}", path, shape, datasets.landmarks_box(shape)))
    return samples


# ---------------------------------------------------------------- geometry and patches


def test_patch_extraction_reads_the_right_pixels_of_a_ramp():
    h, w = 40, 50
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    frames = torch.from_numpy(np.stack([xs + 100 * ys, 2 * xs])[None])          # (1, 2, H, W)
    points = torch.tensor([[[20.0, 15.0], [25.5, 17.25]]])
    size = 6
    patches = mdm_frame.extract_patches(frames, points, size)
    assert patches.shape == (1, 2, 2, size, size)
    offsets = np.arange(size) - (size - 1) / 2
    for k, (x, y) in enumerate(points[0].tolist()):
        px, py = np.meshgrid(x + offsets, y + offsets)   # bilinear is exact on a linear ramp
        np.testing.assert_allclose(patches[0, k, 0].numpy(), px + 100 * py, atol=1e-3)
        np.testing.assert_allclose(patches[0, k, 1].numpy(), 2 * px, atol=1e-4)


def test_patch_outside_frame_is_zero():
    frames = torch.ones(1, 1, 20, 20)
    patches = mdm_frame.extract_patches(frames, torch.tensor([[[-30.0, -30.0]]]), 4)
    assert torch.count_nonzero(patches) == 0


def test_frame_transform_and_warp_agree_with_points():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)
    shape = face68(rng, centre=(200.0, 150.0), size=180.0)
    mean = mdm_frame.mean_shape([shape], 100.0)
    affine = mdm_frame.frame_transform(shape, mdm_frame.shape_spread(mean), 128)
    in_frame = mdm_frame.apply_affine(affine, shape)
    assert mdm_frame.shape_spread(in_frame) == pytest.approx(mdm_frame.shape_spread(mean))
    np.testing.assert_allclose(in_frame.mean(axis=0), [63.5, 63.5], atol=1e-9)
    # A single bright pixel lands where the affine says (the downscaling path included: scale < 0.75).
    image[:] = 0
    image[150, 200] = 255
    frame = mdm_frame.warp_to_frame(image, affine, 128).astype(float)[..., 0]
    peak = np.array(np.unravel_index(frame.argmax(), frame.shape))[::-1]
    centroid = (np.indices(frame.shape)[::-1] * frame).sum(axis=(1, 2)) / frame.sum()
    expected = mdm_frame.apply_affine(affine, np.array([[200.0, 150.0]]))[0]
    assert np.abs(peak - expected).max() <= 1
    np.testing.assert_allclose(centroid, expected, atol=0.3)


def test_mean_shape_and_box_alignment():
    rng = np.random.default_rng(2)
    shapes = [face68(rng, centre=rng.uniform(50, 150, 2), size=rng.uniform(40, 120)) for _ in range(5)]
    mean = mdm_frame.mean_shape(shapes, 200.0)
    lo, hi = mean.min(axis=0), mean.max(axis=0)
    assert np.linalg.norm(hi - lo) == pytest.approx(200.0)
    np.testing.assert_allclose((lo + hi) / 2, 0, atol=1e-9)
    aligned = mdm_frame.align_to_box(mean, [10, 20, 110, 140])
    lo, hi = aligned.min(axis=0), aligned.max(axis=0)
    np.testing.assert_allclose((lo + hi) / 2, [60, 80])
    assert np.linalg.norm(hi - lo) == pytest.approx(np.hypot(100, 120))


# ---------------------------------------------------------------- network and loss


def test_network_shapes_and_finiteness():
    torch.manual_seed(0)
    model = mdm.MDMNet(TINY)
    frames = torch.rand(3, 3, TINY.frame_size, TINY.frame_size)
    init = torch.rand(3, 68, 2) * 30 + 9
    estimates = model(frames, init)
    assert len(estimates) == TINY.steps
    assert all(e.shape == (3, 68, 2) and torch.isfinite(e).all() for e in estimates)
    # The published initialisation keeps the first updates small (truncated N(0, 0.01²) weights).
    assert (estimates[-1] - init).abs().max() < 1.0


def test_published_feature_size():
    # 30 → conv 28 → pool 14 → conv 12 → pool 6; pool_2 and the central 6×6 of conv_2: 2·32·36 per patch.
    with torch.device("meta"):   # shapes only: the published network has 80M parameters
        model = mdm.MDMNet(mdm.make_config("paper"))
    assert model.feature_size == 2 * 32 * 6 * 6
    assert model.rnn.in_features == 68 * 2304 + 512 and model.predict.out_features == 136


def test_loss_is_summed_nme_by_hand():
    gt = torch.zeros(1, 68, 2, dtype=torch.float64)
    gt[0, :, 0] = torch.arange(68, dtype=torch.float64)   # outer eye corners 36 and 45: 9 px apart
    step1 = gt.clone()
    step1[0, 0] += torch.tensor([3.0, 4.0])               # one point 5 px off
    step2 = gt + torch.tensor([0.0, 2.0])                 # every point 2 px off
    out = mdm.mdm_loss([step1, step2], gt)
    e1, e2 = 5 / 68 / 9, 2 / 9
    assert out["loss"].item() == pytest.approx(e1 + e2, rel=1e-12)
    np.testing.assert_allclose(out["step_errors"].numpy(), [e1, e2], rtol=1e-12)
    assert out["step_errors"][1].item() == pytest.approx(nme(step2[0].numpy(), gt[0].numpy()), rel=1e-12)


def test_loss_iod_floor_only_bounds_small_eye_distances():
    gt = torch.zeros(2, 68, 2, dtype=torch.float64)
    gt[:, :, 0] = torch.linspace(0, 30, 68)
    gt[:, :, 1] = torch.linspace(0, 40, 68)              # box diagonal 50; eye corners 36, 45 at ~5.6 px
    est = gt + torch.tensor([0.0, 1.0])
    iod = torch.linalg.vector_norm(gt[0, 36] - gt[0, 45]).item()
    assert mdm.mdm_loss([est], gt)["loss"].item() == pytest.approx(1 / iod)
    assert mdm.mdm_loss([est], gt, iod_floor=0.2)["loss"].item() == pytest.approx(1 / 10)
    assert mdm.mdm_loss([est], gt, iod_floor=0.05)["loss"].item() == pytest.approx(1 / iod)


def test_loss_gradient_is_finite_at_zero_error():
    gt = torch.rand(2, 68, 2) * 50
    est = gt.clone().requires_grad_(True)
    mdm.mdm_loss([est], gt)["loss"].backward()
    assert torch.isfinite(est.grad).all()


# ---------------------------------------------------------------- augmentation and training


def test_augmented_sample_is_consistent_and_deterministic(tmp_path):
    samples = tiny_samples(tmp_path, n=2)
    mean = mdm_frame.mean_shape([s.landmarks for s in samples], TINY.reference_diagonal)
    crops, shapes = mdm_train._prepare_crops(samples, mean, TINY, progress=False)
    config = mdm.MDMConfig(**{**mdm._config_to_dict(TINY), "contrast": (1, 1), "saturation": (1, 1), "hue": 0.0,
                              "noise": 0.0, "brightness": 0.0, "mirror_p": 1.0, "rotation_p": 1.0})
    a = mdm_train.augmented_sample(crops[0], shapes[0], mean, config, np.random.default_rng(5))
    b = mdm_train.augmented_sample(crops[0], shapes[0], mean, config, np.random.default_rng(5))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    frame, gt, initial = a
    assert frame.shape == (48, 48, 3) and frame.dtype == np.float32
    # The initial shape is the mean shape centred in the frame; the mirrored GT keeps iBUG order
    # (the eye corner 36 stays on the image's left of 45).
    np.testing.assert_allclose(initial - initial.mean(axis=0), mean - mean.mean(axis=0), atol=1e-9)
    assert gt[36, 0] < gt[45, 0]
    # The dark eye blobs are where the transformed GT says.
    eye = gt[36:42].mean(axis=0)
    assert frame[int(round(eye[1])), int(round(eye[0]))].mean() < 0.3


def test_tiny_training_lowers_the_loss(tmp_path):
    samples = tiny_samples(tmp_path, n=8)
    config = mdm.MDMConfig(**{**mdm._config_to_dict(TINY), "iterations": 24, "batch_size": 4, "steps": 2,
                              "learning_rate": 3e-3, "checkpoint_every": 24, "contrast": (1, 1), "noise": 0.0})
    path = mdm_train.train_mdm(samples, tmp_path / "run", config, progress=False)
    with open(tmp_path / "run" / mdm.LOG_NAME) as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(24))
    first = np.mean([float(r["loss"]) for r in rows[:8]])
    last = np.mean([float(r["loss"]) for r in rows[-8:]])
    assert last < first
    assert path == tmp_path / "run" / mdm.CHECKPOINT_NAME


def test_resume_gives_identical_weights(tmp_path):
    samples = tiny_samples(tmp_path, n=4)
    straight = mdm_train.train_mdm(samples, tmp_path / "a", TINY, progress=False)
    half = mdm.MDMConfig(**{**mdm._config_to_dict(TINY), "iterations": 3})
    mdm_train.train_mdm(samples, tmp_path / "b", half, progress=False)
    assert mdm.load_checkpoint(tmp_path / "b" / mdm.CHECKPOINT_NAME)["step"] == 3
    resumed = mdm_train.train_mdm(samples, tmp_path / "b", TINY, progress=False)
    a, b = mdm.load_checkpoint(straight), mdm.load_checkpoint(resumed)
    assert a["step"] == b["step"] == 6
    for key in ("model", "ema"):
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name} differs after resuming"
    with open(tmp_path / "a" / mdm.LOG_NAME) as fa, open(tmp_path / "b" / mdm.LOG_NAME) as fb:
        la, lb = list(csv.DictReader(fa)), list(csv.DictReader(fb))
    assert [r["loss"] for r in la] == [r["loss"] for r in lb]
    # A finished run returns at once without touching the file.
    mtime = resumed.stat().st_mtime_ns
    assert mdm_train.train_mdm(samples, tmp_path / "b", TINY, progress=False) == resumed
    assert resumed.stat().st_mtime_ns == mtime


def test_mismatched_or_corrupt_checkpoint_is_named(tmp_path):
    samples = tiny_samples(tmp_path, n=4)
    path = mdm_train.train_mdm(samples, tmp_path / "run", mdm.MDMConfig(**{**mdm._config_to_dict(TINY),
                                                                      "iterations": 1}), progress=False)
    other = mdm.MDMConfig(**{**mdm._config_to_dict(TINY), "hidden": 8})
    with pytest.raises(mdm.MDMCheckpointError, match=r"mdm\.pt.*hidden=16"):
        mdm_train.train_mdm(samples, tmp_path / "run", other, progress=False)
    with pytest.raises(mdm.MDMCheckpointError, match="other data"):
        mdm_train.train_mdm(samples[:3], tmp_path / "run", TINY, progress=False)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(mdm.MDMCheckpointError, match=rf"{path.name}.*corrupt.*benchmarks\.baselines\.mdm_train"):
        mdm.MDMFitter.load(path)
    with pytest.raises(mdm.MDMCheckpointError, match="no MDM checkpoint"):
        mdm.MDMFitter.load(tmp_path / "missing.pt")


def test_fitter_contract(tmp_path):
    samples = tiny_samples(tmp_path, n=4)
    path = mdm_train.train_mdm(samples, tmp_path / "run", TINY, progress=False)
    for mirror in (False, True):
        fitter = mdm.MDMFitter.load(path, mirror=mirror)
        image = samples[0].image()
        init = fitter.initial_shape(samples[0].box)
        out = fitter(image, init)
        assert out.shape == (68, 2) and out.dtype == np.float64 and np.isfinite(out).all()
        # A miss stays a miss; a batch mixes both.
        batch = fitter.fit_batch([image, image], np.stack([init, np.full((68, 2), np.nan)]))
        np.testing.assert_allclose(batch[0], out, atol=1e-4)
        assert np.isnan(batch[1]).all()


def test_fitter_round_trips_an_untrained_network(tmp_path):
    """With zero updates MDM returns its initial shape: the image→frame→image mapping is exact."""
    rng = np.random.default_rng(3)
    image = rng.integers(0, 255, (200, 300, 3), dtype=np.uint8)
    shape = face68(rng, centre=(150.0, 100.0), size=150.0)
    model = mdm.MDMNet(TINY)
    torch.nn.init.zeros_(model.predict.weight)   # no updates at all
    fitter = mdm.MDMFitter(model, TINY, mdm_frame.mean_shape([shape], TINY.reference_diagonal))
    np.testing.assert_allclose(fitter(image, shape), shape, atol=1e-4)


def test_unknown_preset_names_valid_ones():
    with pytest.raises(KeyError, match="cpu, paper"):
        mdm.make_config("fast")


def test_cli_trains(tmp_path, monkeypatch):
    samples = tiny_samples(tmp_path, n=3)
    monkeypatch.setattr(mdm_train.datasets, "load_dataset", lambda name, root, split: samples)
    monkeypatch.setitem(mdm.PRESETS, "cpu", {**mdm._config_to_dict(TINY), "iterations": 2})
    assert mdm_train.main(["--root", str(tmp_path), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert mdm.load_checkpoint(tmp_path / "out" / mdm.CHECKPOINT_NAME)["step"] == 2
