"""Ground-truth renderer: a posed 3D mesh → per-pixel UV, depth, visibility and part label (paper Sec. 2).

(``python -m densereg.geometry.raster_bench`` times it.) Cameras that put a mesh in the image frame are in
:mod:`densereg.geometry.camera`.

DenseReg's training targets come from rasterising a fitted 3D face whose vertices carry template
coordinates ``(u, v)``: every pixel takes the UV of the nearest surface through it, found by z-buffering.
This module does exactly that and nothing face-specific; it works on plain arrays so any mesh can be drawn.

Image frame (the package conventions): ``verts_img[:, 0]`` = column x, ``[:, 1]`` = row y (down), 0-based
with integer values at pixel centres, ``[:, 2]`` = depth, **larger = closer to the camera**.

Coverage rule: pixel (row i, column j) belongs to a triangle when its centre (x=j, y=i) is inside it. Points
exactly on an edge go to the triangle for which that edge is a *top* edge (horizontal, interior below) or a
*left* edge (interior to its right), so two triangles sharing an edge never both claim, nor both miss, a pixel
on it. To make that rule exact, vertex positions are snapped to 1/256 pixel and edge functions are evaluated in
64-bit integers (as GPU rasterisers do). Triangles are drawn whichever way they face (no culling), so the
nearest surface always wins, at silhouettes and where the back of a mesh shows.

Perspective: :func:`densereg.geometry.camera.project_perspective` puts *inverse* depth ``1/d`` in the z
column; it is exactly affine in screen space, so the z-buffer is exact, and ``rasterize(..., perspective_correct=True)`` turns the
screen-space barycentrics into perspective-correct ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from densereg.geometry.camera import as_vertices

SUBPIXEL = 256  # fixed-point steps per pixel (8 sub-pixel bits); vertex positions move by at most 1/512 px
_MAX_COORD = float(2**20)  # |x|, |y| beyond this (pixels) cannot be held exactly; such triangles are skipped


# -------------------------------------------------------------------------------------------- rasteriser

@dataclass
class Raster:
    """What :func:`rasterize` sees at each pixel.

    Attributes:
        attr: (H, W, C) float32 per-vertex attributes interpolated with ``bary``; NaN on background.
        mask: (H, W) bool, True where some triangle covers the pixel centre.
        depth: (H, W) float32 interpolated z of the winning surface (larger = closer); NaN on background.
        triangle: (H, W) int32 index of the winning triangle; -1 on background.
        bary: (H, W, 3) float32 weights of that triangle's three vertices (in ``triangles`` order); 0 on
            background.
    """

    attr: np.ndarray
    mask: np.ndarray
    depth: np.ndarray
    triangle: np.ndarray
    bary: np.ndarray


@njit(cache=True, nogil=True)
def _edge_owned(dx, dy):
    # Top-left rule for a triangle with positive area (interior on the positive side of each edge, y down):
    # a left edge runs upwards (dy < 0); a top edge is horizontal and runs to the right.
    return dy < 0 or (dy == 0 and dx > 0)


@njit(cache=True, nogil=True)
def _snap(verts, X, Y, ok):
    """Vertex positions in 1/SUBPIXEL fixed point; ``ok`` False for non-finite or far-off corners."""
    S = SUBPIXEL
    for k in range(verts.shape[0]):
        x, y, z = verts[k, 0], verts[k, 1], verts[k, 2]
        # NaN fails every comparison, so non-finite corners are rejected here too.
        ok[k] = abs(x) < _MAX_COORD and abs(y) < _MAX_COORD and abs(z) < np.inf
        X[k] = np.int64(np.floor(x * S + 0.5)) if ok[k] else 0
        Y[k] = np.int64(np.floor(y * S + 0.5)) if ok[k] else 0


@njit(cache=True, nogil=True)
def _scan(verts, tris, height, width, zbuf, tbuf, bbuf):
    """Z-buffered scan of every triangle's bounding box with incremental integer edge functions.

    Speed (``raster_bench``; the pixel loop is most of the time): each edge function carries its top-left
    bias, so "inside" is one sign test of the three OR-ed together, and the candidate depth is computed before
    that test so the loop has a single, combined branch. Every value is computed exactly as before (the same
    integers, the same float expressions), so the output is bit-identical (``tests/test_rasterize.py``).
    """
    S = SUBPIXEL
    n = verts.shape[0]
    X = np.empty(n, dtype=np.int64)
    Y = np.empty(n, dtype=np.int64)
    ok = np.empty(n, dtype=np.bool_)
    _snap(verts, X, Y, ok)
    for t in range(tris.shape[0]):
        a, b, c = tris[t, 0], tris[t, 1], tris[t, 2]
        if not (ok[a] and ok[b] and ok[c]):
            continue
        xa, ya, xb, yb, xc, yc = X[a], Y[a], X[b], Y[b], X[c], Y[c]
        # Bounding box of pixel centres, clipped to the image (ceil/floor of fixed-point / S).
        j0 = max(-((-min(xa, xb, xc)) // S), 0)
        j1 = min(max(xa, xb, xc) // S, width - 1)
        i0 = max(-((-min(ya, yb, yc)) // S), 0)
        i1 = min(max(ya, yb, yc) // S, height - 1)
        if j0 > j1 or i0 > i1:
            continue
        area = (xb - xa) * (yc - ya) - (yb - ya) * (xc - xa)
        if area == 0:
            continue
        swapped = area < 0  # a back-facing triangle: swap two corners so the interior is positive
        if swapped:
            b, c = c, b
            xb, yb, xc, yc = xc, yc, xb, yb
            area = -area
        # Edge k is opposite corner k; its function is that corner's unnormalised barycentric weight.
        dx0, dy0 = xc - xb, yc - yb
        dx1, dy1 = xa - xc, ya - yc
        dx2, dy2 = xb - xa, yb - ya
        bias0 = 0 if _edge_owned(dx0, dy0) else -1
        bias1 = 0 if _edge_owned(dx1, dy1) else -1
        bias2 = 0 if _edge_owned(dx2, dy2) else -1
        px, py = j0 * S, i0 * S
        # Biased edge functions: the pixel is inside when all three are >= 0, i.e. when their OR is.
        r0 = dx0 * (py - yb) - dy0 * (px - xb) + bias0
        r1 = dx1 * (py - yc) - dy1 * (px - xc) + bias1
        r2 = dx2 * (py - ya) - dy2 * (px - xa) + bias2
        s0, s1, s2 = dy0 * S, dy1 * S, dy2 * S
        inv = 1.0 / area
        za, zb, zc = verts[a, 2], verts[b, 2], verts[c, 2]
        for i in range(i0, i1 + 1):
            e0, e1, e2 = r0, r1, r2
            zrow = zbuf[i]
            for j in range(j0, j1 + 1):
                l0 = (e0 - bias0) * inv
                l1 = (e1 - bias1) * inv
                l2 = (e2 - bias2) * inv
                z = l0 * za + l1 * zb + l2 * zc
                if ((e0 | e1 | e2) >= 0) & (z > zrow[j]):
                    zrow[j] = z
                    tbuf[i, j] = t
                    bbuf[i, j, 0] = l0
                    if swapped:
                        bbuf[i, j, 1] = l2
                        bbuf[i, j, 2] = l1
                    else:
                        bbuf[i, j, 1] = l1
                        bbuf[i, j, 2] = l2
                e0 -= s0
                e1 -= s1
                e2 -= s2
            r0 += dx0 * S
            r1 += dx1 * S
            r2 += dx2 * S


@njit(cache=True, nogil=True)
def _interpolate(verts, tris, attrs, tbuf, bbuf, perspective_correct, attr, depth):
    """Per pixel: attributes from the winning triangle's barycentrics; NaN depth/attr on background."""
    height, width = tbuf.shape
    n_attr = attrs.shape[1]
    ok = True
    for i in range(height):
        for j in range(width):
            t = tbuf[i, j]
            if t < 0:
                depth[i, j] = np.nan
                for c in range(n_attr):
                    attr[i, j, c] = np.nan
                continue
            a, b, c3 = tris[t, 0], tris[t, 1], tris[t, 2]
            w0, w1, w2 = np.float64(bbuf[i, j, 0]), np.float64(bbuf[i, j, 1]), np.float64(bbuf[i, j, 2])
            if perspective_correct:
                # z is inverse depth: attribute/depth is affine in screen space, so weight by it and renormalise.
                w0, w1, w2 = w0 * verts[a, 2], w1 * verts[b, 2], w2 * verts[c3, 2]
                total = w0 + w1 + w2
                if not total > 0:
                    ok = False
                    total = 1.0
                w0, w1, w2 = w0 / total, w1 / total, w2 / total
                bbuf[i, j, 0], bbuf[i, j, 1], bbuf[i, j, 2] = w0, w1, w2
            for c in range(n_attr):
                attr[i, j, c] = w0 * attrs[a, c] + w1 * attrs[b, c] + w2 * attrs[c3, c]
    return ok


