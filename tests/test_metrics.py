"""Tests for benchmarks.metrics (hand-computed values, menpofit cross-checks) and benchmarks.baselines.menpo."""

import math

import numpy as np
import pytest

from benchmarks.baselines import menpo as menpo_shim
from benchmarks.dense_metrics import confusion_matrix, iou_per_class, mean_iou, uv_auc, uv_error
from benchmarks.metrics import NORMALISERS, SUBSET_INDICES, auc_and_failure, ced, nme, select_points, summarise


def face68(rng, n=None):
    """A random but non-degenerate 68-point shape (or batch of n), (x, y) pixels."""
    size = (68, 2) if n is None else (n, 68, 2)
    return rng.uniform(50.0, 250.0, size=size)


# ---------------------------------------------------------------- nme


def test_shift_error_is_shift_over_interocular():
    gt = face68(np.random.default_rng(0))
    interocular = np.linalg.norm(gt[36] - gt[45])
    assert nme(gt + [3.0, 4.0], gt) == pytest.approx(5.0 / interocular, rel=1e-12)
    assert isinstance(nme(gt + [3.0, 4.0], gt), float)


def test_inter_pupil_normaliser_by_hand():
    gt = face68(np.random.default_rng(1))
    pupil_l, pupil_r = gt[36:42].mean(axis=0), gt[42:48].mean(axis=0)
    assert nme(gt + [0.0, 2.0], gt, norm="inter-pupil") == pytest.approx(
        2.0 / np.linalg.norm(pupil_l - pupil_r), rel=1e-12)


def test_box_norms_from_gt_points_and_from_given_box():
    gt = np.zeros((55, 2))
    gt[:, 0] = np.linspace(10.0, 20.0, 55)   # w = 10
    gt[:, 1] = np.linspace(5.0, 25.0, 55)    # h = 20
    pred = gt + [3.0, 4.0]                    # every point 5 px off
    assert nme(pred, gt, norm="box") == pytest.approx(5.0 / 15.0)
    assert nme(pred, gt, norm="box-diagonal") == pytest.approx(5.0 / math.sqrt(500.0))
    assert nme(pred, gt, norm="box-sqrt") == pytest.approx(5.0 / math.sqrt(200.0))
    # An explicit (x0, y0, x1, y1) box overrides the point box: w = 40, h = 60.
    assert nme(pred, gt, norm="box", box=(0.0, 0.0, 40.0, 60.0)) == pytest.approx(5.0 / 50.0)


def test_batch_matches_per_image_and_returns_array():
    rng = np.random.default_rng(2)
    gt = face68(rng, 5)
    pred = gt + rng.normal(0, 2.0, gt.shape)
    batch = nme(pred, gt)
    assert batch.shape == (5,)
    np.testing.assert_allclose(batch, [nme(p, g) for p, g in zip(pred, gt)], rtol=1e-12)
    boxes = np.tile([0.0, 0.0, 100.0, 50.0], (5, 1))
    np.testing.assert_allclose(nme(pred, gt, norm="box", box=boxes),
                               np.linalg.norm(pred - gt, axis=-1).mean(axis=1) / 75.0, rtol=1e-12)


def test_misses_are_infinite():
    rng = np.random.default_rng(3)
    gt = face68(rng, 3)
    assert nme(None, gt[0]) == math.inf
    pred = gt.copy()
    pred[1, 10] = np.nan      # one bad point fails the whole image
    pred[2, 0, 0] = np.inf
    np.testing.assert_array_equal(nme(pred, gt), [0.0, np.inf, np.inf])
    np.testing.assert_array_equal(nme([gt[0], None, gt[2] + 0.0], gt), [0.0, np.inf, 0.0])


def test_bad_inputs_raise():
    rng = np.random.default_rng(4)
    gt = face68(rng)
    bad_gt = gt.copy()
    bad_gt[5] = np.nan
    with pytest.raises(ValueError, match="ground truth holds NaN"):
        nme(gt, bad_gt)
    with pytest.raises(ValueError, match="valid norms: outer-eye"):
        nme(gt, gt, norm="interocular")
    with pytest.raises(ValueError, match="prediction has shape"):
        nme(gt[:51], gt)
    with pytest.raises(ValueError, match="use a box norm"):
        nme(gt[:55], gt[:55])
    with pytest.raises(ValueError, match="not positive"):
        nme(gt, np.ones((68, 2)))


