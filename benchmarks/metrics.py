"""Landmark metrics of the paper: NME, CED, AUC / failure rate (dense metrics: ``benchmarks.dense_metrics``).

Pure functions on NumPy arrays; no I/O, no menpo. Points follow the project convention (``N×2`` float arrays
in ``(x, y)``); every normaliser below is invariant to swapping x and y, so the numbers equal menpofit's, which
works in ``(y, x)`` (``tests/test_metrics.py`` checks this to 1e-9).

Conventions shared by all functions:

* A per-image error is a non-negative float; a miss (the detector found no face, the prediction holds NaN/inf
  or is ``None``) is ``+inf``. Misses stay in every denominator: they lower the CED everywhere and count as
  failures; they are never dropped.
* Rates (CED values, AUC, failure rate) are fractions in [0, 1]; the paper prints failure rates in percent and
  the report converts.
* The CED uses ``<=``: an error exactly equal to a threshold is a success at that threshold.
"""

import numpy as np
from scipy.integrate import simpson

# 0-based outer eye corners (image-left eye's outer corner, image-right eye's outer corner) per markup size:
# ‖g[36] − g[45]‖ on 68 points; the 51/49-point markups drop the 17 jaw points first, so both become 19, 28.
OUTER_EYE_CORNERS = {68: (36, 45), 51: (19, 28), 49: (19, 28)}

# 0-based eye contours (6 points each) whose centroids are the pupils, per markup size.
EYES = {68: (np.arange(36, 42), np.arange(42, 48)),
        51: (np.arange(19, 25), np.arange(25, 31)),
        49: (np.arange(19, 25), np.arange(25, 31))}

# (points given, points wanted) → 0-based indices of the wanted subset.
# 51 = 68 without the jaw (0..16); 49 = 51 without the inner-mouth corners (68-pt 60 and 64, i.e. 51-pt 43
# and 47), the 300-VW / menpofit ``_convert_68_to_49`` convention.
SUBSET_INDICES = {
    (68, 51): np.arange(17, 68),
    (68, 49): np.delete(np.arange(68), [60, 64])[17:],
    (51, 49): np.delete(np.arange(51), [43, 47]),
}

# Thresholds summarise() reports: 0.1 is the paper's (Table 2: "failure rate for a maximum RMS error of
# 0.1", CEDs plotted on [0, 0.1]); 0.08 is the MDM / 300-W convention, reported beside it.
SUMMARY_MAX_ERRORS = (0.1, 0.08)


def select_points(shapes, points):
    """Select the 51- or 49-point subset of 68-point (or 51-point) shapes.

    Args:
        shapes: ``(..., N, 2)`` array.
        points: the wanted markup size, 68, 51 or 49; None or ``N`` returns ``shapes`` unchanged.

    Returns:
        ``(..., points, 2)`` array.

    Raises:
        ValueError: the subset is not defined for ``N`` points (e.g. 49 from 55 ear points).
    """
    shapes = np.asarray(shapes, dtype=float)
    n = shapes.shape[-2]
    if points is None or points == n:
        return shapes
    if (n, points) not in SUBSET_INDICES:
        valid = ", ".join(f"{a}→{b}" for a, b in SUBSET_INDICES)
        raise ValueError(f"cannot select {points} points from {n}-point shapes; defined subsets: {valid}")
    return shapes[..., SUBSET_INDICES[(n, points)], :]


def _box_edges(gt_full, box):
    """Width and height (each ``(B,)``) of the given ``(B, 4)`` boxes or, when None, of the GT point boxes."""
    if box is None:
        lo, hi = gt_full.min(axis=1), gt_full.max(axis=1)
        return hi[:, 0] - lo[:, 0], hi[:, 1] - lo[:, 1]
    box = np.asarray(box, dtype=float).reshape(-1, 4)
    if box.shape[0] not in (1, gt_full.shape[0]):
        raise ValueError(f"box has {box.shape[0]} rows for {gt_full.shape[0]} shapes; give one (x0, y0, x1, y1) "
                         "per shape")
    box = np.broadcast_to(box, (gt_full.shape[0], 4))
    return box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]


def _outer_eye(gt, gt_full, box):
    """‖g[a] − g[b]‖ for the markup's outer eye corners (a, b) = OUTER_EYE_CORNERS[N]."""
    n = gt.shape[1]
    if n not in OUTER_EYE_CORNERS:
        raise ValueError(f"norm 'outer-eye' needs 68, 51 or 49 points, got {n}; use a box norm for other markups")
    a, b = OUTER_EYE_CORNERS[n]
    return np.linalg.norm(gt[:, a] - gt[:, b], axis=-1)


def _inter_pupil(gt, gt_full, box):
    """‖mean(g[left eye]) − mean(g[right eye])‖, the eye contours of EYES[N]."""
    n = gt.shape[1]
    if n not in EYES:
        raise ValueError(f"norm 'inter-pupil' needs 68, 51 or 49 points, got {n}; use a box norm for other markups")
    left, right = EYES[n]
    return np.linalg.norm(gt[:, left].mean(axis=1) - gt[:, right].mean(axis=1), axis=-1)