def rasterize(verts_img, triangles, attributes, height: int, width: int,
              perspective_correct: bool = False) -> Raster:
    """Z-buffers a mesh given in image coordinates and interpolates per-vertex attributes.

    Args:
        verts_img: (V, 3) ``(x, y, z)``: column, row (0-based pixel centres), depth (larger = closer).
        triangles: (T, 3) vertex indices. Triangles with a non-finite or far-off (>2^20 px) corner, zero area
            or no pixel centre inside the image are skipped.
        attributes: (V, C) or (V,) per-vertex values (e.g. the template UV), interpolated into ``attr``.
        height, width: image size in pixels.
        perspective_correct: set when z is inverse depth (as :func:`~densereg.geometry.camera.project_perspective` gives) to weight
            the attribute interpolation by it; otherwise screen-space (affine) barycentrics are used, which is
            exact for orthographic cameras.

    Returns:
        A :class:`Raster`.
    """
    verts = as_vertices(verts_img)
    tris = np.asarray(triangles)
    if tris.ndim != 2 or tris.shape[1] != 3 or not np.issubdtype(tris.dtype, np.integer):
        raise ValueError(f"triangles must be a (T, 3) integer array, got {tris.dtype} {tris.shape}")
    if tris.size and (tris.min() < 0 or tris.max() >= len(verts)):
        raise ValueError(f"triangles index vertices {tris.min()}..{tris.max()}, but there are {len(verts)}")
    attrs = np.asarray(attributes, dtype=np.float64)
    attrs = np.ascontiguousarray(attrs[:, None] if attrs.ndim == 1 else attrs)
    if attrs.ndim != 2 or len(attrs) != len(verts):
        raise ValueError(f"attributes must be (V, C) or (V,) with V = {len(verts)}, got {attrs.shape}")
    if int(height) <= 0 or int(width) <= 0:
        raise ValueError(f"image size must be positive, got {height}×{width}")
    height, width = int(height), int(width)

    zbuf = np.full((height, width), -np.inf)
    tbuf = np.full((height, width), -1, dtype=np.int32)
    bbuf = np.zeros((height, width, 3), dtype=np.float32)
    tris = np.ascontiguousarray(tris, dtype=np.int64)
    verts = np.ascontiguousarray(verts)
    _scan(verts, tris, height, width, zbuf, tbuf, bbuf)
    attr = np.empty((height, width, attrs.shape[1]), dtype=np.float32)
    depth = zbuf.astype(np.float32)
    if not _interpolate(verts, tris, attrs, tbuf, bbuf, bool(perspective_correct), attr, depth):
        raise ValueError("perspective_correct needs z = inverse depth > 0 (see project_perspective)")
    return Raster(attr, tbuf >= 0, depth, tbuf, bbuf)