def test_subsets_have_the_documented_indices():
    assert len(SUBSET_INDICES[(68, 51)]) == 51 and len(SUBSET_INDICES[(68, 49)]) == 49
    idx49 = set(SUBSET_INDICES[(68, 49)].tolist())
    assert idx49 == set(range(17, 68)) - {60, 64}
    # 51 → 49 drops the same two physical points.
    np.testing.assert_array_equal(SUBSET_INDICES[(68, 51)][SUBSET_INDICES[(51, 49)]], SUBSET_INDICES[(68, 49)])
    # The 51/49-point outer eye corners (19, 28) are the 68-point 36 and 45.
    for n in (51, 49):
        sub = SUBSET_INDICES[(68, n)]
        assert (sub[19], sub[28]) == (36, 45)
    shapes = face68(np.random.default_rng(5), 2)
    assert select_points(shapes, 49).shape == (2, 49, 2)
    with pytest.raises(ValueError, match="defined subsets"):
        select_points(shapes[:, :55], 49)


def test_subset_scoring_ignores_dropped_points():
    gt = face68(np.random.default_rng(6))
    interocular = np.linalg.norm(gt[36] - gt[45])
    pred = gt.copy()
    pred[:17] += 10.0                       # jaw only
    pred[[60, 64]] += [6.0, 8.0]            # inner-mouth corners only
    assert nme(pred, gt, points=49) == 0.0
    assert nme(pred, gt, points=51) == pytest.approx(2 * 10.0 / 51 / interocular)
    assert nme(pred, gt, points=51) == pytest.approx(nme(pred[17:], gt[17:]))  # 51-pt input, same corners


# ---------------------------------------------------------------- CED, AUC, failure


def test_ced_uses_less_or_equal_and_counts_misses():
    errors = [0.05, 0.1, np.inf, 0.2]
    np.testing.assert_array_equal(ced(errors, [0.0, 0.05, 0.0999, 0.1, 1e9]), [0.0, 0.25, 0.25, 0.5, 0.75])
    assert ced(errors, 0.05) == 0.25


def test_error_equal_to_max_is_a_success():
    assert auc_and_failure([0.1, 0.1], max_error=0.1)[1] == 0.0
    assert auc_and_failure([0.08], max_error=0.08)[1] == 0.0


def test_auc_extremes():
    auc, failure = auc_and_failure(np.zeros(10))
    assert auc == pytest.approx(1.0, abs=1e-12) and failure == 0.0
    assert auc_and_failure(np.full(7, 0.1001)) == (0.0, 1.0)
    assert auc_and_failure([np.inf, np.inf], max_error=0.08) == (0.0, 1.0)


def test_auc_closed_forms():
    # All errors equal to e: CED is a unit step at e, AUC = (max − e)/max up to one threshold step.
    auc, failure = auc_and_failure(np.full(4, 0.03), max_error=0.1)
    assert auc == pytest.approx(0.7, abs=2e-3) and failure == 0.0
    # Uniform errors on [0, 2·max]: CED(t) = t/(2·max), AUC = 1/4, half are failures.
    errors = np.linspace(0.0, 0.2, 20001)
    auc, failure = auc_and_failure(errors, max_error=0.1)
    assert auc == pytest.approx(0.25, abs=1e-3) and failure == pytest.approx(0.5, abs=1e-3)


def test_failure_counts_infinite_errors():
    auc_all, _ = auc_and_failure([0.01, 0.05])
    auc, failure = auc_and_failure([0.01, np.inf, 0.2, 0.05])
    assert failure == 0.5
    assert auc == pytest.approx(auc_all / 2)


def test_empty_or_nan_errors_raise():
    with pytest.raises(ValueError, match="no errors"):
        auc_and_failure([])
    with pytest.raises(ValueError, match="must be \\+inf"):
        ced([0.1, np.nan], 0.1)
    with pytest.raises(ValueError, match="must be positive"):
        auc_and_failure([0.1], max_error=0.0)


def test_summarise():
    errors = [0.01, 0.03, 0.09, np.inf]
    s = summarise(errors)
    assert set(s) == {"auc_0.1", "failure_0.1", "auc_0.08", "failure_0.08", "mean", "median", "n", "n_inf"}
    assert (s["n"], s["n_inf"]) == (4, 1)
    assert s["mean"] == pytest.approx(0.13 / 3) and s["median"] == pytest.approx(0.03)
    assert s["failure_0.1"] == 0.25 and s["failure_0.08"] == 0.5
    assert (s["auc_0.1"], s["failure_0.1"]) == auc_and_failure(errors, 0.1)
    assert math.isnan(summarise([np.inf])["mean"])


