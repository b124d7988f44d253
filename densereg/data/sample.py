"""One annotated face of a dataset split: the :class:`Sample` every reader returns and every consumer takes.

Ground-truth landmarks travel with the sample but reach only the metrics; an initialiser or a fitter sees the
image and the box, and the box only says *which* face is evaluated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from densereg.data import formats


@dataclass
class Sample:
    """One annotated face of a dataset split.

    Attributes:
        name: id unique within the dataset, relative to its folder, e.g. ``"01_Indoor/indoor_001"``.
        image_path: the image (or, for 300-VW without extracted frames, the video; ``extras["frame"]`` says which).
        landmarks: ``(N, 2)`` 0-based ``(x, y)`` ground truth, or None when the dataset has none for this image.
        box: ``(x0, y0, x1, y1)`` ground-truth face box: the dataset's box file when it has one, else the
            landmarks' bounding box (``extras["box_source"]`` says which). Only for choosing *which* face.
        extras: dataset specifics: ``split``, ``subset``, ``frame``, ``fitting`` (path of a ``.mat``),
            ``unreliable``, ...
    """

    name: str
    image_path: Path
    landmarks: np.ndarray | None
    box: np.ndarray
    extras: dict = field(default_factory=dict)

    def image(self):
        """The sample's pixels as ``H×W×3`` uint8 RGB."""
        if "frame" in self.extras and self.image_path.suffix.lower() in formats.VIDEO_EXTS:
            return formats.read_video_frame(self.image_path, self.extras["frame"])
        return formats.read_image(self.image_path)


def landmarks_box(points):
    """The tight ``(x0, y0, x1, y1)`` box around ``(N, 2)`` points."""
    points = np.asarray(points, dtype=np.float64)
    return np.concatenate([points.min(axis=0), points.max(axis=0)])

