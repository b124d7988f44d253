"""Ground-truth renderer: a posed 3D mesh → per-pixel UV, depth, visibility and part label (paper Sec. 2).

    python -m densereg.geometry.rasterize --bench --triangles 20000 --size 256

(the command above times the renderer on one core; the module is otherwise a library.)

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

Perspective: :func:`project_perspective` puts *inverse* depth ``1/d`` in the z column; it is exactly affine in
screen space, so the z-buffer is exact, and ``rasterize(..., perspective_correct=True)`` turns the
screen-space barycentrics into perspective-correct ones.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np
from numba import njit

SUBPIXEL = 256  # fixed-point steps per pixel (8 sub-pixel bits); vertex positions move by at most 1/512 px
_MAX_COORD = float(2**20)  # |x|, |y| beyond this (pixels) cannot be held exactly; such triangles are skipped


# ----------------------------------------------------------------------------------------------- cameras

def rotation_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Our own pose convention: ``R = Rz(roll) @ Ry(yaw) @ Rx(pitch)``, right-handed, angles in radians.

    In template space (x to the viewer's right, y up, z out of the face towards the camera):

    * positive **yaw** (about y) turns the nose towards the viewer's right (image +x);
    * positive **pitch** (about x) tilts the nose down (the face looks down);
    * positive **roll** (about z) turns the face counter-clockwise as seen in the image.

    Returns:
        3×3 float64 rotation matrix acting on column vectors (``p = R @ v``).
    """
    cy, sy = np.cos(yaw), np.sin(yaw)
    cp, sp = np.cos(pitch), np.sin(pitch)
    cr, sr = np.cos(roll), np.sin(roll)
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cp, -sp], [0.0, sp, cp]])
    ry = np.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
    rz = np.array([[cr, -sr, 0.0], [sr, cr, 0.0], [0.0, 0.0, 1.0]])
    return rz @ ry @ rx


def _as_vertices(vertices) -> np.ndarray:
    vertices = np.asarray(vertices, dtype=np.float64)
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise ValueError(f"vertices must be a (V, 3) array, got shape {vertices.shape}")
    return vertices


def project_ortho(vertices, R, scale: float, tx: float, ty: float) -> np.ndarray:
    """Scaled orthographic camera: ``p = scale·R·v``; ``x = p_x + tx``, ``y = ty − p_y``, ``z = p_z``.

    ``(tx, ty)`` is the pixel where the template origin lands; y is flipped because template y points up and
    image rows go down. z keeps the template's "towards the camera" direction, so larger = closer.

    Returns:
        ``verts_img`` (V, 3) float64.
    """
    p = scale * _as_vertices(vertices) @ np.asarray(R, dtype=np.float64).T
    return np.stack([p[:, 0] + tx, ty - p[:, 1], p[:, 2]], axis=1)


def rotation_3ddfa(pitch: float, yaw: float, roll: float) -> np.ndarray:
    """The rotation of 3DDFA / 300W-LP ``Pose_Para`` (``angle2matrix_3ddfa`` in face3d): ``Rx @ Ry @ Rz``.

    Its elementary matrices are the transposes of the usual ones (``Rx = [[1,0,0],[0,c,s],[0,−s,c]]``,
    ``Ry = [[c,0,−s],[0,1,0],[s,0,c]]``, ``Rz = [[c,s,0],[−s,c,0],[0,0,1]]``), which is why the angles of a
    300W-LP fit cannot be fed to :func:`rotation_matrix`.
    """
    cx, sx = np.cos(pitch), np.sin(pitch)
    cy, sy = np.cos(yaw), np.sin(yaw)
    cz, sz = np.cos(roll), np.sin(roll)
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cx, sx], [0.0, -sx, cx]])
    ry = np.array([[cy, 0.0, -sy], [0.0, 1.0, 0.0], [sy, 0.0, cy]])
    rz = np.array([[cz, sz, 0.0], [-sz, cz, 0.0], [0.0, 0.0, 1.0]])
    return rx @ ry @ rz