# ---------------------------------------------------------------- IoU


def test_iou_by_hand_with_absent_class():
    pred = np.array([[0, 1], [1, 1]])
    gt = np.array([[0, 1], [0, 1]])
    ious = iou_per_class(pred, gt, 3)
    np.testing.assert_allclose(ious[:2], [1 / 2, 2 / 3])
    assert math.isnan(ious[2])
    assert mean_iou(ious) == pytest.approx((1 / 2 + 2 / 3) / 2)
    np.testing.assert_array_equal(confusion_matrix(pred, gt, 3), [[1, 1, 0], [0, 2, 0], [0, 0, 0]])


def test_iou_sums_over_the_set_not_per_image_mean():
    # Image A (1×4): class 1 perfect over 3 pixels. Image B (1×2): class 1 predicted on 1 pixel, absent in GT.
    pred = [np.array([[1, 1, 1, 0]]), np.array([[1, 0]])]
    gt = [np.array([[1, 1, 1, 0]]), np.array([[0, 0]])]
    ious = iou_per_class(pred, gt, 2)
    assert ious[1] == pytest.approx(3 / 4)          # per-image mean would be (1 + 0)/2
    assert ious[0] == pytest.approx(2 / 3)          # GT 0 on 3 pixels, predicted 0 on 2 of them
    np.testing.assert_allclose(iou_per_class(np.stack([gt[0], gt[0]]), np.stack([gt[0], gt[0]]), 2), [1, 1])


def test_iou_bad_labels_raise():
    with pytest.raises(ValueError, match="outside \\[0, 2\\)"):
        iou_per_class(np.array([0, 2]), np.array([0, 1]), 2)
    with pytest.raises(ValueError, match="expected integer labels"):
        iou_per_class(np.array([0.0, 1.0]), np.array([0, 1]), 2)
    with pytest.raises(ValueError, match="label image 0"):
        iou_per_class(np.zeros((2, 2), int), np.zeros((2, 3), int), 2)


# ---------------------------------------------------------------- UV error


def test_uv_error_by_hand():
    gt_u = np.array([[0.2, 0.4], [np.nan, 0.6]])
    gt_v = np.array([[0.5, 0.5], [np.nan, 0.7]])
    mask = np.array([[True, True], [False, True]])
    pred_u = np.array([[0.23, np.nan], [0.9, 0.6]])   # (0, 1) called background; (1, 0) outside the mask
    pred_v = np.array([[0.54, np.nan], [0.9, 0.7]])
    np.testing.assert_allclose(uv_error(pred_u, pred_v, gt_u, gt_v, mask), [0.05, np.inf, 0.0])
    with pytest.raises(ValueError, match="ground-truth UV is NaN"):
        uv_error(pred_u, pred_v, gt_u, gt_v, np.ones((2, 2), bool))
    with pytest.raises(ValueError, match="pred_u has shape"):
        uv_error(pred_u[:1], pred_v, gt_u, gt_v, mask)


def test_uv_auc_of_bin_centre_decoding_is_pi_over_12():
    # K=5 bins decoded to their centres with a perfect classifier: u and v errors uniform on ±0.1, so the
    # Euclidean error CED on [0, 0.1] is π t²/(4·0.1²) and its normalised area π/12.
    g = np.linspace(-0.1, 0.1, 401)
    du, dv = np.meshgrid(g, g)
    zeros = np.zeros_like(du)
    errors = uv_error(du, dv, zeros, zeros, np.ones(du.shape, bool))
    auc, failure = uv_auc(errors)
    assert auc == pytest.approx(math.pi / 12, abs=2e-3)
    assert failure == pytest.approx(1 - math.pi / 4, abs=5e-3)


# ---------------------------------------------------------------- menpo shim


def test_shim_restores_missing_names_only(monkeypatch):
    import scipy.integrate

    assert menpo_shim.apply_shim() == []            # already applied on import; idempotent
    assert np.Inf == np.inf and scipy.integrate.simps is not None
    monkeypatch.delattr(np, "Inf", raising=False)
    monkeypatch.delattr(scipy.integrate, "simps", raising=False)
    assert menpo_shim.apply_shim() == ["numpy.Inf", "scipy.integrate.simps"]
    assert np.Inf == np.inf and scipy.integrate.simps is scipy.integrate.simpson


