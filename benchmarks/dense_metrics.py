"""Dense metrics of the paper: face-part segmentation IoU (Table 1) and per-pixel UV error (Fig. 5).

Pure functions on NumPy arrays, under the conventions of :mod:`benchmarks.metrics` (a miss is ``+inf`` and
stays in every denominator; rates are fractions).
"""

import numpy as np

from benchmarks.metrics import auc_and_failure


def _label_pairs(pred_labels, gt_labels):
    """Pairs of equally shaped label arrays from two arrays or two equally long lists of arrays."""
    if isinstance(pred_labels, (list, tuple)) or isinstance(gt_labels, (list, tuple)):
        if len(pred_labels) != len(gt_labels):
            raise ValueError(f"{len(pred_labels)} predicted label images for {len(gt_labels)} ground-truth ones")
        return list(zip(pred_labels, gt_labels))
    return [(pred_labels, gt_labels)]


def confusion_matrix(pred_labels, gt_labels, n_classes):
    """Pixel confusion counts ``C[g, p]`` (GT class g predicted as p), summed over all images given.

    Args:
        pred_labels: integer label image(s): one array of any shape, or a list of arrays (sizes may differ).
        gt_labels: the ground truth, paired element-wise with ``pred_labels``.
        n_classes: labels must lie in ``[0, n_classes)``.

    Returns:
        ``(n_classes, n_classes)`` int64 array.

    Raises:
        ValueError: paired arrays differ in shape, or a label is out of range or not an integer.
    """
    counts = np.zeros(n_classes * n_classes, dtype=np.int64)
    pairs = _label_pairs(pred_labels, gt_labels)
    if not pairs:
        raise ValueError("no label images given")
    for i, (p, g) in enumerate(pairs):
        p, g = np.asarray(p), np.asarray(g)
        if p.shape != g.shape:
            raise ValueError(f"label image {i}: prediction shape {p.shape} != ground truth shape {g.shape}")
        for what, a in (("prediction", p), ("ground truth", g)):
            if not np.issubdtype(a.dtype, np.integer):
                raise ValueError(f"label image {i}: {what} has dtype {a.dtype}, expected integer labels")
            if a.size and (a.min() < 0 or a.max() >= n_classes):
                raise ValueError(f"label image {i}: {what} labels span [{a.min()}, {a.max()}], "
                                 f"outside [0, {n_classes})")
        flat = g.ravel().astype(np.int64) * n_classes + p.ravel().astype(np.int64)
        counts += np.bincount(flat, minlength=n_classes ** 2)
    return counts.reshape(n_classes, n_classes)


def iou_per_class(pred_labels, gt_labels, n_classes):
    """Dataset-level intersection-over-union per class (paper Table 1).

    ``IoU_c = Σ_images |P_c ∩ G_c| / Σ_images |P_c ∪ G_c|``: intersections and unions are summed over the
    whole set before dividing (the standard dataset IoU of PASCAL VOC / DeepLab), so large faces weigh more
    than small ones and a class absent from one image does not produce a 0/0 there.

    Args:
        pred_labels: integer label image(s): one array (e.g. ``(B, H, W)``) or a list of arrays.
        gt_labels: the ground truth, paired with ``pred_labels``.
        n_classes: number of classes (8 for the Helen parts, class 0 "other" including background).

    Returns:
        ``(n_classes,)`` float array; NaN for a class absent from both prediction and ground truth.
    """
    conf = confusion_matrix(pred_labels, gt_labels, n_classes)
    inter = np.diag(conf).astype(float)
    union = conf.sum(axis=0) + conf.sum(axis=1) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, np.nan)


def mean_iou(ious):
    """Mean of the per-class IoUs, ignoring NaN (absent) classes.

    The paper's Table 1 "Average" is this mean over all 8 classes, "other" included (71.96 = mean of the
    DenseReg column). Returns NaN when every class is NaN.
    """
    ious = np.asarray(ious, dtype=float)
    if np.isnan(ious).all():
        return float("nan")
    return float(np.nanmean(ious))


def uv_error(pred_u, pred_v, gt_u, gt_v, mask):
    """Per-pixel Euclidean UV error over the ground-truth foreground (paper Fig. 5, the K ablation).

    ``e = sqrt((û − u)² + (v̂ − v)²)`` at every pixel where ``mask`` is True. A GT-foreground pixel that the
    network labels background has no UV estimate (NaN in the predicted maps): it scores ``+inf``, i.e. it is a
    failure at every threshold, so a method cannot gain by declaring hard pixels background. Pixels outside
    ``mask`` are ignored whatever the prediction says there.

    Args:
        pred_u, pred_v: predicted UV maps, NaN at predicted background; any shape (``(H, W)``, ``(B, H, W)``).
        gt_u, gt_v: ground-truth UV maps of the same shape.
        mask: boolean GT foreground of the same shape.

    Returns:
        1-D float array, one error per foreground pixel in C order.

    Raises:
        ValueError: shapes differ, or the GT UV is NaN/inf inside ``mask``.
    """
    arrays = [np.asarray(a, dtype=float) for a in (pred_u, pred_v, gt_u, gt_v)]
    mask = np.asarray(mask)
    names = ("pred_u", "pred_v", "gt_u", "gt_v")
    for name, a in zip(names, arrays):
        if a.shape != mask.shape:
            raise ValueError(f"{name} has shape {a.shape}, mask {mask.shape}")
    if mask.dtype != bool:
        raise ValueError(f"mask must be boolean, got dtype {mask.dtype}")
    pu, pv, gu, gv = (a[mask] for a in arrays)
    if not (np.isfinite(gu).all() and np.isfinite(gv).all()):
        raise ValueError("ground-truth UV is NaN/inf at foreground pixels of the mask")
    err = np.hypot(pu - gu, pv - gv)
    return np.where(np.isfinite(err), err, np.inf)


def uv_auc(errors, max_error=0.1, step=1e-4):
    """``(auc, failure_rate)`` of per-pixel UV errors: :func:`auc_and_failure` on [0, max_error] (Fig. 5)."""
    return auc_and_failure(errors, max_error=max_error, step=step)