# ------------------------------------------------------------------------------------- DenseReg targets

@dataclass
class DenseGT:
    """Dense ground truth of one image (paper Sec. 2 and 4.2).

    Attributes:
        u, v: (H, W) float32 template coordinates of the visible surface; NaN on background.
        mask: (H, W) bool foreground.
        depth: (H, W) float32 depth normalised to [0, 1] over the foreground, 1 = closest; NaN on background.
        parts: (H, W) uint8 face-part label ``template.part_at(u, v)``; 0 ("other") on background.
    """

    u: np.ndarray
    v: np.ndarray
    mask: np.ndarray
    depth: np.ndarray
    parts: np.ndarray


def render_gt(template, verts_img, height: int, width: int, perspective_correct: bool = False) -> DenseGT:
    """Renders the DenseReg targets of a posed template.

    Args:
        template: anything with ``triangles`` (T, 3), ``uv`` (V, 2) and ``part_at(u, v)`` (duck-typed
            :class:`densereg.geometry.template.Template`).
        verts_img: (V, 3) posed vertices in the image frame, e.g. from :func:`densereg.geometry.camera.project_3ddfa`.
        height, width: image size.
        perspective_correct: see :func:`rasterize`.
    """
    r = rasterize(verts_img, template.triangles, template.uv, height, width, perspective_correct)
    depth = np.full((height, width), np.nan, dtype=np.float32)
    parts = np.zeros((height, width), dtype=np.uint8)
    if r.mask.any():
        d = r.depth[r.mask].astype(np.float64)
        span = d.max() - d.min()
        # A flat (constant-depth) foreground has no near/far: call all of it closest.
        depth[r.mask] = (d - d.min()) / span if span > 0 else 1.0
        parts[r.mask] = np.asarray(template.part_at(r.attr[..., 0][r.mask], r.attr[..., 1][r.mask]))
    return DenseGT(r.attr[..., 0].copy(), r.attr[..., 1].copy(), r.mask, depth, parts)


