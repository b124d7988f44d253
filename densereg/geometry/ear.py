"""Ears in the iBUG 55-point markup: the ear region, the reference ear and dense ground truth by thin-plate spline.

DenseReg on ears (paper Sec. 4.7) has no 3D ear model. Its deformation-free (u, v) space is a **reference
ear**, and the dense ground truth of an annotated ear is the thin-plate spline (:mod:`densereg.geometry.tps`)
that takes the ear's 55 landmarks onto the reference's, evaluated at every pixel of the ear region.

Markup (menpo's ``ears_ibug_55``, 0-based; ``shared/reference/datasets-and-protocols.md`` §6): outer helix
0–19 (from the helix root beside the tragus, over the top, down the back to the lobule), inner helix 20–34,
tragus / concha / inferior crus 35–49, superior crus 50–54. Left and right ears use the same indices, so a
left ear's landmarks are a mirror image of a right ear's.

**Ear region.** The pixels whose centre lies inside the polygon traced by the outer helix, 0 → 19, closed by
the straight segment from the lobule end (19) back to the helix root (0), together with those inside the
convex hull of the helix root, the lobule end and every inner landmark (20–54). The closing segment runs along
the front of the ear; on real ears the tragus often stands forward of it (two of the iBUG fixtures: one has 5
inner landmarks outside the helix polygon), and the hull adds that strip. So the region holds the whole
visible auricle (helix, antihelix, concha, tragus, lobule), every landmark lies inside or on its border, and
no hair or skin behind the helix is included.

**Reference ear.** The generalised-Procrustes mean of the training landmarks (rotation, scale, translation and
*reflection* removed, so left and right ears average together), put in a canonical pose: the lobule (19) below
the top of the helix, the helix root (0) on the side of larger u, and scaled, aspect kept, into
``[MARGIN, 1 − MARGIN]²``. ``u`` grows to the right, ``v`` downwards, as for faces.

**Ground truth.** For an ear with landmarks ``L`` the spline ``f`` with ``f(L_i) = R_i`` (``R`` the reference)
gives every ear-region pixel ``p`` the coordinate ``(u, v) = f(p)``, clipped to [0, 1]; other pixels are
background (NaN). A left ear maps onto the same reference through a reflecting affine part, so the estimated
field says which way the ear faces.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from densereg.geometry.rasterize import DenseGT
from densereg.geometry.tps import ThinPlateSpline

N_POINTS = 55
GROUPS = {"outer_helix": range(0, 20), "inner_helix": range(20, 35), "concha": range(35, 50),
          "superior_crus": range(50, 55)}     # "concha" = tragus, concha and inferior crus (35-49)
OUTER_HELIX = np.arange(0, 20)
HELIX_ROOT, LOBULE = 0, 19
MARGIN = 0.05


def check_ear(landmarks) -> np.ndarray:
    """``landmarks`` as a finite (55, 2) float array, or ValueError saying what is wrong."""
    pts = np.asarray(landmarks, np.float64)
    if pts.shape != (N_POINTS, 2):
        raise ValueError(f"an ear has {N_POINTS} (x, y) landmarks, got shape {pts.shape}")
    if not np.isfinite(pts).all():
        raise ValueError("an ear's landmarks must all be finite")
    return pts


def region_polygons(landmarks) -> tuple[np.ndarray, np.ndarray]:
    """The two polygons whose union is the ear region (module docstring): the outer helix 0 → 19 (closed
    19 → 0) and the convex hull of the helix root, the lobule end and the inner landmarks 20–54."""
    pts = check_ear(landmarks)
    front = pts[np.r_[HELIX_ROOT, LOBULE, 20:N_POINTS]].astype(np.float32)
    return pts[OUTER_HELIX], cv2.convexHull(front).reshape(-1, 2).astype(np.float64)


def ear_region(landmarks, height: int, width: int) -> np.ndarray:
    """(H, W) bool: pixels whose centre lies inside either of :func:`region_polygons` (module docstring)."""
    shift = 8                                    # fillPoly's fixed-point bits: sub-pixel exact vertices
    mask = np.zeros((height, width), np.uint8)
    for polygon in region_polygons(landmarks):
        poly = np.round(polygon * (1 << shift)).astype(np.int32)
        cv2.fillPoly(mask, [poly.reshape(-1, 1, 2)], 1, lineType=cv2.LINE_8, shift=shift)
    return mask.astype(bool)


# ------------------------------------------------------------------------------------------------ reference

def _align(shape: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``shape`` (centred) rotated, possibly reflected, and scaled onto ``target`` (centred) by least squares."""
    u, s, vt = np.linalg.svd(shape.T @ target)
    rot = u @ vt                                 # orthogonal; det −1 = a reflection, allowed
    return shape @ rot * (s.sum() / max((shape ** 2).sum(), 1e-300))


