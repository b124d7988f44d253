"""The compiled core of the landmark read-out: searching a UV field for the pixels nearest a landmark's UV.

:func:`densereg.readout.landmarks.read_landmarks` documents the rules (candidates within ``tau``, 8-connected
components, the best component, a sub-pixel affine fit); these numba kernels implement them on one cropped
field. They are private to the read-out: call ``read_landmarks``.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def median_uv_step(u, v, fg, step):
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
def search_landmarks(u, v, fg, luv, sides, radius, min_radius_px, tie_frac, nearest):
    """The read-out on a cropped field (see :func:`read_landmarks` for the rules).

    Pixels are bucketed in a UV grid of cell ``tau`` so each landmark visits only the 3×3 cells around its
    UV; candidates are flood-filled into 8-connected components. Returns (points (L, 2) in crop pixels, NaN
    when missing; min distance (L,); tau).
    """
    height, width = u.shape
    tau = radius
    if min_radius_px > 0:
        density = median_uv_step(u, v, fg, 4)
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
    """Sub-pixel position of one component from its sums (layout in :func:`search_landmarks`), seed frame + seed.

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