# ---------------------------------------------------------------- menpofit cross-check


@pytest.fixture(scope="module")
def menpofit_error():
    try:
        error = menpo_shim.import_menpofit("error")
        point_cloud = menpo_shim.import_menpo("shape").PointCloud
    except ImportError as exc:
        pytest.skip(f"menpofit not installed: {exc}")
    return error, point_cloud


def test_landmark_errors_match_menpofit(menpofit_error):
    error, point_cloud = menpofit_error
    rng = np.random.default_rng(7)
    gt = face68(rng, 6)
    pred = gt + rng.normal(0, 4.0, gt.shape)

    def yx(a):
        return point_cloud(a[:, ::-1].copy())      # menpo is (y, x)

    # menpofit 0.7.1's mean_pupil_*_error pass include_mapping= to menpo 0.11.1's labellers, which renamed it
    # return_mapping=, so they raise TypeError; rebuild them from the same pieces with the new keyword.
    landmark = menpo_shim.import_menpo("landmark")
    face = menpo_shim.import_menpofit("error.human.face")

    def mean_pupil(labeller, convert=None):
        def pupil_dist(_, s):
            _, mapping = labeller(s, return_mapping=True)
            left, right = s[mapping["left_eye"]], s[mapping["right_eye"]]
            return error.euclidean_error(left.mean(axis=0), right.mean(axis=0))

        def err(p, g):
            if convert is not None:
                p, g = convert(p), convert(g)
            return error.euclidean_distance_normalised_error(p, g, pupil_dist)
        return err

    cases = [
        (dict(), error.outer_eye_corner_68_euclidean_error),
        (dict(points=51), error.outer_eye_corner_51_euclidean_error),
        (dict(points=49), error.outer_eye_corner_49_euclidean_error),
        (dict(norm="inter-pupil"), mean_pupil(landmark.face_ibug_68_to_face_ibug_68)),
        (dict(norm="inter-pupil", points=49),
         mean_pupil(landmark.face_ibug_49_to_face_ibug_49, face._convert_68_to_49)),
        (dict(norm="box"), error.bb_avg_edge_length_68_euclidean_error),
        (dict(norm="box", points=49), error.bb_avg_edge_length_49_euclidean_error),
        (dict(norm="box-diagonal"),
         lambda p, g: error.euclidean_bb_normalised_error(p, g, norm_type="diagonal")),
        (dict(norm="box-sqrt"),
         lambda p, g: error.euclidean_error(p, g) / math.sqrt(error.bb_area(g.points))),
    ]
    for kwargs, reference in cases:
        ours = nme(pred, gt, **kwargs)
        theirs = [reference(yx(p), yx(g)) for p, g in zip(pred, gt)]
        np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=0, err_msg=str(kwargs))
    # 55-point ears: the default bounding-box error of menpofit fitting results.
    ears_gt, ears_pred = gt[:, :55], pred[:, :55]
    np.testing.assert_allclose(nme(ears_pred, ears_gt, norm="box"),
                               [error.euclidean_bb_normalised_error(yx(p), yx(g))
                                for p, g in zip(ears_pred, ears_gt)], rtol=1e-9, atol=0)


@pytest.mark.filterwarnings("ignore:'scipy.integrate.simps' is deprecated:DeprecationWarning")
@pytest.mark.parametrize("max_error", [0.1, 0.08])
def test_ced_auc_failure_match_menpofit(menpofit_error, max_error):
    error, _ = menpofit_error
    rng = np.random.default_rng(8)
    errors = np.concatenate([rng.gamma(2.0, 0.025, 597), [np.inf, np.inf, np.inf]])
    bins = np.linspace(0.0, max_error, 37)
    np.testing.assert_allclose(ced(errors, bins), error.compute_cumulative_error(errors, bins),
                               rtol=0, atol=1e-12)
    auc, failure = auc_and_failure(errors, max_error=max_error, step=1e-4)
    ref_auc, ref_failure = error.area_under_curve_and_failure_rate(errors, step_error=1e-4,
                                                                   max_error=max_error)
    assert auc == pytest.approx(ref_auc, abs=1e-9)
    assert failure == pytest.approx(ref_failure, abs=1e-9)


def test_every_normaliser_is_covered():
    # Guards the cross-check list above: a new norm must get a menpofit (or hand) reference.
    assert set(NORMALISERS) == {"outer-eye", "inter-pupil", "box", "box-diagonal", "box-sqrt"}