def project_3ddfa(vertices, pose_para, height: int) -> np.ndarray:
    """Projects a BFM-space mesh with a 300W-LP / AFLW2000-3D ``Pose_Para`` into our 0-based image frame.

    3DDFA's MATLAB code computes ``V = f·R·S + t3d`` and takes 1-based pixel ``(V_x, height + 1 − V_y)``
    (datasets-and-protocols.md §3); the fit was made against 1-based landmarks (``pt2d``). In our 0-based
    frame that is ``x = V_x − 1``, ``y = height − V_y``, and z = ``V_z`` (orthographic; larger = closer).
    face3d's Python port uses ``(V_x, height − 1 − V_y)`` instead, which differs from the MATLAB original by
    (+1, −1) px; we follow the original, so subtract 1 from ``pt2d`` when reading it.

    Args:
        vertices: (V, 3) shape in BFM units (``mu_shape + w·Shape_Para + ...``, reshaped to one row per vertex).
        pose_para: the 7 numbers ``[pitch, yaw, roll, tx, ty, tz, f]`` (angles in radians).
        height: image height in pixels (450 for 300W-LP).

    Returns:
        ``verts_img`` (V, 3) float64.
    """
    pose = np.asarray(pose_para, dtype=np.float64).ravel()
    if pose.size != 7:
        raise ValueError(f"pose_para must hold 7 numbers [pitch, yaw, roll, tx, ty, tz, f], got {pose.size}")
    V = pose[6] * _as_vertices(vertices) @ rotation_3ddfa(*pose[:3]).T + pose[3:6]
    return np.stack([V[:, 0] - 1.0, height - V[:, 1], V[:, 2]], axis=1)


