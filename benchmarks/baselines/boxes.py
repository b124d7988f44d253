"""Face box → 68-point shape: the mean shape placed in a box, and detectors turned into initialisers.

A box says where a face is, not where its landmarks are. :class:`BoxToShape` learns, from training pairs of
(box, landmarks), how a given kind of box (a dataset's box files, a detector's detections) relates to the
landmarks it contains, and places the training mean shape accordingly. :func:`detector_regression` fits that
rule to a detector's *own* boxes on the training images; :func:`detector_initialiser` then turns the detector
into an initialiser ``(image, box) -> (N, 2) | None`` under the one face-selection rule
(``densereg.geometry.boxes.pick``: the detection that overlaps the evaluated face's box most, IoU >= 0.3).
"""

from __future__ import annotations

import io

import numpy as np

from densereg.data.formats import atomic_write_bytes
from densereg.geometry.boxes import pick


def _box_features(boxes):
    """``(B, 2)`` widths and heights and ``(B, 2)`` centres of ``(B, 4)`` boxes."""
    boxes = np.asarray(boxes, dtype=float).reshape(-1, 4)
    size = boxes[:, 2:] - boxes[:, :2]
    return size, 0.5 * (boxes[:, :2] + boxes[:, 2:])


class BoxToShape:
    """Place a mean shape in a face box by a regression learnt from (box, landmarks) training pairs.

    Detector boxes are not landmark boxes (each detector has its own margins and offsets), so the shape is not
    simply stretched to fill the box. Instead:

    1. the mean shape ``m`` is the average of the training shapes after removing each one's centroid and
       dividing by its RMS radius (translation and scale only: a box carries no rotation);
    2. each training shape ``P_i`` gets the least-squares similarity-without-rotation that maps ``m`` onto it,
       ``P_i ≈ s_i·m + t_i`` (``t_i`` = centroid of ``P_i``, ``s_i = <P_i − t_i, m> / <m, m>``);
    3. ``s_i`` and the offset ``t_i − c_i`` of that placement from the box centre ``c_i`` are regressed, by
       linear least squares without intercept, on the box width and height: ``s ≈ [w, h]·α``,
       ``t − c ≈ [w, h]·B``. No intercept keeps the rule equivariant: a box twice as large (or moved) gives a
       shape twice as large (or moved).

    Attributes:
        mean_shape: ``(N, 2)`` centred, unit-RMS-radius mean shape.
        alpha: ``(2,)`` scale coefficients on (w, h).
        offset: ``(2, 2)`` centre-offset coefficients: rows (w, h), columns (x, y).
    """

    def __init__(self, mean_shape=None, alpha=None, offset=None):
        self.mean_shape, self.alpha, self.offset = mean_shape, alpha, offset

    def fit(self, boxes, shapes):
        """Learn the regression from ``(B, 4)`` boxes and their ``(B, N, 2)`` landmark shapes; returns self.

        Raises:
            ValueError: mismatched counts, fewer than 2 pairs, a degenerate box or shape.
        """
        boxes = np.asarray(boxes, dtype=float).reshape(-1, 4)
        shapes = np.asarray(shapes, dtype=float)
        if shapes.ndim != 3 or shapes.shape[-1] != 2 or len(shapes) != len(boxes):
            raise ValueError(f"need (B, 4) boxes and (B, N, 2) shapes, got {boxes.shape} and {shapes.shape}")
        if len(boxes) < 2:
            raise ValueError(f"need at least 2 (box, shape) pairs to learn a box→shape regression, got {len(boxes)}")
        size, centre = _box_features(boxes)
        if not (size > 0).all():
            raise ValueError(f"{int((~(size > 0).all(axis=1)).sum())} training boxes have no positive width/height")
        centred = shapes - shapes.mean(axis=1, keepdims=True)
        radius = np.sqrt((centred ** 2).sum(axis=2).mean(axis=1))
        if not (radius > 0).all():
            raise ValueError("a training shape has all its points at one place")
        mean = (centred / radius[:, None, None]).mean(axis=0)
        mean /= np.sqrt((mean ** 2).sum(axis=1).mean())
        scale = np.einsum("bnd,nd->b", centred, mean) / (mean ** 2).sum()
        translation = shapes.mean(axis=1)
        self.mean_shape = mean
        self.alpha = np.linalg.lstsq(size, scale, rcond=None)[0]
        self.offset = np.linalg.lstsq(size, translation - centre, rcond=None)[0]
        return self

    def __call__(self, box):
        """The mean shape placed in ``box`` (``(4,)`` → ``(N, 2)``; ``(B, 4)`` → ``(B, N, 2)``)."""
        if self.mean_shape is None:
            raise RuntimeError("BoxToShape used before fit() or load()")
        single = np.ndim(box) == 1
        size, centre = _box_features(box)
        scale = size @ self.alpha
        translation = centre + size @ self.offset
        shapes = scale[:, None, None] * self.mean_shape[None] + translation[:, None, :]
        return shapes[0] if single else shapes

    def save(self, path):
        """Store the fitted regression as ``.npz`` (atomically)."""
        buffer = io.BytesIO()
        np.savez(buffer, mean_shape=self.mean_shape, alpha=self.alpha, offset=self.offset)
        atomic_write_bytes(path, buffer.getvalue())

    @classmethod
    def load(cls, path):
        """A regression stored by :meth:`save`."""
        with np.load(path) as data:
            return cls(data["mean_shape"], data["alpha"], data["offset"])

    @classmethod
    def from_samples(cls, samples):
        """Fit on the samples' own ``box`` (box file when the dataset has one, else landmark bbox) and landmarks.

        Samples without landmarks are skipped.
        """
        pairs = [(s.box, s.landmarks) for s in samples if s.landmarks is not None]
        if not pairs:
            raise ValueError("no annotated training samples to learn the box→shape regression from")
        return cls().fit(np.stack([b for b, _ in pairs]), np.stack([p for _, p in pairs]))


def detector_regression(detector, samples, n_fit=300):
    """A :class:`BoxToShape` learnt from ``detector``'s own boxes on (up to ``n_fit``) training samples.

    Each sampled training image is run through the detector; the detection that is the annotated face (the
    one face-selection rule) is paired with its landmarks. Images where the detector misses the face are
    skipped, since a detector's boxes (not the dataset's) are what the regression must learn to read.

    Raises:
        ValueError: fewer than 2 training faces were detected.
    """
    boxes, shapes = [], []
    for sample in samples[:: max(1, len(samples) // n_fit)]:
        if sample.landmarks is None:
            continue
        picked = pick([b for b, _ in detector.detect(sample.image())], sample.box)
        if picked is not None:
            boxes.append(picked[1])
            shapes.append(sample.landmarks)
    if len(boxes) < 2:
        raise ValueError(f"the detector found only {len(boxes)} of the sampled training faces; cannot learn "
                         "where its boxes put the landmarks")
    return BoxToShape().fit(np.stack(boxes), np.stack(shapes))


def detector_initialiser(detector, regression):
    """``init(image, box)``: the detection ``box`` designates, then the mean shape placed in it (None: missed)."""

    def initialise(image, box):
        picked = pick([b for b, _ in detector.detect(image)], box)
        return None if picked is None else regression(picked[1])

    return initialise
