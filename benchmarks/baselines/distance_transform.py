"""The generalised distance transform (Felzenszwalb & Huttenlocher, Theory of Computing 2012).

A DPM part may move away from its anchor at a quadratic cost ``d · (dx, dx², dy, dy²)``; the score of a root
position takes, for every part, the best placement ``max over (dx, dy) of response − cost``. Done naively that is
quadratic in the map size per part; the lower envelope of parabolas makes it linear (rows, then columns), and
also returns the maximiser, which is where the part goes. Used by :mod:`benchmarks.baselines.dpm` to score and
by its training to read the latent part placements.
"""

from __future__ import annotations

import numba
import numpy as np



@numba.njit(cache=True)
def _dt1d(src, a, b, dst, arg):
    """``dst[p] = max_q src[q] - a·(q-p)² - b·(q-p)`` and its argmax, by the lower envelope of parabolas."""
    n = src.shape[0]
    v = np.empty(n, np.int64)
    z = np.empty(n + 1)
    k = 0
    v[0] = 0
    z[0] = -np.inf
    z[1] = np.inf
    for q in range(1, n):
        fq = -src[q] + a * q * q + b * q
        while True:
            r = v[k]
            s = (fq - (-src[r] + a * r * r + b * r)) / (2.0 * a * (q - r))
            if s <= z[k]:
                k -= 1
            else:
                break
        k += 1
        v[k] = q
        z[k] = s
        z[k + 1] = np.inf
    k = 0
    for p in range(n):
        while z[k + 1] < p:
            k += 1
        q = v[k]
        d = q - p
        dst[p] = src[q] - a * d * d - b * d
        arg[p] = q


@numba.njit(cache=True)
def _dt2d(values, ax, bx, ay, by, y0, ny, x0, nx, step):
    """2-D transform (rows, then columns), evaluated only at rows ``y0 + step·i`` and columns ``x0 + step·j``."""
    h, w = values.shape
    rows = np.empty((h, w))
    argx = np.empty((h, w), np.int64)
    for y in range(h):
        _dt1d(values[y], ax, bx, rows[y], argx[y])
    out = np.empty((ny, nx))
    iy = np.empty((ny, nx), np.int64)
    ix = np.empty((ny, nx), np.int64)
    col = np.empty(h)
    buf = np.empty(h)
    ibuf = np.empty(h, np.int64)
    for j in range(nx):
        x = x0 + step * j
        for y in range(h):
            col[y] = rows[y, x]
        _dt1d(col, ay, by, buf, ibuf)
        for i in range(ny):
            y = y0 + step * i
            out[i, j] = buf[y]
            iy[i, j] = ibuf[y]
            ix[i, j] = argx[ibuf[y], x]
    return out, iy, ix


def distance_transform_1d(values, a, b):
    """``out[p] = max_q values[q] - a·(q-p)² - b·(q-p)`` (``a > 0``) and the maximising ``q``, in linear time."""
    if a <= 0:
        raise ValueError(f"quadratic deformation weight must be positive, got {a}")
    src = np.ascontiguousarray(values, dtype=np.float64)
    dst, arg = np.empty_like(src), np.empty(src.shape, np.int64)
    _dt1d(src, float(a), float(b), dst, arg)
    return dst, arg


def distance_transform_2d(values, deformation, origin=(0, 0), shape=None, step=1):
    """Best part score for every anchor position under a quadratic deformation cost.

    Args:
        values: ``(H, W)`` part filter responses.
        deformation: ``(4,)`` cost weights of ``(dx, dx², dy, dy²)``, displacement = part position − anchor.
        origin, shape, step: evaluate only at anchors ``origin + step·(i, j)`` for ``(i, j)`` in ``shape``
            (default: every position). Roots are scanned at half the part resolution, hence ``step = 2``.

    Returns:
        ``(out, iy, ix)``: ``out[p] = max_q values[q] − deformation · (dx, dx², dy, dy²)`` with
        ``q − p = (dy, dx)``, and the row/column of the maximising ``q``.
    """
    bx, ax, by, ay = (float(v) for v in deformation)
    if ax <= 0 or ay <= 0:
        raise ValueError(f"quadratic deformation weights must be positive, got {deformation}")
    values = np.ascontiguousarray(values, dtype=np.float64)
    ny, nx = values.shape if shape is None else shape
    if origin[0] + step * (ny - 1) >= values.shape[0] or origin[1] + step * (nx - 1) >= values.shape[1]:
        raise ValueError(f"anchors {origin} + {step}·{(ny, nx)} fall outside the {values.shape} response map")
    return _dt2d(values, ax, bx, ay, by, int(origin[0]), int(ny), int(origin[1]), int(nx), int(step))
