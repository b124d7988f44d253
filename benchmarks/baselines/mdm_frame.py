"""MDM's normalised frame: shapes, the similarity that maps a face to a square frame, and the patches read there.

MDM (Trigeorgis et al., CVPR 2016) never sees a raw image: a similarity maps it to a square *frame* in which
the current shape has the size of the reference (mean) shape, whose bounding-box diagonal is 200 px in the
published code (``compute_reference_shape(diagonal=200)``), centred. Fitting then reads one patch around each
landmark in that frame. The fitter (:mod:`benchmarks.baselines.mdm`) and its training
(:mod:`benchmarks.baselines.mdm_train`) share these steps. Affines are ``2×3`` arrays acting on ``(x, y)``.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F


def mean_shape(shapes, diagonal):
    """Mean of ``(K, 68, 2)`` shapes, each first normalised by its bounding box (centre → 0, diagonal → 1).

    No Procrustes alignment: box normalisation is what aligning to a face box undoes. The result is rescaled
    so its own bounding box has diagonal ``diagonal`` and is centred on the origin.
    """
    shapes = np.asarray(shapes, dtype=np.float64)
    lo, hi = shapes.min(axis=1, keepdims=True), shapes.max(axis=1, keepdims=True)
    normed = (shapes - (lo + hi) / 2) / np.linalg.norm(hi - lo, axis=2, keepdims=True)
    mean = normed.mean(axis=0)
    lo, hi = mean.min(axis=0), mean.max(axis=0)
    return (mean - (lo + hi) / 2) * (diagonal / np.linalg.norm(hi - lo))


def align_to_box(shape, box):
    """``shape`` translated and scaled so its bounding box has the centre and diagonal of ``(x0, y0, x1, y1)``."""
    box = np.asarray(box, dtype=np.float64)
    lo, hi = shape.min(axis=0), shape.max(axis=0)
    ratio = np.linalg.norm(box[2:] - box[:2]) / np.linalg.norm(hi - lo)
    return (shape - (lo + hi) / 2) * ratio + (box[:2] + box[2:]) / 2


def shape_spread(shape):
    """Frobenius norm of the centred shape: the size MDM normalises (menpo's ``rescale_to_pointcloud``)."""
    return float(np.linalg.norm(shape - shape.mean(axis=0)))


def frame_transform(shape, reference_spread, frame_size):
    """2×3 affine (image → frame) scaling ``shape`` to ``reference_spread`` with its centroid at the centre."""
    spread = shape_spread(shape)
    if not np.isfinite(spread) or spread <= 0:
        raise ValueError(f"cannot normalise a degenerate or non-finite shape (spread {spread})")
    s, centre = reference_spread / spread, (frame_size - 1) / 2.0
    cx, cy = shape.mean(axis=0)
    return np.array([[s, 0.0, centre - s * cx], [0.0, s, centre - s * cy]])


def apply_affine(affine, points):
    """Apply a 2×3 affine to ``(N, 2)`` points."""
    return points @ affine[:, :2].T + affine[:, 2]


def compose(outer, inner):
    """The 2×3 affine ``outer ∘ inner``."""
    return np.hstack([outer[:, :2] @ inner[:, :2], (outer[:, :2] @ inner[:, 2] + outer[:, 2])[:, None]])


def invert(affine):
    linear = np.linalg.inv(affine[:, :2])
    return np.hstack([linear, -(linear @ affine[:, 2])[:, None]])


def warp_to_frame(image, affine, size):
    """Resample ``image`` (H×W×C) into a ``size×size`` frame through the image→frame ``affine`` (bilinear).

    Shrinking by more than 4/3 first area-averages the region the frame covers (bilinear sampling alone would
    alias, e.g. on large real photos); outside the image is 0. Pixel centres are integers on both sides.
    """
    scale = math.sqrt(abs(np.linalg.det(affine[:, :2])))
    if scale < 0.75:
        corners = apply_affine(invert(affine), np.array([[0, 0], [size, 0], [0, size], [size, size]], float))
        x0, y0 = np.maximum(np.floor(corners.min(axis=0)).astype(int) - 2, 0)
        x1, y1 = np.minimum(np.ceil(corners.max(axis=0)).astype(int) + 3, [image.shape[1], image.shape[0]])
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            w, h = max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale))
            image = cv2.resize(image[y0:y1, x0:x1], (w, h), interpolation=cv2.INTER_AREA)
            fx, fy = w / (x1 - x0), h / (y1 - y0)
            to_small = np.array([[fx, 0.0, (0.5 - x0) * fx - 0.5], [0.0, fy, (0.5 - y0) * fy - 0.5]])
            affine = compose(affine, invert(to_small))
    return cv2.warpAffine(image, affine, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=0)


def extract_patches(frames, points, size):
    """Bilinear ``size×size`` patches centred on each point (zeros outside the frame).

    Args:
        frames: ``(B, C, H, W)`` tensor.
        points: ``(B, N, 2)`` ``(x, y)`` pixel positions; patch pixel ``(r, c)`` samples
            ``(x + c − (size−1)/2, y + r − (size−1)/2)``. No gradient flows to the positions (as in MDM).
        size: patch side.

    Returns:
        ``(B, N, C, size, size)`` tensor.
    """
    b, c, h, w = frames.shape
    n = points.shape[1]
    offsets = torch.arange(size, dtype=frames.dtype) - (size - 1) / 2
    xs = points.detach()[:, :, None, None, 0] + offsets[None, None, None, :]       # (B, N, 1, S)
    ys = points.detach()[:, :, None, None, 1] + offsets[None, None, :, None]       # (B, N, S, 1)
    grid = torch.stack(torch.broadcast_tensors(2 * xs / (w - 1) - 1, 2 * ys / (h - 1) - 1), dim=-1)
    sampled = F.grid_sample(frames, grid.reshape(b, n * size, size, 2), mode="bilinear", padding_mode="zeros",
                            align_corners=True)                                     # (B, C, N*S, S)
    return sampled.reshape(b, c, n, size, size).permute(0, 2, 1, 3, 4)
