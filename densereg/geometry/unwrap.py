"""Patches and their unwrapping (paper Sec. 4.6): a mesh's surface cut into patches, each flattened to its own UV.

The body has no single UV chart, so DenseReg partitions its surface into patches and unwraps each one by
multidimensional scaling (MDS) of geodesic distances; "the partitioning replaces the quantisation". This module
does that for *any* triangle mesh given per-vertex segment labels (the procedural body's construction labels,
or the argmax of SMPL's skinning weights):

1. :func:`partition`: segments become patches; the segments named in ``split`` are cut in two, front and back,
   by which side of the segment's principal axis a vertex lies on along the rest pose's facing direction, so
   every limb becomes two half-tubes (discs, which unwrap without tearing) instead of a closed tube.
2. :func:`geodesic_distances`: shortest paths on the patch's edge graph (``scipy.sparse.csgraph``), each
   vertex also linked straight to its three-ring, since bare edge paths zig-zag (:func:`mesh_edges`).
3. :func:`classical_mds`: the 2D configuration whose Euclidean distances best match them (Torgerson).
4. :func:`build_atlas`: every patch unwrapped and normalised to [0, 1]² (each axis min-max, so a patch fills its
   chart as a DenseReg UV does); boundary vertices are duplicated, one copy per patch, so a triangle's three
   corners always carry one patch index and UVs of one chart, and the rasteriser interpolates them exactly.

:func:`render_patch_gt` then draws the per-pixel patch index (0 = background, 1..P) and per-patch UV with the
project's one rasteriser (:mod:`densereg.geometry.rasterize`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from densereg.geometry import rasterize


def mesh_edges(triangles, hops: int = 3) -> np.ndarray:
    """Unique undirected vertex pairs at most ``hops`` mesh edges apart (``hops=1``: the mesh's edges).

    Why more than the edges: a shortest path along edges zig-zags and overestimates a distance by up to ~40%
    on a triangulated grid; linking each vertex straight to its three-ring (by the 3D chord, which is within a few
    percent of the surface distance over so short a span) brings the mean error to ~1% (half cylinder test).
    """
    from scipy.sparse import coo_matrix

    tris = np.asarray(triangles, dtype=np.int64)
    e = np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]])
    n = int(tris.max()) + 1 if tris.size else 0
    adj = coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n)).tocsr()
    adj = ((adj + adj.T) > 0).astype(np.float64)
    reach = adj.copy()
    for _ in range(int(hops) - 1):
        reach = ((reach + reach @ adj) > 0).astype(np.float64)
    pairs = np.stack(reach.nonzero(), axis=1)
    return pairs[pairs[:, 0] < pairs[:, 1]]


def geodesic_distances(verts, triangles, hops: int = 3) -> np.ndarray:
    """All-pairs geodesic distances on the mesh's graph (Dijkstra, ``scipy.sparse.csgraph``).

    Args:
        verts: (V, 3) positions.
        triangles: (T, 3) vertex indices.
        hops: link every vertex to those this many edges away (:func:`mesh_edges`); 1 is the bare edge graph.

    Returns:
        (V, V) float64; ``inf`` between vertices the mesh does not connect.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import dijkstra

    verts = np.asarray(verts, dtype=np.float64)
    e = mesh_edges(triangles, hops)
    w = np.linalg.norm(verts[e[:, 0]] - verts[e[:, 1]], axis=1)
    n = len(verts)
    graph = coo_matrix((w, (e[:, 0], e[:, 1])), shape=(n, n)).tocsr()
    return dijkstra(graph, directed=False)


def classical_mds(distances, dims: int = 2) -> np.ndarray:
    """Classical (Torgerson) MDS: the ``dims``-D points whose inner products best match the double-centred
    squared distances. Deterministic: each axis's sign is chosen so that the first point's coordinate is ≤ 0.

    Returns:
        (N, dims) float64, centred, axes in decreasing order of variance.
    """
    from scipy.linalg import eigh

    d2 = np.asarray(distances, dtype=np.float64) ** 2
    n = len(d2)
    if n < dims + 1:
        raise ValueError(f"classical_mds needs at least {dims + 1} points, got {n}")
    if not np.isfinite(d2).all():
        raise ValueError("classical_mds: distances must be finite (is the patch connected?)")
    centred = d2 - d2.mean(axis=0, keepdims=True) - d2.mean(axis=1, keepdims=True) + d2.mean()
    b = -0.5 * centred
    vals, vecs = eigh(b, subset_by_index=[n - dims, n - 1])
    order = np.argsort(vals)[::-1]
    vals, vecs = np.clip(vals[order], 0.0, None), vecs[:, order]
    xy = vecs * np.sqrt(vals)
    flip = np.where(xy[0] > 0, -1.0, 1.0)
    return xy * flip


@dataclass
class Unwrapped:
    """One patch flattened: ``xy`` (N, 2) in mesh units (the MDS configuration), ``uv`` (N, 2) in [0, 1]², and
    ``n_bridged``: vertex pairs the patch's own graph did not connect, given their straight 3D distance."""

    xy: np.ndarray
    uv: np.ndarray
    n_bridged: int


def unwrap_patch(verts, triangles, hops: int = 3) -> Unwrapped:
    """Flatten one patch: MDS of its geodesic distances, then each axis scaled to [0, 1].

    A patch in several pieces (possible on a real mesh's labelling) has no geodesic between its pieces; those
    pairs get their straight 3D distance, and their number is returned (``n_bridged``), never hidden.
    """
    verts = np.asarray(verts, dtype=np.float64)
    d = geodesic_distances(verts, triangles, hops)
    gaps = ~np.isfinite(d)
    if gaps.any():
        straight = np.linalg.norm(verts[:, None] - verts[None], axis=-1)
        d = np.where(gaps, straight, d)
    xy = classical_mds(d)
    lo, span = xy.min(axis=0), np.ptp(xy, axis=0)
    uv = (xy - lo) / np.where(span > 0, span, 1.0)
    return Unwrapped(xy, np.clip(uv, 0.0, 1.0), int(gaps.sum()) // 2)


def partition(verts, segments, split, facing=(0.0, 0.0, 1.0)) -> np.ndarray:
    """Per-vertex patch labels (1..P) from per-vertex segment labels, cutting the ``split`` segments in two.

    Args:
        verts: (V, 3) rest-pose positions.
        segments: (V,) int segment label of each vertex, 0..S-1.
        split: segment labels to cut into front and back (the rest are one patch each).
        facing: the rest pose's front direction.

    Returns:
        (V,) int32 patch labels: segments in order, a split one giving (front, back) = (p, p+1).
    """
    verts = np.asarray(verts, dtype=np.float64)
    segments = np.asarray(segments)
    facing = np.asarray(facing, dtype=np.float64)
    patch = np.zeros(len(verts), np.int32)
    nxt = 1
    for s in range(int(segments.max()) + 1):
        members = np.flatnonzero(segments == s)
        if members.size == 0:
            raise ValueError(f"partition: segment {s} has no vertices")
        if s not in set(split):
            patch[members] = nxt
            nxt += 1
            continue
        p = verts[members] - verts[members].mean(axis=0)
        axis = np.linalg.svd(p, full_matrices=False)[2][0]      # the segment's long axis
        front = facing - facing.dot(axis) * axis
        if np.linalg.norm(front) < 0.2:     # the long axis within ~12° of the facing direction
            raise ValueError(f"partition: segment {s} runs along the facing direction; it cannot be split")
        side = (p - np.outer(p @ axis, axis)) @ front
        patch[members] = np.where(side >= 0, nxt, nxt + 1)
        nxt += 2
    return patch


@dataclass
class PatchAtlas:
    """A mesh cut along its patch boundaries with per-patch UV: what :func:`render_patch_gt` draws.

    Attributes:
        vertex_ids: (N,) index of each atlas vertex in the original mesh (pose the mesh, then take these).
        triangles: (T, 3) triangles over atlas vertices.
        patch: (N,) int patch of each atlas vertex, 1..n_patches.
        uv: (N, 2) its coordinates in its patch's [0, 1]² chart.
        n_patches: number of patches.
    """

    vertex_ids: np.ndarray
    triangles: np.ndarray
    patch: np.ndarray
    uv: np.ndarray
    n_patches: int


def triangle_patches(triangles, vertex_patch) -> np.ndarray:
    """Each triangle's patch: the label most of its corners carry (the smallest when all three differ)."""
    lab = np.asarray(vertex_patch)[np.asarray(triangles)]
    a, b, c = lab[:, 0], lab[:, 1], lab[:, 2]
    return np.where((a == b) | (a == c), a, np.where(b == c, b, lab.min(axis=1)))


def build_atlas(verts, triangles, vertex_patch, hops: int = 3) -> PatchAtlas:
    """Unwrap every patch of a mesh (rest pose) and assemble the :class:`PatchAtlas`."""
    verts = np.asarray(verts, dtype=np.float64)
    tris = np.asarray(triangles, dtype=np.int64)
    tri_patch = triangle_patches(tris, vertex_patch)
    n_patches = int(np.max(vertex_patch))
    ids, out_tris, labels, uvs = [], [], [], []
    offset = 0
    for p in range(1, n_patches + 1):
        mine = tris[tri_patch == p]
        if len(mine) == 0:
            raise ValueError(f"build_atlas: patch {p} has no triangles")
        used, local = np.unique(mine, return_inverse=True)
        local = local.reshape(mine.shape)
        flat = unwrap_patch(verts[used], local, hops)
        ids.append(used)
        out_tris.append(local + offset)
        labels.append(np.full(len(used), p, np.int32))
        uvs.append(flat.uv)
        offset += len(used)
    return PatchAtlas(np.concatenate(ids), np.concatenate(out_tris), np.concatenate(labels),
                      np.concatenate(uvs).astype(np.float64), n_patches)


@dataclass
class PatchGT:
    """Dense body ground truth of one image: ``patch`` (H, W) uint8, 0 = background, 1..P; ``u``, ``v``
    (H, W) float32 in the pixel's patch chart, NaN on background; ``mask`` (H, W) bool foreground."""

    patch: np.ndarray
    u: np.ndarray
    v: np.ndarray
    mask: np.ndarray


def render_patch_gt(atlas: PatchAtlas, posed_verts_img, height: int, width: int,
                    perspective_correct: bool = False) -> PatchGT:
    """Rasterise a posed mesh's patch index and per-patch UV (``posed_verts_img``: the *original* mesh's
    vertices in the image frame, as :mod:`densereg.geometry.camera` gives them)."""
    verts = np.asarray(posed_verts_img, dtype=np.float64)[atlas.vertex_ids]
    attrs = np.concatenate([atlas.patch[:, None].astype(np.float64), atlas.uv], axis=1)
    r = rasterize.rasterize(verts, atlas.triangles, attrs, height, width, perspective_correct)
    patch = np.zeros((height, width), np.uint8)
    # All three corners of a triangle carry the same patch, so the interpolated label is that integer.
    patch[r.mask] = np.rint(r.attr[..., 0][r.mask]).astype(np.uint8)
    return PatchGT(patch, r.attr[..., 1].copy(), r.attr[..., 2].copy(), r.mask)
