"""Tests for the MDM-alone check (benchmarks.experiments.mdm_alone), MDM's per-step output and blended starts."""

import numpy as np
import pandas as pd
import pytest
import torch

from benchmarks.baselines import mdm, mdm_frame, mdm_train
from benchmarks.experiments import mdm_alone
from benchmarks.metrics import nme
from test_mdm import TINY, face68, tiny_samples


@pytest.fixture(autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_jittered_boxes_are_seeded_per_image_and_scale_with_the_box():
    rng = np.random.default_rng(0)
    gts = np.stack([face68(rng, size=s) for s in (40.0, 80.0, 120.0)])
    boxes = mdm_alone.jittered_boxes(gts, 0.05, seed=1)
    # A prefix (--limit) sees the same starts as the full set; another seed other starts.
    np.testing.assert_array_equal(mdm_alone.jittered_boxes(gts[:2], 0.05, seed=1), boxes[:2])
    assert not np.allclose(mdm_alone.jittered_boxes(gts, 0.05, seed=2), boxes)
    np.testing.assert_allclose(mdm_alone.jittered_boxes(gts, 0.0, seed=1),
                               [mdm_alone.datasets.landmarks_box(g) for g in gts])
    # Corner noise is a fraction of the box side (a face twice as large moves twice as far), clipped at 3σ.
    small, large = gts[:1], (gts[:1] - 64.0) * 2 + 64.0
    moved = [mdm_alone.jittered_boxes(g, 0.05, seed=1)[0] - mdm_alone.datasets.landmarks_box(g[0])
             for g in (small, large)]
    np.testing.assert_allclose(moved[1], 2 * moved[0])
    truth = np.stack([mdm_alone.datasets.landmarks_box(g) for g in gts])
    side = np.tile(truth[:, 2:] - truth[:, :2], 2)
    assert np.all(np.abs(boxes - truth) <= 3 * 0.05 * side + 1e-9)


def test_step_statistics_and_monotone_on_made_up_errors():
    errors = np.array([[0.4, 0.2, 0.3], [0.2, 0.25, 0.1], [0.1, 0.05, 0.2]])
    stats = mdm_alone.step_statistics(errors)
    assert np.isnan(stats[0]["improved"])
    assert stats[1]["improved"] == pytest.approx(2 / 3) and stats[2]["improved"] == pytest.approx(2 / 3)
    assert stats[2]["mean"] == pytest.approx(errors[2].mean())
    assert mdm_alone.monotone(errors)
    assert not mdm_alone.monotone(np.vstack([errors, errors[-1:] + 0.01]))   # a last step that hurts


def test_rows_replace_their_own_key_only(tmp_path):
    steps = np.array([[0.3, 0.2], [0.2, 0.3]])
    result = {"steps": steps, "aam": np.array([0.05, 0.5]), "mdm_seconds": 0.1, "aam_seconds": 1.0}
    meta = {"source": "s", "preset": "cpu", "checkpoint": "abc", "iterations": 5, "split": "test",
            "jitter": 0.05, "seed": 0, "n": 2}
    path = tmp_path / "mdm_alone.csv"
    mdm_alone.write_rows(path, mdm_alone.rows_of(result, meta))
    mdm_alone.write_rows(path, mdm_alone.rows_of(result, {**meta, "seed": 1}))
    rerun = {**result, "aam": None, "steps": np.array([[0.3, 0.2], [0.1, 0.1]])}
    mdm_alone.write_rows(path, mdm_alone.rows_of(rerun, meta))   # a re-run of seed 0 without AAM
    table = pd.read_csv(path, dtype={"checkpoint": str})
    assert sorted(table["method"]) == sorted(["mean-shape", "mdm", "aam"] * 2)
    assert set(table["seed"]) == {0, 1} and len(table) == 6
    mdm_row = table[(table["method"] == "mdm") & (table["seed"] == 0)].iloc[0]
    assert mdm_row["mean"] == pytest.approx(0.1) and mdm_row["improved"] == 1.0 and mdm_row["monotone"]
    first = table[(table["method"] == "mdm") & (table["seed"] == 1)].iloc[0]   # untouched by the re-run
    assert first["mean"] == pytest.approx(0.25) and first["improved"] == 0.5 and not first["monotone"]
    assert table[(table["method"] == "aam")].iloc[0]["improved"] == 0.5


def test_fit_steps_ends_with_the_fitters_answer(tmp_path):
    samples = tiny_samples(tmp_path, n=4)
    path = mdm_train.train_mdm(samples, tmp_path / "run", TINY, progress=False)
    fitter = mdm.MDMFitter.load(path)
    images = [s.image() for s in samples[:2]]
    starts = np.stack([fitter.initial_shape(s.box) for s in samples[:2]])
    steps = fitter.fit_steps(images, starts)
    assert steps.shape == (TINY.steps, 2, 68, 2)
    np.testing.assert_allclose(steps[-1], fitter.fit_batch(images, starts), atol=1e-6)


def test_evaluate_scores_the_start_and_every_step(tmp_path):
    samples = tiny_samples(tmp_path, n=3)
    path = mdm_train.train_mdm(samples, tmp_path / "run", TINY, progress=False)
    fitter = mdm.MDMFitter.load(path)
    gts = np.stack([s.landmarks for s in samples])
    starts = np.stack([fitter.initial_shape(b) for b in mdm_alone.jittered_boxes(gts, 0.05, 0)])
    result = mdm_alone.evaluate(samples, fitter, starts, aam=lambda image, shape: shape, progress=False)
    assert result["steps"].shape == (TINY.steps + 1, 3)
    np.testing.assert_allclose(result["steps"][0], nme(starts, gts))
    np.testing.assert_allclose(result["aam"], result["steps"][0])   # an identity "AAM" scores the start


def test_blended_starts_lie_between_the_box_start_and_the_truth(tmp_path):
    """``blend_p`` = 1 draws starts nearer the GT than the published box starts of the same draw."""
    samples = tiny_samples(tmp_path, n=2)
    mean = mdm_frame.mean_shape([s.landmarks for s in samples], TINY.reference_diagonal)
    crops, shapes = mdm_train._prepare_crops(samples, mean, TINY, progress=False)
    base = {**mdm._config_to_dict(TINY), "mirror_p": 0.0, "rotation_p": 0.0, "box_noise": 0.1}
    published = mdm.MDMConfig(**base)
    blended = mdm.MDMConfig(**{**base, "blend_p": 1.0, "point_noise": 0.0})
    closer = 0
    for seed in range(10):
        _, gt, box_start = mdm_train.augmented_sample(crops[0], shapes[0], mean, published,
                                                      np.random.default_rng(seed))
        _, gt_b, start = mdm_train.augmented_sample(crops[0], shapes[0], mean, blended,
                                                    np.random.default_rng(seed))
        # The same box start up to the frame (centred on the start), so compare errors, not points.
        assert nme(start, gt_b) <= nme(box_start, gt) + 1e-9
        closer += nme(start, gt_b) < nme(box_start, gt) - 1e-6
    assert closer >= 5
