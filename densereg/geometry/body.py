"""A procedural articulated human: 14 rigid segments on a skeleton, posable by joint angles, cut into 24 patches.

No human body model can be downloaded here, so this is the stand-in for the UP-3D / SMPL template of paper
Sec. 4.6: a closed tube (elliptic cross-section, rounded ends) for each of torso, head, upper and lower arms,
hands, upper and lower legs and feet, attached to a 14-joint skeleton in an A-pose facing +z (y up, metres).
Every segment except hands and feet is cut into a front and a back patch (:func:`densereg.geometry.unwrap.partition`),
giving 10×2 + 4 = 24 patches, i.e. 25 classes with the background, as the released ``deployHuman`` model has.

Posing is linear blend skinning (:func:`skin`) with one-hot weights (each segment follows its own joint); SMPL
(:mod:`densereg.geometry.smpl`) uses the same function with its own weights. A pose is a (14, 3) array of
axis-angle rotations, one per joint in :data:`JOINTS` order, each relative to its parent (the root's is the
global orientation).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from densereg.geometry import unwrap

# joint name, parent, rest position (m), child point the segment runs to, radii (side, depth) at both ends.
_SKELETON = (
    ("torso", None, (0.0, 1.00, 0.0), (0.0, 1.48, 0.0), (0.15, 0.10), (0.17, 0.10)),
    ("head", "torso", (0.0, 1.50, 0.0), (0.0, 1.70, 0.0), (0.085, 0.095), (0.075, 0.085)),
    ("upper_arm_l", "torso", (0.19, 1.43, 0.0), (0.27, 1.17, 0.0), (0.050, 0.050), (0.040, 0.040)),
    ("lower_arm_l", "upper_arm_l", (0.27, 1.17, 0.0), (0.33, 0.93, 0.02), (0.038, 0.038), (0.028, 0.028)),
    ("hand_l", "lower_arm_l", (0.33, 0.93, 0.02), (0.35, 0.84, 0.03), (0.040, 0.016), (0.032, 0.014)),
    ("upper_arm_r", "torso", (-0.19, 1.43, 0.0), (-0.27, 1.17, 0.0), (0.050, 0.050), (0.040, 0.040)),
    ("lower_arm_r", "upper_arm_r", (-0.27, 1.17, 0.0), (-0.33, 0.93, 0.02), (0.038, 0.038), (0.028, 0.028)),
    ("hand_r", "lower_arm_r", (-0.33, 0.93, 0.02), (-0.35, 0.84, 0.03), (0.040, 0.016), (0.032, 0.014)),
    ("upper_leg_l", "torso", (0.09, 0.96, 0.0), (0.10, 0.52, 0.0), (0.075, 0.075), (0.050, 0.050)),
    ("lower_leg_l", "upper_leg_l", (0.10, 0.52, 0.0), (0.10, 0.10, -0.01), (0.048, 0.048), (0.033, 0.033)),
    ("foot_l", "lower_leg_l", (0.10, 0.06, -0.04), (0.11, 0.04, 0.16), (0.040, 0.030), (0.042, 0.022)),
    ("upper_leg_r", "torso", (-0.09, 0.96, 0.0), (-0.10, 0.52, 0.0), (0.075, 0.075), (0.050, 0.050)),
    ("lower_leg_r", "upper_leg_r", (-0.10, 0.52, 0.0), (-0.10, 0.10, -0.01), (0.048, 0.048), (0.033, 0.033)),
    ("foot_r", "lower_leg_r", (-0.10, 0.06, -0.04), (-0.11, 0.04, 0.16), (0.040, 0.030), (0.042, 0.022)),
)
JOINTS = tuple(s[0] for s in _SKELETON)
PARENTS = tuple(-1 if s[1] is None else JOINTS.index(s[1]) for s in _SKELETON)
UNSPLIT = ("hand_l", "hand_r", "foot_l", "foot_r")      # small, nearly convex: one patch each
N_PATCHES = 24
N_CLASSES = N_PATCHES + 1   # with the background, as the released deployHuman model


def patch_names() -> tuple[str, ...]:
    """Name of patch 1..24 (index 0 of the tuple is the background)."""
    names = ["background"]
    for j in JOINTS:
        names += [j] if j in UNSPLIT else [f"{j}_front", f"{j}_back"]
    return tuple(names)


def rodrigues(axis_angle) -> np.ndarray:
    """(..., 3) axis-angle vectors → (..., 3, 3) rotation matrices."""
    aa = np.asarray(axis_angle, dtype=np.float64)
    theta = np.linalg.norm(aa, axis=-1, keepdims=True)
    k = aa / np.where(theta > 1e-12, theta, 1.0)
    kx, ky, kz = k[..., 0], k[..., 1], k[..., 2]
    zero = np.zeros_like(kx)
    cross = np.stack([zero, -kz, ky, kz, zero, -kx, -ky, kx, zero], axis=-1).reshape(*aa.shape[:-1], 3, 3)
    s, c = np.sin(theta)[..., None], np.cos(theta)[..., None]
    eye = np.broadcast_to(np.eye(3), cross.shape)
    return eye + s * cross + (1 - c) * (cross @ cross)


def skin(rest_verts, weights, joints, parents, pose) -> np.ndarray:
    """Linear blend skinning: rotate joint ``j`` by ``pose[j]`` (axis-angle, relative to its parent) about its
    rest position, compose down the tree, and move each vertex by its weighted joint transforms.

    Args:
        rest_verts: (V, 3). weights: (V, J) rows summing to 1. joints: (J, 3) rest joint positions.
        parents: (J,) parent index, -1 for the root (parents come before children). pose: (J, 3).

    Returns:
        (V, 3) posed vertices (the root joint stays where it is).
    """
    rest = np.asarray(rest_verts, dtype=np.float64)
    joints = np.asarray(joints, dtype=np.float64)
    pose = np.asarray(pose, dtype=np.float64).reshape(len(joints), 3)
    rots = rodrigues(pose)
    world_r = np.empty_like(rots)
    world_t = np.empty((len(joints), 3))
    for j, p in enumerate(parents):
        # local transform: x -> R (x - J) + J, composed after the parent's world transform.
        local_t = joints[j] - rots[j] @ joints[j]
        if p < 0:
            world_r[j], world_t[j] = rots[j], local_t
        else:
            world_r[j] = world_r[p] @ rots[j]
            world_t[j] = world_r[p] @ local_t + world_t[p]
    w = np.asarray(weights, dtype=np.float64)
    blended_r = np.einsum("vj,jab->vab", w, world_r)
    blended_t = w @ world_t
    return np.einsum("vab,vb->va", blended_r, rest) + blended_t


def _frame(axis):
    """Unit side and front vectors perpendicular to ``axis`` (front as close to +z as possible, else −y)."""
    ref = np.array([0.0, 0.0, 1.0]) if abs(axis[2]) < 0.9 else np.array([0.0, -1.0, 0.0])
    front = ref - ref.dot(axis) * axis
    front /= np.linalg.norm(front)
    return np.cross(front, axis), front


def tube(start, end, r0, r1, rings: int, around: int):
    """A closed tube from ``start`` to ``end``: elliptic rings (radii side, depth) interpolated from ``r0`` to
    ``r1``, each end closed by a half-ellipsoid cap and a pole vertex. Returns (verts (V, 3), triangles)."""
    start, end = np.asarray(start, float), np.asarray(end, float)
    axis = end - start
    length = np.linalg.norm(axis)
    axis /= length
    side, front = _frame(axis)
    c0, c1 = min(r0) * 0.9, min(r1) * 0.9                 # cap lengths
    s = np.linspace(-c0, length + c1, rings + 2)[1:-1]     # ring positions (poles at both ends)
    t = np.clip(s / length, 0, 1)
    over = np.where(s < 0, -s / c0, np.where(s > length, (s - length) / c1, 0.0))
    shrink = np.sqrt(np.clip(1 - over ** 2, 0, 1))
    rx = ((1 - t) * r0[0] + t * r1[0]) * shrink
    rz = ((1 - t) * r0[1] + t * r1[1]) * shrink
    phi = np.linspace(0, 2 * np.pi, around, endpoint=False)
    ring = (start + s[:, None, None] * axis + (rx[:, None, None] * np.cos(phi)[None, :, None]) * side
            + (rz[:, None, None] * np.sin(phi)[None, :, None]) * front)
    verts = np.concatenate([ring.reshape(-1, 3), [start - c0 * axis, end + c1 * axis]])
    n = rings * around
    tris = []
    for i in range(rings - 1):
        for k in range(around):
            a, b = i * around + k, i * around + (k + 1) % around
            tris += [(a, b, b + around), (a, b + around, a + around)]
    for k in range(around):
        tris.append((n, (k + 1) % around, k))
        tris.append((n + 1, (rings - 1) * around + k, (rings - 1) * around + (k + 1) % around))
    return verts, np.array(tris, np.int64)


@dataclass
class BodyModel:
    """A posable mesh with segments: rest vertices, triangles, skinning weights, skeleton and patch atlas.

    Attributes:
        verts: (V, 3) rest pose. triangles: (T, 3). weights: (V, J). joints: (J, 3). parents: (J,).
        segment: (V,) segment (joint) of each vertex. patch: (V,) patch 1..P. atlas: the unwrapped patches.
        faces_z: the rest pose faces +z (the camera side for a zero pose).
    """

    verts: np.ndarray
    triangles: np.ndarray
    weights: np.ndarray
    joints: np.ndarray
    parents: tuple
    segment: np.ndarray
    patch: np.ndarray
    atlas: unwrap.PatchAtlas

    def posed(self, pose) -> np.ndarray:
        """(V, 3) vertices in the pose ``pose`` ((J, 3) axis-angle per joint)."""
        return skin(self.verts, self.weights, self.joints, self.parents, pose)


def make_body(rings: int = 14, around: int = 16) -> BodyModel:
    """Build the procedural body (about 3k vertices at the defaults) and unwrap its 24 patches."""
    verts, tris, seg = [], [], []
    for j, (_, _, joint, child, r0, r1) in enumerate(_SKELETON):
        n_r = rings + 6 if j == 0 else rings         # the torso is long: more rings
        v, t = tube(joint, child, r0, r1, n_r, around + (8 if j == 0 else 0))
        tris.append(t + sum(len(x) for x in verts))
        verts.append(v)
        seg.append(np.full(len(v), j))
    verts, tris, seg = np.concatenate(verts), np.concatenate(tris), np.concatenate(seg)
    weights = np.eye(len(JOINTS))[seg]
    split = [j for j, name in enumerate(JOINTS) if name not in UNSPLIT]
    patch = unwrap.partition(verts, seg, split)
    atlas = unwrap.build_atlas(verts, tris, patch)
    joints = np.array([s[2] for s in _SKELETON], np.float64)
    return BodyModel(verts, tris, weights, joints, PARENTS, seg, patch, atlas)


@functools.lru_cache(maxsize=2)
def procedural_body() -> BodyModel:
    """The default procedural body (built once per process; about a second)."""
    return make_body()
