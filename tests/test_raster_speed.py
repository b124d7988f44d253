"""The faster rasteriser scan draws exactly what the previous one drew (bit for bit), on the benchmark meshes.

The previous scan is kept here verbatim as the reference (``_reference_scan``); ``densereg.geometry.rasterize``
must reproduce its z-buffer, triangle ids and barycentrics exactly.
"""

import numpy as np
import pytest
from numba import njit

from densereg.geometry import rasterize as R
from densereg.geometry.camera import project_ortho, rotation_matrix
from densereg.geometry.templates import builtin_face
from densereg.geometry.raster_bench import bench_mesh
from densereg.geometry.rasterize import _MAX_COORD, SUBPIXEL, _edge_owned


@njit(cache=True)
def _reference_scan(verts, tris, height, width, zbuf, tbuf, bbuf):
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


def _buffers(size):
    return (np.full((size, size), -np.inf), np.full((size, size), -1, dtype=np.int32),
            np.zeros((size, size, 3), dtype=np.float32))


MESHES = {"sphere": lambda: bench_mesh("sphere", 6000), "heightfield": lambda: bench_mesh("heightfield", 6000)}


@pytest.mark.parametrize("mesh", sorted(MESHES) + ["face", "sphere drawn twice"])
def test_scan_is_bit_identical_to_the_previous_scan(mesh):
    """Also on a mesh drawn twice, where every pixel has an exact depth tie: the first drawn must still win."""
    if mesh == "sphere drawn twice":
        vertices, tris, _ = MESHES["sphere"]()
        tris = np.concatenate([tris, tris])
    elif mesh == "face":
        t = builtin_face()
        vertices, tris = t.vertices, t.triangles
    else:
        vertices, tris, _ = MESHES[mesh]()
    tris = np.ascontiguousarray(tris, dtype=np.int64)
    rng = np.random.default_rng(0)
    size = 96
    scale = 0.4 * size / np.abs(vertices[:, :2]).max()
    for angles in rng.uniform(-np.pi, np.pi, size=(6, 3)):
        verts = np.ascontiguousarray(project_ortho(vertices, rotation_matrix(*angles), scale * rng.uniform(0.5, 1.6),
                                                   size / 2 + rng.uniform(-20, 20), size / 2))
        old, new = _buffers(size), _buffers(size)
        _reference_scan(verts, tris, size, size, *old)
        R._scan(verts, tris, size, size, *new)
        assert (old[1] >= 0).mean() > 0.05
        for a, b in zip(old, new):
            assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
