"""Tests of the DPM's features: Felzenszwalb HOG, the feature pyramid, filter correlation."""

import cv2
import numpy as np
import pytest

from benchmarks.baselines import hog


def _step_image(bright_right=True, size=(64, 64)):
    img = np.full(size + (3,), 40.0, np.float32)
    if bright_right:
        img[:, size[1] // 2:] = 200.0
    else:
        img[:, :size[1] // 2] = 200.0
    return img


def test_hog_shape_and_range():
    feat = hog.hog_features(np.zeros((64, 80, 3), np.uint8), sbin=8)
    assert feat.shape == (6, 8, 31) and feat.dtype == np.float32
    assert np.all(feat == 0)  # no gradient, no energy
    feat = hog.hog_features(np.random.default_rng(0).integers(0, 256, (50, 45, 3)).astype(np.uint8), sbin=4)
    assert feat.shape == (round(50 / 4) - 2, round(45 / 4) - 2, 31)
    # each of the 4 truncated normalisations contributes at most 0.2 to an orientation, times 0.5
    assert feat.min() >= 0 and feat[..., :27].max() <= 4 * 0.2 * 0.5 + 1e-6


def test_hog_vertical_edge_activates_horizontal_gradient_bins():
    dark_to_bright = hog.hog_features(_step_image(True))
    bright_to_dark = hog.hog_features(_step_image(False))
    # the edge at x = 32 lies between cells 2 and 3 (cell i covers pixels [8(i+1), 8(i+2)))
    edge = dark_to_bright[:, 2:4]
    assert np.all(edge[..., :18].argmax(axis=-1) == 0)          # gradient points to +x: sensitive bin 0
    assert np.all(bright_to_dark[:, 2:4, :18].argmax(axis=-1) == 9)  # reversed contrast: bin 9 (180°)
    assert np.all(edge[..., 18:27].argmax(axis=-1) == 0)         # insensitive bin 0 either way
    np.testing.assert_allclose(dark_to_bright[..., 18:], bright_to_dark[..., 18:], atol=1e-6)
    assert np.all(dark_to_bright[:, [0, 5]] == 0)                # flat regions far from the edge are empty


def test_hog_is_invariant_to_contrast_after_normalisation():
    rng = np.random.default_rng(1)
    img = cv2.GaussianBlur(rng.uniform(0, 255, (72, 88, 3)).astype(np.float32), (5, 5), 1.5)
    a = hog.hog_features(img)
    b = hog.hog_features(0.3 * img + 50.0)
    assert a.max() > 0.05
    np.testing.assert_allclose(a, b, atol=2e-3)


def test_pyramid_octaves_and_steps():
    pyr = hog.FeaturePyramid(np.zeros((256, 192, 3), np.uint8), interval=4, sbin=8, pad=(2, 2))
    assert pyr.steps(0) == (8.0, 8.0)
    assert pyr.steps(-4) == (4.0, 4.0)                      # parts of level 0: half-size cells
    assert pyr.steps(4) == pytest.approx((16.0, 16.0))      # one octave up
    assert pyr.hog(4)[0].shape == (256 // 16 - 2, 192 // 16 - 2, 31)
    rows, cols = pyr.root_map(0).shape[:2]
    assert pyr.part_map(0).shape[:2] == (2 * rows + 2 * hog.PART_MARGIN, 2 * cols + 2 * hog.PART_MARGIN)
    assert np.all(pyr.root_map(0)[:2, :, 31] == 1) and np.all(pyr.root_map(0)[2:-2, 2:-2, 31] == 0)


def test_correlate_matches_direct_sum():
    rng = np.random.default_rng(3)
    fmap = rng.normal(size=(9, 11, 32)).astype(np.float32)
    filters = rng.normal(size=(2, 3, 4, 32)).astype(np.float32)
    out = hog.correlate(fmap, filters)
    assert out.shape == (2, 7, 8)
    assert out[1, 5, 6] == pytest.approx(float(np.sum(fmap[5:8, 6:10] * filters[1])), rel=1e-4)
    assert hog.correlate(fmap[:2], filters).shape == (2, 0, 8)
