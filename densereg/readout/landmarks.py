"""Landmarks from the dense UV field (paper Sec. 4.3), and their PCA-shape-model refinement.

    python -m densereg.readout.landmarks --bench [--faces 20] [--size 256] [--repeats 20]

Read-out. Every template landmark has a known template coordinate (u, v); in an image the landmark is where
the estimated field takes that value. The paper takes "the local minima of the Euclidean distance between the
estimated coordinates and the landmark coordinates", found by analysing connected components separately
(``method="components"``): pixels whose UV lies within ``tau`` of the landmark's UV form blobs, the blob
holding the smallest distance wins (ties go to the larger blob), and the landmark is placed at sub-pixel
precision by fitting the locally affine map pixel → UV on the blob and solving it for the landmark's UV.
A landmark whose UV appears nowhere within ``tau`` (the far jaw of a turned head) is reported missing (NaN):
the nearest pixel would be the silhouette, which is the "landmark marching" error the paper warns of. The
released notebook's rule, the integer argmin pixel of the distance with no visibility test, is
``method="nearest"`` (anchors.md §1.3).

Refinement. "A slightly improved initialization ... by reconstructing the detected landmarks with a PCA shape
model that is constructed from ground-truth annotations": :class:`ShapeModel` is fitted on similarity-aligned
training shapes and reconstructs a partial, noisy shape robustly (missing points are filled by the model).

``tau``: the default ``radius`` 0.025 is 7% of the built-in template's UV outer-eye distance (0.353), about
2.5-4 px on the synthetic 256×256 faces (0.006-0.01 UV per pixel), so a blob has ~20-50 pixels for the affine
fit while a landmark hidden by more than a few pixels finds none. It is raised when the face is so small that
``tau`` would span fewer than ``min_radius_px`` pixels (the density is measured from the field itself).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numba import njit

RADIUS = 0.025          # tau, in UV units (see the module docstring)
MIN_RADIUS_PX = 2.5     # tau spans at least this many pixels of the field
REGION_MARGIN = 0.25    # the harness's face box is widened by this fraction of its size on every side
MIN_OBSERVED = 6        # fewer landmarks found than this: no face here (landmarks_from_uv returns NaN)
METHODS = ("components", "nearest")


# ------------------------------------------------------------------------------------------------ read-out

@njit(cache=True, nogil=True)
def _uv_density(u, v, fg, step):
    """Median UV change per pixel over foreground pixel pairs ``step`` apart (rows and columns), NaN if none.

    The wide step keeps per-pixel noise of an estimated field (σ per pixel adds about σ·√2/step) from
    inflating the figure; every other row/column is sampled, which is plenty for a median.
    """
    h, w = u.shape
    vals = np.empty(2 * ((h + 1) // 2) * ((w + 1) // 2) + 2)
    k = 0
    for r in range(0, h, 2):
        for c in range(0, w, 2):
            if not fg[r, c]:
                continue
            if c + step < w and fg[r, c + step]:
                d = np.hypot(u[r, c + step] - u[r, c], v[r, c + step] - v[r, c]) / step
                if np.isfinite(d):
                    vals[k] = d
                    k += 1
            if r + step < h and fg[r + step, c]:
                d = np.hypot(u[r + step, c] - u[r, c], v[r + step, c] - v[r, c]) / step
                if np.isfinite(d):
                    vals[k] = d
                    k += 1
    return np.median(vals[:k]) if k else np.nan


@njit(cache=True, nogil=True)
def _read_out(u, v, fg, luv, sides, radius, min_radius_px, tie_frac, nearest):
    """The read-out on a cropped field (see :func:`read_landmarks` for the rules).

    Pixels are bucketed in a UV grid of cell ``tau`` so each landmark visits only the 3×3 cells around its
    UV; candidates are flood-filled into 8-connected components. Returns (points (L, 2) in crop pixels, NaN
    when missing; min distance (L,); tau).
    """
    height, width = u.shape
    tau = radius
    if min_radius_px > 0:
        density = _uv_density(u, v, fg, 4)
        if np.isfinite(density):
            tau = max(tau, min_radius_px * density)
    tie = tie_frac * tau
    n = 0
    for r in range(height):
        for c in range(width):
            if fg[r, c] and np.isfinite(u[r, c]) and np.isfinite(v[r, c]):
                n += 1
    rows = np.empty(n, np.int64)
    cols = np.empty(n, np.int64)
    uu = np.empty(n)
    vv = np.empty(n)
    label = np.full((height, width), -1, np.int64)
    g = max(1, int(np.ceil(1.0 / tau)))
    start = np.zeros(g * g + 1, np.int64)
    cell = np.empty(n, np.int64)
    i = 0
    for r in range(height):
        for c in range(width):
            if fg[r, c] and np.isfinite(u[r, c]) and np.isfinite(v[r, c]):
                rows[i], cols[i], uu[i], vv[i] = r, c, u[r, c], v[r, c]
                cu = min(max(int(uu[i] / tau), 0), g - 1)
                cv = min(max(int(vv[i] / tau), 0), g - 1)
                cell[i] = cu * g + cv
                start[cell[i] + 1] += 1
                i += 1
    for c in range(g * g):
        start[c + 1] += start[c]
    fill = start[:-1].copy()
    order = np.empty(n, np.int64)
    for i in range(n):
        order[fill[cell[i]]] = i
        fill[cell[i]] += 1

    n_lm = luv.shape[0]
    points = np.full((n_lm, 2), np.nan)
    dmin = np.full(n_lm, np.inf)
    cand = np.empty(n, np.int64)
    dist = np.empty(n)
    comp = np.empty(n, np.int64)
    stack = np.empty(n, np.int64)
    # per component: count, min D, argmin x, y, bbox x0 y0 x1 y1, Σw, Σwx, Σwy, Σwu, Σwv (u, v relative to
    # the landmark), Σwxx Σwxy Σwyy Σwxu Σwyu Σwxv Σwyv, seed x, y; sums use x, y relative to the seed
    cur = np.zeros(22)
    best = np.zeros(22)
    tau2 = tau * tau
    for lm in range(n_lm):
        lu, lv, su, sv = luv[lm, 0], luv[lm, 1], sides[lm, 0], sides[lm, 1]
        cu0, cv0 = int(np.floor(lu / tau)), int(np.floor(lv / tau))
        k = 0
        best_i, best_d2 = -1, np.inf
        for cu in range(max(cu0 - 1, 0), min(cu0 + 2, g)):
            for cv in range(max(cv0 - 1, 0), min(cv0 + 2, g)):
                c = cu * g + cv
                for j in range(start[c], start[c + 1]):
                    i = order[j]
                    du, dv = uu[i] - lu, vv[i] - lv
                    d2 = du * du + dv * dv
                    if d2 >= tau2 or du * su + dv * sv < 0.0:
                        continue
                    cand[k] = i
                    dist[k] = np.sqrt(d2)
                    k += 1
                    if d2 < best_d2:
                        best_i, best_d2 = i, d2
        if nearest:
            if best_i < 0:      # nothing within tau (so in no adjacent cell): the released rule scans all
                for i in range(n):
                    du, dv = uu[i] - lu, vv[i] - lv
                    if du * du + dv * dv < best_d2:
                        best_i, best_d2 = i, du * du + dv * dv
            if best_i >= 0:
                points[lm, 0], points[lm, 1] = cols[best_i], rows[best_i]
                dmin[lm] = np.sqrt(best_d2)
            continue
        for j in range(k):
            label[rows[cand[j]], cols[cand[j]]] = j
            comp[j] = -1
        have = False
        for seed in range(k):
            if comp[seed] >= 0:
                continue
            comp[seed] = seed
            ox, oy = cols[cand[seed]], rows[cand[seed]]
            cur[:] = 0.0
            cur[1] = np.inf
            cur[4], cur[5], cur[6], cur[7] = ox, oy, ox, oy
            cur[20], cur[21] = ox, oy
            stack[0] = seed
            top = 1
            while top > 0:
                top -= 1
                j = stack[top]
                i = cand[j]
                r, c = rows[i], cols[i]
                if dist[j] < cur[1]:
                    cur[1], cur[2], cur[3] = dist[j], c, r
                cur[0] += 1.0
                cur[4], cur[5] = min(cur[4], c), min(cur[5], r)
                cur[6], cur[7] = max(cur[6], c), max(cur[7], r)
                wt = 1.0 - dist[j] / tau
                x, y = float(c - ox), float(r - oy)
                eu, ev = uu[i] - lu, vv[i] - lv
                cur[8] += wt
                cur[9] += wt * x
                cur[10] += wt * y
                cur[11] += wt * eu
                cur[12] += wt * ev
                cur[13] += wt * x * x
                cur[14] += wt * x * y
                cur[15] += wt * y * y
                cur[16] += wt * x * eu
                cur[17] += wt * y * eu
                cur[18] += wt * x * ev
                cur[19] += wt * y * ev
                for dr in range(-1, 2):         # 8-connectivity
                    for dc in range(-1, 2):
                        rr, cc = r + dr, c + dc
                        if rr < 0 or cc < 0 or rr >= height or cc >= width:
                            continue
                        jj = label[rr, cc]
                        if jj >= 0 and comp[jj] < 0:
                            comp[jj] = seed
                            stack[top] = jj
                            top += 1
            if (not have) or cur[1] < best[1] - tie or (cur[1] <= best[1] + tie and cur[0] > best[0]):
                best[:] = cur
                have = True
        for j in range(k):
            label[rows[cand[j]], cols[cand[j]]] = -1
        if have:
            dmin[lm] = best[1]
            points[lm, 0], points[lm, 1] = _subpixel(best)
    return points, dmin, tau


@njit(cache=True, nogil=True)
def _subpixel(s):
    """Sub-pixel position of one component from its sums (layout in :func:`_read_out`), seed frame + seed.

    The weighted affine fit pixel → UV, centred at the weighted centroid, separates into the centroid UV
    and a 2×2 Jacobian; the landmark is where the fitted map reaches the landmark's UV. It falls back to the
    D-weighted centroid when there are too few or collinear pixels, the Jacobian is near-singular, or the
    solution leaves the component's bounding box by more than one pixel.
    """
    w = s[8]
    mx, my, mu, mv = s[9] / w, s[10] / w, s[11] / w, s[12] / w
    cx, cy = s[20] + mx, s[21] + my                     # the D-weighted centroid, image (crop) frame
    if s[0] < 4:
        return cx, cy
    cxx, cxy, cyy = s[13] / w - mx * mx, s[14] / w - mx * my, s[15] / w - my * my
    spread = 0.5 * (cxx + cyy - np.sqrt((cxx - cyy) ** 2 + 4.0 * cxy * cxy))   # smaller eigenvalue, px²
    if spread < 0.1:
        return cx, cy
    cxu, cyu = s[16] / w - mx * mu, s[17] / w - my * mu
    cxv, cyv = s[18] / w - mx * mv, s[19] / w - my * mv
    det_c = cxx * cyy - cxy * cxy
    # J = [[cxu, cyu], [cxv, cyv]] · C⁻¹ with C = [[cxx, cxy], [cxy, cyy]]
    j00 = (cxu * cyy - cyu * cxy) / det_c
    j01 = (cyu * cxx - cxu * cxy) / det_c
    j10 = (cxv * cyy - cyv * cxy) / det_c
    j11 = (cyv * cxx - cxv * cxy) / det_c
    det_j = j00 * j11 - j01 * j10
    if not abs(det_j) > 1e-3 * (j00 * j00 + j01 * j01 + j10 * j10 + j11 * j11):
        return cx, cy
    # solve J·d = −(mu, mv): the step from the centroid to where the fitted UV equals the landmark's
    x = cx + (-j11 * mu + j01 * mv) / det_j
    y = cy + (j10 * mu - j00 * mv) / det_j
    if x < s[4] - 1.0 or x > s[6] + 1.0 or y < s[5] - 1.0 or y > s[7] + 1.0:
        return cx, cy
    return x, y


def _fields(uvmap_or_u_v):
    """(u, v, mask or None) from a UVMap / DenseGT-like object or a ``(u, v)`` pair."""
    if isinstance(uvmap_or_u_v, (tuple, list)):
        u, v = uvmap_or_u_v
        mask = None
    else:
        u, v, mask = uvmap_or_u_v.u, uvmap_or_u_v.v, getattr(uvmap_or_u_v, "mask", None)
    u, v = np.asarray(u), np.asarray(v)
    if u.ndim != 2 or u.shape != v.shape:
        raise ValueError(f"u and v must be equal H×W arrays, got {u.shape} and {v.shape}")
    if mask is not None:
        mask = np.asarray(mask, bool)
        if mask.shape != u.shape:
            raise ValueError(f"mask shape {mask.shape} differs from the UV fields' {u.shape}")
    return u, v, mask


def _crop(shape, region, margin):
    """Row and column slices of the region box widened by ``margin`` of its size, clipped to the image."""
    h, w = shape
    if region is None:
        return slice(0, h), slice(0, w)
    x0, y0, x1, y1 = (float(t) for t in region)
    if not (x1 >= x0 and y1 >= y0):
        raise ValueError(f"region must be (x0, y0, x1, y1) with x1 >= x0 and y1 >= y0, got {tuple(region)}")
    mx, my = margin * (x1 - x0), margin * (y1 - y0)
    c0, c1 = max(int(np.floor(x0 - mx)), 0), min(int(np.ceil(x1 + mx)) + 1, w)
    r0, r1 = max(int(np.floor(y0 - my)), 0), min(int(np.ceil(y1 + my)) + 1, h)
    return slice(r0, max(r0, r1)), slice(c0, max(c0, c1))


def uv_density(u: np.ndarray, v: np.ndarray, fg: np.ndarray | None = None, step: int = 4) -> float:
    """Median UV change per pixel of a field over its foreground ``fg`` (default: everywhere u, v are finite)."""
    u, v = np.ascontiguousarray(u, np.float32), np.ascontiguousarray(v, np.float32)
    fg = np.ones(u.shape, bool) if fg is None else np.ascontiguousarray(fg, bool)     # NaN pairs are skipped
    return float(_uv_density(u, v, fg, int(step)))


def read_landmarks(uvmap_or_u_v, landmark_uv, region=None, method: str = "components", radius: float = RADIUS,
                   min_radius_px: float = MIN_RADIUS_PX, margin: float = REGION_MARGIN, sides=None,
                   tie: float = 0.1):
    """Landmark positions read from a dense UV field.

    Args:
        uvmap_or_u_v: an :class:`densereg.readout.forward.UVMap` (or ``DenseGT``; ``u``, ``v`` NaN on background, and
            ``mask``), or a ``(u, v)`` pair of ``H×W`` arrays.
        landmark_uv: (L, 2) template UV of the landmarks (``Template.landmark_uv``).
        region: ``(x0, y0, x1, y1)`` face box naming which face to read (several faces in one image); pixels
            outside it widened by ``margin`` are ignored. None: the whole image.
        method: ``"components"`` (the paper's, sub-pixel, with missing landmarks) or ``"nearest"`` (the
            released rule: the argmin pixel of the UV distance over the region, never missing unless the
            region has no foreground).
        radius: tau, the UV distance under which a pixel is a candidate.
        min_radius_px: tau is raised to span at least this many pixels of the field (small faces).
        margin: see ``region``.
        sides: optional (L, 2) UV directions for landmarks on a UV seam (:func:`landmark_sides`): only pixels
            on the landmark's own side count, so e.g. the inner upper- and lower-lip points, which share one
            UV, are told apart when the mouth opens. Zero rows impose nothing; ``"nearest"`` ignores it.
        tie: components whose minimum distances differ by at most ``tie·tau`` are tied (the larger wins).

    Returns:
        ``(points, confidence)``: (L, 2) float64 ``(x, y)`` with NaN rows for landmarks not found, and (L,)
        ``1 − min D / tau`` in [0, 1] (0 where missing; may be 0 for a "nearest" point beyond tau).
    """
    if method not in METHODS:
        raise KeyError(f"unknown read-out method {method!r}; valid: {list(METHODS)}")
    luv = np.array(landmark_uv, dtype=np.float64, order="C")     # fresh, writable: one numba signature
    if luv.ndim != 2 or luv.shape[1] != 2:
        raise ValueError(f"landmark_uv must be (L, 2), got {luv.shape}")
    # the released rule knows no seams: "nearest" ignores ``sides``
    side = np.zeros_like(luv) if sides is None or method == "nearest" else np.array(sides, np.float64, order="C")
    if side.shape != luv.shape:
        raise ValueError(f"sides must match landmark_uv's shape {luv.shape}, got {side.shape}")
    u, v, mask = _fields(uvmap_or_u_v)
    rs, cs = _crop(u.shape, region, margin)
    # contiguous float32 crops (UV needs no more): the kernel is compiled for one array type only
    u, v = np.ascontiguousarray(u[rs, cs], np.float32), np.ascontiguousarray(v[rs, cs], np.float32)
    fg = np.ones(u.shape, bool) if mask is None else np.ascontiguousarray(mask[rs, cs])  # NaN UV is skipped too
    points, dmin, tau = _read_out(u, v, fg, luv, side, float(radius), float(min_radius_px), float(tie),
                                  method == "nearest")
    points += [cs.start, rs.start]
    confidence = np.where(np.isfinite(dmin), np.clip(1.0 - dmin / tau, 0.0, 1.0), 0.0)
    return points, confidence


@functools.lru_cache(maxsize=8)
def landmark_sides(template) -> np.ndarray:
    """(68, 2) unit UV directions towards each landmark's own surface, for landmarks on a UV seam, else 0.

    A landmark is on a seam when another mesh vertex has exactly its UV (the built-in face's mouth line is
    duplicated so the lips can part: iBUG 60-64 sit on the upper copy, 65-67 on the lower one, and 61/67,
    62/66, 63/65 share their UV). Its side is the mean UV offset of its mesh neighbours.
    """
    uv, tris = np.asarray(template.uv), np.asarray(template.triangles)
    out = np.zeros((len(template.landmarks), 2))
    for k, vid in enumerate(np.asarray(template.landmarks)):
        twins = np.flatnonzero(np.all(np.abs(uv - uv[vid]) < 1e-9, axis=1))
        if twins.size < 2:
            continue
        nb = np.unique(tris[(tris == vid).any(axis=1)])
        offset = uv[nb[nb != vid]].mean(axis=0) - uv[vid]
        norm = np.linalg.norm(offset)
        if norm > 0:
            out[k] = offset / norm
    out.setflags(write=False)
    return out


# --------------------------------------------------------------------------------------------- shape model

def _similarity(src: np.ndarray, dst: np.ndarray, w: np.ndarray):
    """Weighted least-squares similarity ``dst ≈ a·src + t`` on complex points; returns (a, t)."""
    sw = w.sum()
    ms, md = (w * src).sum() / sw, (w * dst).sum() / sw
    s0 = src - ms
    a = (w * np.conj(s0) * (dst - md)).sum() / max((w * np.abs(s0) ** 2).sum(), 1e-300)
    return a, md - a * ms


def _complex(points: np.ndarray) -> np.ndarray:
    return points[..., 0] + 1j * points[..., 1]


@dataclass
class ShapeModel:
    """A point distribution model: mean shape plus PCA modes of similarity-aligned training shapes.

    Attributes:
        mean: (N, 2) mean shape, centred, RMS radius about 1 (the average of the aligned training shapes).
        components: (k, N, 2) orthonormal modes (k may be 0: the mean shape alone).
        variances: (k,) variance of each mode over the training set.
        noise_var: per-coordinate variance left out of the model (mean of the discarded eigenvalues); it sets
            the ridge that keeps coefficients near 0 when few points are observed.
    """

    mean: np.ndarray
    components: np.ndarray
    variances: np.ndarray
    noise_var: float

    @classmethod
    def fit(cls, shapes, n_components: int | None = None, variance: float = 0.999, iterations: int = 20):
        """Generalised Procrustes alignment of ``shapes`` (M, N, 2), then PCA.

        Args:
            n_components: modes kept; None keeps the fewest explaining ``variance`` of the total.
            variance: 0.999 by default: head rotation dominates 2D shape variance (on the synthetic training
                set 98% is explained by 5 modes, which then cannot follow a frontal face's details and makes
                the "refined" shape worse than the read-out); the ridge in :meth:`reconstruct`, not
                truncation, keeps the many modes from overfitting.
        """
        shapes = np.asarray(shapes, dtype=np.float64)
        if shapes.ndim != 3 or shapes.shape[2] != 2 or len(shapes) < 2:
            raise ValueError(f"shapes must be (M >= 2, N, 2), got {shapes.shape}")
        bad = np.flatnonzero(~np.isfinite(shapes).all(axis=(1, 2)))
        if bad.size:
            raise ValueError(f"training shapes {bad[:10].tolist()} have non-finite points")
        z = _complex(shapes)
        z = z - z.mean(axis=1, keepdims=True)
        mean = z[0] / np.sqrt((np.abs(z[0]) ** 2).mean())
        ones = np.ones(z.shape[1])
        for _ in range(iterations):
            aligned = np.stack([a * s + t for s in z for a, t in [_similarity(s, mean, ones)]])
            new = aligned.mean(axis=0)
            new -= new.mean()
            new /= np.sqrt((np.abs(new) ** 2).mean())
            a, _ = _similarity(new, mean, ones)          # keep the gauge (orientation) of the first mean
            new *= a / abs(a)
            done = np.abs(new - mean).max() < 1e-10
            mean = new
            if done:
                break
        x = np.stack([aligned.real, aligned.imag], -1).reshape(len(z), -1)
        mean_flat = x.mean(axis=0)        # the aligned shapes' own average (≈ the unit-size GPA mean)
        mean = mean_flat[0::2] + 1j * mean_flat[1::2]
        _, s, vt = np.linalg.svd(x - mean_flat, full_matrices=False)
        eig = s ** 2 / (len(z) - 1)
        rank = int(np.sum(eig > 1e-12 * max(eig.max(initial=0), 1e-300)))
        if n_components is None:
            cum = np.cumsum(eig) / max(eig.sum(), 1e-300)
            n_components = int(np.searchsorted(cum, variance) + 1) if rank else 0
        k = int(min(n_components, rank))
        d = x.shape[1]
        left = eig[k:].sum() / max(d - k, 1)
        noise = max(left, 1e-10 * eig.sum() / d, 1e-12)
        return cls(mean=np.stack([mean.real, mean.imag], -1), components=vt[:k].reshape(k, -1, 2),
                   variances=eig[:k], noise_var=float(noise))

    @classmethod
    def from_mean(cls, mean_shape):
        """A model with no modes: reconstruction places the mean shape by a similarity (fills gaps)."""
        z = _complex(np.asarray(mean_shape, dtype=np.float64))
        z = z - z.mean()
        z /= np.sqrt((np.abs(z) ** 2).mean())
        return cls(np.stack([z.real, z.imag], -1), np.zeros((0, len(z), 2)), np.zeros(0), 1.0)

    @classmethod
    def from_template(cls, template):
        """The template's landmarks seen frontally (y flipped to image rows), as a mean-only model."""
        pts = np.asarray(template.vertices)[np.asarray(template.landmarks), :2] * [1.0, -1.0]
        return cls.from_mean(pts)

    @property
    def n_components(self) -> int:
        return int(len(self.variances))

    def _fit_observed(self, p: np.ndarray, w: np.ndarray, obs: np.ndarray, iterations: int, noise: float):
        """Similarity and ridge-regularised coefficients fitted jointly to the observed points.

        Minimises ``Σ_obs w·|a·(m + P·c) + t − p|² + |a₀|²·(noise_var + noise²)·Σ c²/λ`` over the
        complex similarity (a, t) and the mode coefficients c (Levenberg-Marquardt: the problem is bilinear, and
        plain alternation or Gauss-Newton steps crawl or overshoot when a profile hides half the shape). ``a₀``
        is the scale of the mean shape placed on the observed points, which fixes the prior's units.
        """
        m, comps = _complex(self.mean), _complex(self.components)          # (N,), (k, N)
        po, wo = p[obs], w[obs]
        a, t = _similarity(m[obs], po, wo)
        k = self.n_components
        if k == 0:
            return a * m + t
        mo, pc = m[obs], comps[:, obs]                                      # (|O|,), (k, |O|)
        ww = np.concatenate([wo, wo])
        prior = abs(a) ** 2 * (self.noise_var + noise ** 2) / np.maximum(self.variances, 1e-300)

        def residual(a, t, c):
            r = a * (mo + c @ pc) + t - po
            return np.concatenate([r.real, r.imag])

        c = np.zeros(k)
        r = residual(a, t, c)
        cost = float(ww @ r ** 2)
        damping = 1e-3
        for _ in range(iterations):
            s = mo + c @ pc
            cols = np.concatenate([np.stack([s, 1j * s, np.ones_like(s), 1j * np.ones_like(s)]), a * pc])
            jac = np.concatenate([cols.real, cols.imag], axis=1).T                   # (2|O|, 4 + k)
            hess = jac.T @ (ww[:, None] * jac)
            hess[4:, 4:] += np.diag(prior)
            grad = jac.T @ (ww * r)
            grad[4:] += prior * c
            improved = False
            for _ in range(10):
                step = np.linalg.solve(hess + damping * np.diag(np.diag(hess) + 1e-12), -grad)
                na, nt, nc = a + step[0] + 1j * step[1], t + step[2] + 1j * step[3], c + step[4:]
                nr = residual(na, nt, nc)
                new = float(ww @ nr ** 2 + prior @ nc ** 2)
                if new <= cost:
                    improved = True
                    break
                damping *= 4.0
            if not improved:
                break
            gain = cost - new
            a, t, c, r, cost = na, nt, nc, nr, new
            damping = max(damping / 3.0, 1e-9)
            if gain <= 1e-12 * max(cost, 1e-300):
                break
        return a * (m + c @ comps) + t

    def reconstruct(self, points, weights=None, iterations: int = 20, outlier_k: float | None = 3.0,
                    keep_observed: bool = False, noise: float = 0.01) -> np.ndarray:
        """The model instance that best explains the observed points; every point is filled.

        Args:
            points: (N, 2) with NaN rows for missing points.
            weights: optional (N,) non-negative confidences of the observed points.
            outlier_k: after a first fit, points whose residual exceeds ``outlier_k`` × the median residual
                (and 3% of the shape's RMS radius) are dropped and the fit repeated; None disables it.
            keep_observed: return the observed points unchanged and fill only the missing ones.
            noise: standard deviation of the observed points' errors, as a fraction of the shape's RMS
                radius (0.01 is about 0.5 px on a 256-pixel synthetic face). With ``noise_var`` it sets the
                ridge: without it a model with many modes would bend the unobserved points wildly to fit
                the observed ones' noise (a profile face hides a third of the shape). 0 for exact data.

        Raises:
            ValueError: wrong shape, or fewer than 3 observed points with positive weight.
        """
        p_in = np.asarray(points, dtype=np.float64)
        if p_in.shape != self.mean.shape:
            raise ValueError(f"points must be {self.mean.shape}, got {p_in.shape}")
        w = np.ones(len(p_in)) if weights is None else np.clip(np.asarray(weights, np.float64), 0, None)
        obs = np.isfinite(p_in).all(axis=1) & (w > 0)
        if obs.sum() < 3:
            raise ValueError(f"shape reconstruction needs at least 3 observed points, got {int(obs.sum())}")
        p = _complex(np.nan_to_num(p_in))
        inliers = obs
        fit = self._fit_observed(p, w, inliers, iterations, noise)
        if outlier_k is not None:
            for _ in range(5):
                # Residuals of every observed point against the current fit: a good point dropped while
                # gross outliers still bent the first fit comes back once they are gone.
                res = np.abs(fit - p)
                radius = np.sqrt((np.abs(fit - fit.mean()) ** 2).mean())
                new = obs & (res <= max(outlier_k * np.median(res[inliers]), 0.03 * radius))
                if new.sum() < max(3, MIN_OBSERVED) or np.array_equal(new, inliers):
                    break
                inliers = new
                fit = self._fit_observed(p, w, inliers, iterations, noise)
        out = np.stack([fit.real, fit.imag], -1)
        if keep_observed:
            seen = np.isfinite(p_in).all(axis=1)
            out[seen] = p_in[seen]
        return out

    def save(self, path) -> Path:
        """Write the model to ``path`` (.npz) atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp.npz")
        os.close(fd)
        try:
            np.savez(tmp, mean=self.mean, components=self.components, variances=self.variances,
                     noise_var=np.float64(self.noise_var))
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path

    @classmethod
    def load(cls, path) -> "ShapeModel":
        """Read a model written by :meth:`save`.

        Raises:
            ValueError: the file is not a shape model (names the file and what is missing or malformed).
        """
        path = Path(path)
        try:
            with np.load(path) as f:
                data = {k: f[k] for k in ("mean", "components", "variances", "noise_var")}
        except KeyError as e:
            raise ValueError(f"{path}: not a ShapeModel file, missing {e}") from None
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: cannot read a ShapeModel ({e})") from None
        mean, comps, var = data["mean"], data["components"], data["variances"]
        if mean.ndim != 2 or mean.shape[1] != 2 or comps.shape[1:] != mean.shape or len(var) != len(comps):
            raise ValueError(f"{path}: inconsistent ShapeModel arrays {mean.shape}, {comps.shape}, {var.shape}")
        return cls(mean, comps, var, float(data["noise_var"]))


# ------------------------------------------------------------------------------------------------ pipeline

def landmarks_from_uv(uvmap, template, region=None, shape_model: ShapeModel | None = None,
                      method: str = "components", **read_kw) -> np.ndarray:
    """The DenseReg initialiser's landmarks: read-out, then PCA refinement when a model is given.

    With ``shape_model`` (the ``densereg`` initialiser) every point is the model's robust reconstruction of
    the read-out, weighted by its confidence. Without it (``densereg-raw``) the read-out is kept as is and the
    landmarks not found are filled from the template's mean shape aligned on the found ones.

    Returns:
        (68, 2) finite points, or all NaN when fewer than ``MIN_OBSERVED`` landmarks were found (no face in
        the region: the harness scores it as a miss).
    """
    points, conf = read_landmarks(uvmap, template.landmark_uv, region, method=method,
                                  sides=landmark_sides(template), **read_kw)
    seen = np.isfinite(points).all(axis=1)
    if seen.sum() < MIN_OBSERVED:
        return np.full_like(points, np.nan)
    if shape_model is not None:
        return shape_model.reconstruct(points, weights=np.maximum(conf, 0.05))
    return ShapeModel.from_template(template).reconstruct(points, outlier_k=None, keep_observed=True)


# ------------------------------------------------------------------------------------------------ benchmark

def bench_faces(n: int, size: int, seed: int = 0, yaw_deg: float = 30.0):
    """``n`` exact GT UV fields of random built-in faces (yaw within ±``yaw_deg``) and their landmarks."""
    from densereg.geometry import camera, rasterize
    from densereg.geometry.templates import builtin_face

    t = builtin_face()
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        pose = np.radians([rng.normal(0, 10), rng.uniform(-yaw_deg, yaw_deg), rng.normal(0, 8)])
        cx, cy = rng.uniform(0.4, 0.6, 2) * size
        para = np.array([*pose, cx + 1, size - cy, 0.0, rng.uniform(0.17, 0.27) * size])
        shape = np.clip(rng.normal(0, 0.8, t.id_basis.shape[0]), -2.5, 2.5)
        verts = camera.project_3ddfa(t.instance(shape, rng.uniform(0, 0.5, t.exp_basis.shape[0])), para, size)
        gt = rasterize.render_gt(t, verts, size, size)
        lm = verts[t.landmarks, :2]
        out.append((gt, lm, np.concatenate([lm.min(0), lm.max(0)])))
    return t, out


def benchmark(faces: int = 20, size: int = 256, repeats: int = 20, seed: int = 0) -> dict:
    """Milliseconds per face of :func:`read_landmarks` on GT UV fields (median over faces × repeats)."""
    import numba

    numba.set_num_threads(1)
    t, data = bench_faces(faces, size, seed)
    sides = landmark_sides(t)
    result = {}
    for method in METHODS:
        read_landmarks(data[0][0], t.landmark_uv, data[0][2], method=method, sides=sides)   # JIT warm-up
        times, errors = [], []
        for gt, lm, box in data:
            for _ in range(repeats):
                t0 = time.perf_counter()
                pts, _ = read_landmarks(gt, t.landmark_uv, box, method=method, sides=sides)
                times.append(time.perf_counter() - t0)
            errors.append(np.linalg.norm(pts - lm, axis=1))
        err = np.concatenate(errors)
        result[method] = {"ms_per_face": 1e3 * float(np.median(times)),
                          "median_error_px": float(np.nanmedian(err)), "missing": float(np.mean(np.isnan(err)))}
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m densereg.readout.landmarks", description=__doc__.split("\n\n")[2])
    parser.add_argument("--bench", action="store_true", help="time the read-out on rendered GT UV fields")
    parser.add_argument("--faces", type=int, default=20)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    if not args.bench:
        parser.print_help()
        return 2
    res = benchmark(args.faces, args.size, args.repeats)
    for method, r in res.items():
        print(f"{method:>10}: {r['ms_per_face']:.2f} ms per face (68 landmarks, {args.size}×{args.size}, "
              f"one thread); median error vs GT projections {r['median_error_px']:.2f} px "
              f"(all 68, yaw ±30°), missing {100 * r['missing']:.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