def _box_avg_edge(gt, gt_full, box):
    """(w + h) / 2 of the box."""
    w, h = _box_edges(gt_full, box)
    return 0.5 * (w + h)


def _box_diagonal(gt, gt_full, box):
    """sqrt(w² + h²) of the box."""
    w, h = _box_edges(gt_full, box)
    return np.hypot(w, h)


def _box_sqrt(gt, gt_full, box):
    """sqrt(w · h) of the box."""
    w, h = _box_edges(gt_full, box)
    return np.sqrt(w * h)


# Normaliser name → function(gt_subset (B,n,2), gt_as_given (B,N,2), box or None) → (B,) distances.
NORMALISERS = {
    "outer-eye": _outer_eye,        # 300-W / 300-VW / MDM / DenseReg
    "inter-pupil": _inter_pupil,    # older papers; menpofit mean_pupil_68_error
    "box": _box_avg_edge,           # ears (paper Sec. 4.7); menpofit bb_avg_edge_length
    "box-diagonal": _box_diagonal,  # Menpo benchmark
    "box-sqrt": _box_sqrt,          # 3DDFA / AFLW2000-3D
}


def normaliser(name):
    """The normaliser function registered as ``name`` in :data:`NORMALISERS`.

    Raises:
        ValueError: unknown name; the message lists the valid ones.
    """
    try:
        return NORMALISERS[name]
    except KeyError:
        raise ValueError(f"unknown norm {name!r}; valid norms: {', '.join(NORMALISERS)}") from None


def _prediction_batch(pred, gt_shape, single):
    """``pred`` as a ``(B, N, 2)`` float array; a ``None`` prediction (or list item) becomes all-NaN."""
    if pred is None:
        return np.full(gt_shape, np.nan)
    if not single and isinstance(pred, (list, tuple)):
        pred = [np.full(gt_shape[1:], np.nan) if p is None else np.asarray(p, dtype=float) for p in pred]
        if len(pred) != gt_shape[0]:
            raise ValueError(f"{len(pred)} predictions for {gt_shape[0]} ground-truth shapes")
    pred = np.asarray(pred, dtype=float)
    if single:
        pred = pred[None]
    if pred.shape != gt_shape:
        want = gt_shape[1:] if single else gt_shape
        got = pred.shape[1:] if single else pred.shape
        raise ValueError(f"prediction has shape {got}, ground truth {want}")
    return pred


def nme(pred, gt, norm="outer-eye", box=None, points=None):
    """Normalised mean Euclidean point-to-point error of one shape or a batch.

    ``e = (1/n) Σ_i ‖p_i − g_i‖₂ / d(g)``, the "point-to-point error" of 300-W, 300-VW, MDM and the paper
    (which calls it "RMS" although it is the mean Euclidean distance, not a root mean square). ``d`` is one of
    :data:`NORMALISERS`, always computed from the ground truth:

    * ``"outer-eye"``: ‖g[36] − g[45]‖ (68 points), ‖g[19] − g[28]‖ (51 and 49 points);
    * ``"inter-pupil"``: distance between the centroids of the two 6-point eye contours;
    * ``"box"``: (w + h)/2, ``"box-diagonal"``: sqrt(w² + h²), ``"box-sqrt"``: sqrt(w·h), where w, h are the
      edges of ``box`` or, when ``box`` is None, of the bounding box of the GT points as given (all 68 even
      when ``points`` selects 49, as menpofit's ``bb_avg_edge_length_49_euclidean_error`` does).

    Args:
        pred: predicted ``(N, 2)`` shape, or ``(B, N, 2)`` batch (a list may hold ``None`` items). ``None``, or a
            shape with any NaN/inf coordinate, is a miss: its error is ``+inf`` (a failure, never dropped).
        gt: ground-truth ``(N, 2)`` or ``(B, N, 2)``, same point order and coordinate frame as ``pred``.
        norm: key of :data:`NORMALISERS`.
        box: ``(x0, y0, x1, y1)`` or ``(B, 4)`` boxes for the box norms; ignored by the others.
        points: 68, 51 or 49 to score that subset (see :data:`SUBSET_INDICES`); None scores every point given
            (e.g. the 55 ear points).

    Returns:
        A float for one shape, a ``(B,)`` array for a batch.

    Raises:
        ValueError: shapes disagree, the GT holds NaN/inf, the norm or subset is undefined, or a normaliser is
            not positive (a degenerate GT shape or box).
    """
    gt = np.asarray(gt, dtype=float)
    if gt.ndim not in (2, 3) or gt.shape[-1] != 2:
        raise ValueError(f"ground truth must be (N, 2) or (B, N, 2), got shape {gt.shape}")
    single = gt.ndim == 2
    gt_full = gt[None] if single else gt
    if not np.isfinite(gt_full).all():
        bad = np.flatnonzero(~np.isfinite(gt_full).all(axis=(1, 2)))
        raise ValueError(f"ground truth holds NaN/inf (shape indices {bad.tolist()[:10]})")
    norm_f = normaliser(norm)
    pred_full = _prediction_batch(pred, gt_full.shape, single)

    gt_sub = select_points(gt_full, points)
    pred_sub = select_points(pred_full, points)
    miss = ~np.isfinite(pred_sub).all(axis=(1, 2))
    pred_sub = np.where(np.isfinite(pred_sub), pred_sub, 0.0)  # placeholder; overwritten by +inf below
    mean_dist = np.linalg.norm(pred_sub - gt_sub, axis=-1).mean(axis=-1)
    d = norm_f(gt_sub, gt_full, box)
    if not np.all(d > 0):
        bad = np.flatnonzero(~(d > 0))
        raise ValueError(f"norm {norm!r} is not positive for shape indices {bad.tolist()[:10]} "
                         "(degenerate ground truth or box)")
    err = np.where(miss, np.inf, mean_dist / d)
    return float(err[0]) if single else err


