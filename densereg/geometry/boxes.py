"""Face boxes: IoU, non-maximum suppression and the one face-selection rule of the project.

Boxes are ``(x0, y0, x1, y1)`` float arrays in the pixel frame of the image (see ``densereg`` conventions).

**The box only says which face.** Every method that finds faces itself (DenseReg's own foreground, the DPM
and HOG-SVM detectors, a box file) keeps the face whose box overlaps the evaluated face's box most, provided
the IoU reaches :data:`MIN_IOU`; otherwise the face is missed. :func:`pick` is that rule; the library
(``DenseReg.landmarks(image, box=...)``) and the harness both call it.
"""

from __future__ import annotations

import numpy as np

# The PASCAL criterion (0.5) is stricter than needed to tell faces apart and would count a loose but correct
# detector box as a miss; 0.3 still rejects every neighbouring face.
MIN_IOU = 0.3


def check_box(box) -> np.ndarray:
    """``box`` as a ``(4,)`` float array ``(x0, y0, x1, y1)``, or ValueError saying what is wrong with it.

    A box must be four finite numbers with ``x0 < x1`` and ``y0 < y1``: a NaN or inverted box would otherwise
    overlap nothing and read as "no face there", which is a different answer from "this box is malformed".
    """
    try:
        arr = np.asarray(box, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"a box is four numbers (x0, y0, x1, y1), got {box!r}") from exc
    if arr.shape != (4,):
        raise ValueError(f"a box is four numbers (x0, y0, x1, y1), got shape {arr.shape}: {box!r}")
    if not np.isfinite(arr).all():
        raise ValueError(f"box {arr.tolist()} has a non-finite coordinate")
    if not (arr[0] < arr[2] and arr[1] < arr[3]):
        raise ValueError(f"box {arr.tolist()} is empty or inverted (needs x0 < x1 and y0 < y1)")
    return arr


def iou_many(box, boxes) -> np.ndarray:
    """IoU of one box with each row of ``boxes`` (any leading shape); 0 where they do not overlap."""
    box = np.asarray(box, dtype=np.float64)
    boxes = np.asarray(boxes, dtype=np.float64)
    ix = np.clip(np.minimum(box[2], boxes[..., 2]) - np.maximum(box[0], boxes[..., 0]), 0, None)
    iy = np.clip(np.minimum(box[3], boxes[..., 3]) - np.maximum(box[1], boxes[..., 1]), 0, None)
    inter = ix * iy
    union = ((box[2] - box[0]) * (box[3] - box[1])
             + (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1]) - inter)
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def iou(a, b) -> float:
    """Intersection over union of two boxes (0 when they do not overlap)."""
    return float(iou_many(a, np.asarray(b, dtype=np.float64)))


def nms(boxes, scores, iou_threshold: float, max_keep: int | None = None) -> np.ndarray:
    """Greedy non-maximum suppression: indices of the kept boxes, best score first.

    A box is dropped when it overlaps an already kept (higher-scoring) box by more than ``iou_threshold``;
    the search stops after ``max_keep`` boxes when given.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    keep = []
    while order.size and (max_keep is None or len(keep) < max_keep):
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        order = rest[iou_many(boxes[i], boxes[rest]) <= iou_threshold]
    return np.array(keep, dtype=np.int64)


def pick(boxes, box, min_iou: float = MIN_IOU):
    """The face that ``box`` designates: the box of ``boxes`` with the highest IoU with it, if ≥ ``min_iou``.

    Args:
        boxes: ``(D, 4)`` array (or list) of candidate boxes, possibly empty.
        box: the box of the face to evaluate (e.g. the ground-truth face box).
        min_iou: the overlap below which a candidate is someone (something) else.

    Returns:
        ``(index, candidate_box)``, or None when no candidate overlaps enough (a miss).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        return None
    overlaps = iou_many(np.asarray(box, dtype=np.float64), boxes)
    best = int(np.argmax(overlaps))
    if overlaps[best] < min_iou:
        return None
    return best, boxes[best]


def points_box(points) -> np.ndarray:
    """The bounding box ``(x0, y0, x1, y1)`` of ``N×2`` points (NaN rows ignored)."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    points = points[np.isfinite(points).all(axis=1)]
    if len(points) == 0:
        raise ValueError("no finite points to box")
    return np.concatenate([points.min(axis=0), points.max(axis=0)])