# ------------------------------------------------------------------------------ round-trip check (UV read-back)

def visible_vertices(verts_img, depth, tol: float = 1.0, margin: int = 0,
                     max_step: float = np.inf) -> np.ndarray:
    """Which vertices are seen: their nearest pixel is foreground and no surface there is ``tol`` closer.

    Args:
        verts_img: (V, 3) projected vertices.
        depth: (H, W) rendered depth (``Raster.depth``, un-normalised), NaN on background.
        tol: allowed depth excess of the rendered surface over the vertex, in z units (pixels for
            :mod:`densereg.geometry.camera`'s ortho / 3DDFA cameras; inverse depth for its perspective one).
        margin: also require every pixel within this many pixels (a square window) to be foreground and
            no more than ``max_step`` farther than the vertex. This leaves out vertices on a silhouette or an
            occlusion edge (e.g. the chin over the neck), where a one-pixel read-out is ill-posed.
        max_step: see ``margin``; same units as ``tol``.

    Returns:
        (V,) bool.
    """
    verts = as_vertices(verts_img)
    h, w = depth.shape
    col, row = np.round(verts[:, 0]), np.round(verts[:, 1])
    inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    ci, ri = col[inside].astype(int), row[inside].astype(int)
    z = verts[inside, 2]
    seen = np.zeros(len(verts), dtype=bool)
    # NaN depth (background) compares False, so such vertices stay unseen.
    seen[inside] = depth[ri, ci] <= z + tol
    if margin > 0:
        m = int(margin)
        offsets = np.arange(2 * m + 1)
        padded = np.pad(np.asarray(depth, dtype=np.float64), m, constant_values=np.nan)
        window = padded[ri[:, None, None] + offsets[:, None], ci[:, None, None] + offsets[None, :]]
        seen[inside] &= (window.reshape(len(z), -1) >= (z - max_step)[:, None]).all(axis=1)
    return seen


def uv_readback_error(u_map, v_map, mask, verts_img, uv, vertex_ids) -> np.ndarray:
    """Pixel distance between each vertex's projection and the pixel whose rendered UV is nearest its UV.

    This is DenseReg's landmark read-out (nearest regressed UV, datasets-and-protocols.md §3.1) applied to
    the ground truth, so it checks the rasteriser end to end: small errors mean UV was interpolated at the
    right pixels. Use it on visible vertices only (:func:`visible_vertices`).

    Returns:
        (N,) float64 errors in pixels, one per entry of ``vertex_ids``.
    """
    from scipy.spatial import cKDTree  # only this check needs scipy

    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        raise ValueError("uv_readback_error: the rendered mask is empty")
    tree = cKDTree(np.stack([u_map[rows, cols], v_map[rows, cols]], axis=1))
    ids = np.asarray(vertex_ids)
    _, nearest = tree.query(np.asarray(uv, dtype=np.float64)[ids])
    found = np.stack([cols[nearest], rows[nearest]], axis=1)
    return np.linalg.norm(found - as_vertices(verts_img)[ids, :2], axis=1)