def project_perspective(vertices, R, t, focal: float, cx: float, cy: float) -> np.ndarray:
    """Pinhole camera at the origin looking down −z (y up), OpenGL-style.

    ``p = R·v + t`` must lie in front of the camera (``d = −p_z > 0``); ``x = cx + focal·p_x/d``,
    ``y = cy − focal·p_y/d`` and z = ``1/d`` (inverse depth: larger = closer, and affine in screen space, so
    z-buffering is exact). Pass ``perspective_correct=True`` to :func:`rasterize` for exact attributes.

    Returns:
        ``verts_img`` (V, 3) float64.
    """
    p = _as_vertices(vertices) @ np.asarray(R, dtype=np.float64).T + np.asarray(t, dtype=np.float64).ravel()
    d = -p[:, 2]
    behind = int(np.count_nonzero(~(d > 0)))
    if behind:
        raise ValueError(f"{behind} of {len(p)} vertices are not in front of the camera (need R·v + t with z < 0)")
    return np.stack([cx + focal * p[:, 0] / d, cy - focal * p[:, 1] / d, 1.0 / d], axis=1)


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
def _scan(verts, tris, height, width, zbuf, tbuf, bbuf):
    """Z-buffered scan of every triangle's bounding box with incremental integer edge functions."""
    S = SUBPIXEL
    n = verts.shape[0]
    X = np.empty(n, dtype=np.int64)
    Y = np.empty(n, dtype=np.int64)
    ok = np.empty(n, dtype=np.bool_)
    for k in range(n):
        x, y, z = verts[k, 0], verts[k, 1], verts[k, 2]
        # NaN fails every comparison, so non-finite corners are rejected here too.
        ok[k] = abs(x) < _MAX_COORD and abs(y) < _MAX_COORD and abs(z) < np.inf
        X[k] = np.int64(np.floor(x * S + 0.5)) if ok[k] else 0
        Y[k] = np.int64(np.floor(y * S + 0.5)) if ok[k] else 0
    for t in range(tris.shape[0]):
        a, b, c = tris[t, 0], tris[t, 1], tris[t, 2]
        if not (ok[a] and ok[b] and ok[c]):
            continue
        area = (X[b] - X[a]) * (Y[c] - Y[a]) - (Y[b] - Y[a]) * (X[c] - X[a])
        if area == 0:
            continue
        swapped = area < 0  # a back-facing triangle: swap two corners so the interior is positive
        if swapped:
            b, c = c, b
            area = -area
        xa, ya, xb, yb, xc, yc = X[a], Y[a], X[b], Y[b], X[c], Y[c]
        # Bounding box of pixel centres, clipped to the image (ceil/floor of fixed-point / S).
        j0 = max(-((-min(xa, xb, xc)) // S), 0)
        j1 = min(max(xa, xb, xc) // S, width - 1)
        i0 = max(-((-min(ya, yb, yc)) // S), 0)
        i1 = min(max(ya, yb, yc) // S, height - 1)
        if j0 > j1 or i0 > i1:
            continue
        # Edge k is opposite corner k; its function is that corner's unnormalised barycentric weight.
        dx0, dy0 = xc - xb, yc - yb
        dx1, dy1 = xa - xc, ya - yc
        dx2, dy2 = xb - xa, yb - ya
        bias0 = 0 if _edge_owned(dx0, dy0) else -1
        bias1 = 0 if _edge_owned(dx1, dy1) else -1
        bias2 = 0 if _edge_owned(dx2, dy2) else -1
        px, py = j0 * S, i0 * S
        r0 = dx0 * (py - yb) - dy0 * (px - xb)
        r1 = dx1 * (py - yc) - dy1 * (px - xc)
        r2 = dx2 * (py - ya) - dy2 * (px - xa)
        inv = 1.0 / area
        za, zb, zc = verts[a, 2], verts[b, 2], verts[c, 2]
        for i in range(i0, i1 + 1):
            e0, e1, e2 = r0, r1, r2
            for j in range(j0, j1 + 1):
                if e0 + bias0 >= 0 and e1 + bias1 >= 0 and e2 + bias2 >= 0:
                    l0 = e0 * inv
                    l1 = e1 * inv
                    l2 = e2 * inv
                    z = l0 * za + l1 * zb + l2 * zc
                    if z > zbuf[i, j]:
                        zbuf[i, j] = z
                        tbuf[i, j] = t
                        bbuf[i, j, 0] = l0
                        if swapped:
                            bbuf[i, j, 1] = l2
                            bbuf[i, j, 2] = l1
                        else:
                            bbuf[i, j, 1] = l1
                            bbuf[i, j, 2] = l2
                e0 -= dy0 * S
                e1 -= dy1 * S
                e2 -= dy2 * S
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
        perspective_correct: set when z is inverse depth (as :func:`project_perspective` gives) to weight
            the attribute interpolation by it; otherwise screen-space (affine) barycentrics are used, which is
            exact for orthographic cameras.

    Returns:
        A :class:`Raster`.
    """
    verts = _as_vertices(verts_img)
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
        verts_img: (V, 3) posed vertices in the image frame, e.g. from :func:`project_3ddfa`.
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
            :func:`project_ortho` / :func:`project_3ddfa`; inverse depth for :func:`project_perspective`).
        margin: also require every pixel within this many pixels (a square window) to be foreground and
            no more than ``max_step`` farther than the vertex. This leaves out vertices on a silhouette or an
            occlusion edge (e.g. the chin over the neck), where a one-pixel read-out is ill-posed.
        max_step: see ``margin``; same units as ``tol``.

    Returns:
        (V,) bool.
    """
    verts = _as_vertices(verts_img)
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
    return np.linalg.norm(found - _as_vertices(verts_img)[ids, :2], axis=1)


# ------------------------------------------------------------------------------------ meshes and benchmark

def uv_sphere(n_lat: int, n_lon: int):
    """Unit sphere as a latitude/longitude grid with per-vertex UV.

    ``u = (φ + π) / 2π`` with longitude φ measured from +z towards +x (the seam is at the back, φ = ±π),
    ``v = θ / π`` with θ the angle from the north pole (+y), so v grows downwards as in the package.

    Returns:
        ``(vertices (V, 3), triangles (T, 3) int32, uv (V, 2))`` with ``T = 2·n_lat·n_lon − 2·n_lon``
        (the degenerate triangles at the poles are left out).
    """
    theta = np.linspace(0.0, np.pi, n_lat + 1)
    phi = np.linspace(-np.pi, np.pi, n_lon + 1)
    th, ph = np.meshgrid(theta, phi, indexing="ij")
    vertices = np.stack([np.sin(th) * np.sin(ph), np.cos(th), np.sin(th) * np.cos(ph)], -1).reshape(-1, 3)
    uv = np.stack([(ph + np.pi) / (2 * np.pi), th / np.pi], -1).reshape(-1, 2)
    tris = _grid_triangles(n_lat + 1, n_lon + 1)
    a, b, c = vertices[tris[:, 0]], vertices[tris[:, 1]], vertices[tris[:, 2]]
    keep = np.linalg.norm(np.cross(b - a, c - a), axis=1) > 1e-12
    return vertices, tris[keep], uv


def height_field(n: int, bumps: float = 0.08, seed: int = 0):
    """A face-sized bumpy surface: an n×n grid over [−1, 1]² with a nose-like hump and random bumps.

    ``z = 0.5·exp(−(x² + y²)/0.3) + bumps·Σ sinusoids``; ``uv = ((x + 1)/2, (1 − y)/2)`` (v down).

    Returns:
        ``(vertices (n², 3), triangles (2(n−1)², 3) int32, uv (n², 2))``.
    """
    rng = np.random.default_rng(seed)
    s = np.linspace(-1.0, 1.0, n)
    y, x = np.meshgrid(s[::-1], s, indexing="ij")  # row 0 at the top (y = 1)
    z = 0.5 * np.exp(-(x**2 + y**2) / 0.3)
    for fx, fy, ph in rng.uniform([1, 1, 0], [4, 4, 2 * np.pi], size=(4, 3)):
        z += bumps * np.sin(fx * x + ph) * np.cos(fy * y)
    vertices = np.stack([x, y, z], -1).reshape(-1, 3)
    uv = np.stack([(x + 1) / 2, (1 - y) / 2], -1).reshape(-1, 2)
    return vertices, _grid_triangles(n, n), uv


def _grid_triangles(rows: int, cols: int) -> np.ndarray:
    idx = np.arange(rows * cols).reshape(rows, cols)
    a, b = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel()
    c, d = idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    return np.concatenate([np.stack([a, c, b], 1), np.stack([b, c, d], 1)]).astype(np.int32)


def _sphere_of(n_triangles: int):
    n_lat = max(2, int(round(np.sqrt(n_triangles / 4))))  # T ≈ 4·n_lat² with n_lon = 2·n_lat
    return uv_sphere(n_lat, 2 * n_lat)


def _height_field_of(n_triangles: int):
    return height_field(max(2, int(round(np.sqrt(n_triangles / 2))) + 1))


BENCH_MESHES = {"sphere": _sphere_of, "heightfield": _height_field_of}


def bench_mesh(name: str, n_triangles: int):
    """Looks up a benchmark mesh builder by name and builds a mesh of about ``n_triangles``."""
    if name not in BENCH_MESHES:
        raise KeyError(f"unknown benchmark mesh {name!r}; valid: {sorted(BENCH_MESHES)}")
    return BENCH_MESHES[name](n_triangles)


def benchmark(mesh: str = "sphere", n_triangles: int = 20000, size: int = 256, renders: int = 200,
              seed: int = 0) -> dict:
    """Times projection + rasterisation + UV interpolation at random rotations on one thread.

    The mesh spans about half the image area (radius 0.4·size). Returns a dict of the measurements.
    """
    import numba

    numba.set_num_threads(1)
    vertices, tris, uv = bench_mesh(mesh, n_triangles)
    rng = np.random.default_rng(seed)
    angles = rng.uniform(-np.pi, np.pi, size=(renders, 3))
    t0 = time.perf_counter()
    rasterize(project_ortho(vertices, np.eye(3), 0.4 * size, size / 2, size / 2), tris, uv, size, size)
    first = time.perf_counter() - t0
    covered = 0
    t0 = time.perf_counter()
    for yaw, pitch, roll in angles:
        verts_img = project_ortho(vertices, rotation_matrix(yaw, pitch, roll), 0.4 * size, size / 2, size / 2)
        covered += int(rasterize(verts_img, tris, uv, size, size).mask.sum())
    elapsed = time.perf_counter() - t0
    return {"mesh": mesh, "vertices": len(vertices), "triangles": len(tris), "size": size, "renders": renders,
            "renders_per_s": renders / elapsed, "ms_per_render": 1e3 * elapsed / renders,
            "foreground_fraction": covered / (renders * size * size), "first_call_s": first}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", action="store_true", help="time the renderer on one thread")
    parser.add_argument("--mesh", choices=sorted(BENCH_MESHES), default="sphere")
    parser.add_argument("--triangles", type=int, default=20000)
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--renders", type=int, default=200)
    args = parser.parse_args(argv)
    if not args.bench:
        parser.error("nothing to do: pass --bench")
    r = benchmark(args.mesh, args.triangles, args.size, args.renders)
    print(f"{r['mesh']}: {r['triangles']} triangles, {r['vertices']} vertices, {r['size']}x{r['size']} image, "
          f"{r['foreground_fraction']:.0%} foreground, 1 thread")
    print(f"{r['renders_per_s']:.1f} renders/s ({r['ms_per_render']:.2f} ms/render over {r['renders']} renders); "
          f"first call (compile or cache load) {r['first_call_s']:.2f} s")


if __name__ == "__main__":
    main()