def _error_array(errors):
    """``errors`` as a 1-D float array; empty or NaN input is an error (a miss must be +inf, not NaN)."""
    errors = np.asarray(errors, dtype=float).ravel()
    if errors.size == 0:
        raise ValueError("no errors given: the CED of an empty set is undefined")
    if np.isnan(errors).any():
        raise ValueError(f"{int(np.isnan(errors).sum())} errors are NaN; a miss must be +inf")
    return errors


def ced(errors, thresholds):
    """Cumulative error distribution: ``CED(t) = #{e <= t} / n`` at each threshold.

    ``<=`` as in menpofit ``compute_cumulative_error`` and the MDM notebook. ``+inf`` errors (misses) count in
    ``n`` and never in the numerator.

    Args:
        errors: per-image (or per-pixel) errors, any shape, flattened.
        thresholds: scalar or array of thresholds.

    Returns:
        Array of fractions in [0, 1], the shape of ``thresholds``.

    Raises:
        ValueError: ``errors`` is empty or holds NaN.
    """
    errors = np.sort(_error_array(errors))
    thresholds = np.asarray(thresholds, dtype=float)
    # searchsorted(side="right") counts the sorted errors that are <= t.
    return np.searchsorted(errors, thresholds, side="right") / errors.size


def auc_and_failure(errors, max_error=0.1, step=1e-4):
    """Area under the CED on [0, max_error] (normalised to [0, 1]) and the failure rate at max_error.

    ``t = linspace(0, max_error, round(max_error/step) + 1)`` (linspace rather than menpofit's ``arange`` so the
    last threshold is exactly ``max_error``); ``AUC = simpson(CED(t), x=t) / max_error`` (Simpson's rule, as
    menpofit and MDM); ``failure = 1 − CED(max_error)``, the fraction of errors ``> max_error`` (misses
    included), computed as that count over n.

    Args:
        errors: per-image errors (``+inf`` for misses).
        max_error: upper end of the CED; 0.1 in the paper, 0.08 in MDM / 300-W.
        step: threshold spacing.

    Returns:
        ``(auc, failure_rate)``, floats in [0, 1].

    Raises:
        ValueError: ``errors`` is empty or holds NaN, or ``max_error``/``step`` is not positive.
    """
    if not (max_error > 0 and step > 0):
        raise ValueError(f"max_error and step must be positive, got max_error={max_error}, step={step}")
    errors = _error_array(errors)
    thresholds = np.linspace(0.0, max_error, int(round(max_error / step)) + 1)
    auc = simpson(ced(errors, thresholds), x=thresholds) / max_error
    failure = np.count_nonzero(errors > max_error) / errors.size
    return float(auc), float(failure)


def summarise(errors):
    """The numbers a run row carries for one set of per-image errors.

    Returns:
        dict with ``auc_0.1``, ``failure_0.1``, ``auc_0.08``, ``failure_0.08`` (:func:`auc_and_failure`, step
        1e-4), ``mean`` and ``median`` (over the finite errors only, NaN when there are none; misses show in
        ``n_inf`` and the failure rates), ``n`` (all errors) and ``n_inf`` (misses).
    """
    errors = _error_array(errors)
    finite = errors[np.isfinite(errors)]
    out = {}
    for max_error in SUMMARY_MAX_ERRORS:
        auc, failure = auc_and_failure(errors, max_error=max_error)
        out[f"auc_{max_error:g}"] = auc
        out[f"failure_{max_error:g}"] = failure
    out["mean"] = float(finite.mean()) if finite.size else float("nan")
    out["median"] = float(np.median(finite)) if finite.size else float("nan")
    out["n"] = int(errors.size)
    out["n_inf"] = int(np.count_nonzero(np.isinf(errors)))
    return out