def canonical_pose(shape) -> np.ndarray:
    """An ear shape rotated so the lobule is straight below the helix top, mirrored so the helix root has the
    larger x, and scaled (aspect kept) and centred into ``[MARGIN, 1 − MARGIN]²``."""
    pts = check_ear(shape) - np.asarray(shape, np.float64).mean(0)
    helix = pts[OUTER_HELIX]
    top = helix[np.argmax(np.linalg.norm(helix - pts[LOBULE], axis=1))]
    axis = top - pts[LOBULE]                    # lobule → helix top, to become (0, −1) (up in image rows)
    angle = np.arctan2(-1.0, 0.0) - np.arctan2(axis[1], axis[0])
    c, s = np.cos(angle), np.sin(angle)
    pts = pts @ np.array([[c, s], [-s, c]])
    if pts[HELIX_ROOT, 0] < pts[:, 0].mean():
        pts[:, 0] = -pts[:, 0]
    lo, hi = pts.min(0), pts.max(0)
    size = (hi - lo).max()
    return (pts - (lo + hi) / 2) * ((1 - 2 * MARGIN) / size) + 0.5


def reference_ear(shapes, iterations: int = 10) -> np.ndarray:
    """(55, 2) the reference ear of a set of (M, 55, 2) training shapes, in [0, 1] (module docstring).

    Raises:
        ValueError: no shapes, or a shape that is not 55 finite points.
    """
    shapes = [check_ear(s) for s in shapes]
    if not shapes:
        raise ValueError("the reference ear needs at least one training shape")
    centred = [s - s.mean(0) for s in shapes]
    mean = centred[0] / np.sqrt((centred[0] ** 2).sum())
    for _ in range(iterations):
        new = np.mean([_align(s, mean) for s in centred], axis=0)
        new /= np.sqrt((new ** 2).sum())
        done, mean = np.abs(new - mean).max() < 1e-10, new
        if done:
            break
    return canonical_pose(mean)


@dataclass(frozen=True, eq=False)
class EarTemplate:
    """The reference ear as a DenseReg template for the read-out (``densereg.readout.landmarks``).

    It has what the read-out and the shape-model fallback use of a face template: ``landmark_uv`` (the
    reference), per-"vertex" ``uv`` and ``triangles`` (the landmarks triangulated; no UV seams) and
    ``vertices`` whose ``(x, −y)`` are the reference points.
    """

    reference: np.ndarray
    name: str = "ear"

    def __post_init__(self):
        ref = check_ear(self.reference)
        if ref.min() < 0 or ref.max() > 1:
            raise ValueError("the reference ear must lie in [0, 1]² (see densereg.geometry.ear.reference_ear)")
        ref = ref.copy()
        ref.setflags(write=False)
        object.__setattr__(self, "reference", ref)

    @property
    def landmark_uv(self) -> np.ndarray:
        return self.reference

    @property
    def uv(self) -> np.ndarray:
        return self.reference

    @property
    def landmarks(self) -> np.ndarray:
        return np.arange(N_POINTS)

    @property
    def vertices(self) -> np.ndarray:
        return np.concatenate([self.reference * [1.0, -1.0], np.zeros((N_POINTS, 1))], axis=1)

    @property
    def triangles(self) -> np.ndarray:
        from scipy.spatial import Delaunay

        return Delaunay(self.reference).simplices.astype(np.int32)


# ------------------------------------------------------------------------------------------------ ground truth

def ear_spline(landmarks, reference) -> ThinPlateSpline:
    """The thin-plate spline taking an ear's landmarks (image pixels) onto the reference ear (UV)."""
    return ThinPlateSpline.fit(check_ear(landmarks), check_ear(reference))


def ear_gt(landmarks, reference, height: int, width: int) -> DenseGT:
    """Dense GT of one ear: (u, v) = TPS(pixel) over the ear region, NaN elsewhere; no depth; no parts."""
    mask = ear_region(landmarks, height, width)
    fx, fy = ear_spline(landmarks, reference).map_grid(height, width, mask)
    u = np.where(mask, np.clip(fx, 0.0, 1.0), np.nan).astype(np.float32)
    v = np.where(mask, np.clip(fy, 0.0, 1.0), np.nan).astype(np.float32)
    return DenseGT(u=u, v=v, mask=mask, depth=np.full((height, width), np.nan, np.float32),
                   parts=np.zeros((height, width), np.uint8))
