"""Per-pixel depth error of a monocular depth estimate (paper Sec. 4.5, which could only show examples).

The depth target of DenseReg is the z-buffered depth of the fitted template normalised per face to [0, 1]
over its visible pixels (``densereg.geometry.rasterize.render_gt``: 0 = the farthest visible point, 1 = the
closest). An error of that quantity is therefore already *in units of the face's depth range*: 0.05 means 5 %
of the distance from the tip of the nose to the farthest visible point of the face.

Two errors per ground-truth foreground pixel, pooled over a test set:

* **absolute**: ``|ẑ − z|``, the estimate as the network gives it;
* **scale-and-shift invariant** (SSI): ``|(a·ẑ + b) − z|`` with ``(a, b)`` the least-squares fit of the image's
  estimate to its ground truth over the pixels it estimates. A network that gets the shape right but the
  normalisation wrong (e.g. its idea of the farthest point) is not penalised for it: the error that is left
  is the shape's.

A ground-truth foreground pixel the network calls background has no estimate: it scores ``+inf`` (never
dropped, as in ``dense_metrics.uv_error``), so the mean is taken over the estimated pixels and the
**coverage** (their fraction) is reported beside it; medians and the CED-based AUC count the misses.
"""

from __future__ import annotations

import numpy as np

# AUC of the depth-error CED on [0, DEPTH_AUC_MAX] (units of the face's depth range), as Fig. 5 does for UV.
DEPTH_AUC_MAX = 0.1


def ssi_fit(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """``(a, b)`` minimising ``Σ (a·pred + b − gt)²`` over the given (finite) values.

    A constant estimate cannot be scaled: ``a = 0`` and ``b`` = the mean of ``gt`` (its best constant).
    """
    pred, gt = np.asarray(pred, np.float64).ravel(), np.asarray(gt, np.float64).ravel()
    if pred.size == 0:
        return 1.0, 0.0
    centred = pred - pred.mean()
    var = float(centred @ centred)
    if var <= 1e-12 * max(1, pred.size):
        return 0.0, float(gt.mean())
    a = float(centred @ (gt - gt.mean())) / var
    return a, float(gt.mean() - a * pred.mean())


def depth_errors(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    """Absolute and SSI depth errors at every ground-truth foreground pixel of one image.

    Args:
        pred: ``H×W`` estimated normalised depth, NaN where the network says background.
        gt: ``H×W`` ground-truth normalised depth (NaN on background).
        mask: ``H×W`` bool ground-truth foreground.

    Returns:
        ``{"abs": errors, "ssi": errors}``, each a 1-D float array over ``mask``'s pixels (row-major), ``+inf``
        where ``pred`` is not finite.

    Raises:
        ValueError: the shapes differ, or the ground truth is not finite on its foreground.
    """
    pred, gt, mask = np.asarray(pred, np.float64), np.asarray(gt, np.float64), np.asarray(mask, bool)
    if not (pred.shape == gt.shape == mask.shape):
        raise ValueError(f"depth maps disagree in shape: estimate {pred.shape}, GT {gt.shape}, mask {mask.shape}")
    z, p = gt[mask], pred[mask]
    if not np.isfinite(z).all():
        raise ValueError(f"{int((~np.isfinite(z)).sum())} ground-truth foreground pixels have no finite depth")
    seen = np.isfinite(p)
    out = {}
    a, b = ssi_fit(p[seen], z[seen])
    for name, value in (("abs", p), ("ssi", a * p + b)):
        err = np.full(z.shape, np.inf)
        err[seen] = np.abs(value[seen] - z[seen])
        out[name] = err
    return out


def flat_errors(gt: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """SSI errors of a flat (constant) estimate: ``|z − mean z|`` over the foreground, the floor any shape
    must beat; it gives the SSI numbers a scale."""
    z = np.asarray(gt, np.float64)[np.asarray(mask, bool)]
    return np.abs(z - z.mean()) if z.size else z


def summarise(errors: np.ndarray) -> dict[str, float]:
    """``mean`` (over the estimated pixels), ``median`` and ``auc`` (CED on [0, DEPTH_AUC_MAX], misses count
    as failures) and ``coverage`` of pooled per-pixel errors (``+inf`` = no estimate)."""
    from benchmarks.metrics import auc_and_failure

    errors = np.asarray(errors, np.float64).ravel()
    if errors.size == 0:
        raise ValueError("no ground-truth foreground pixels: the depth error of an empty set is undefined")
    finite = errors[np.isfinite(errors)]
    auc, _ = auc_and_failure(errors, max_error=DEPTH_AUC_MAX)
    return {"mean": float(finite.mean()) if finite.size else float("nan"), "median": float(np.median(errors)),
            "auc": auc, "coverage": finite.size / errors.size}
