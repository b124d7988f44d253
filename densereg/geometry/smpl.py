"""The SMPL body model from the ``.npz`` files ``smplx`` users have, posed, and cut into DenseReg's 24 patches.

UP-3D (paper Sec. 4.6) fits SMPL to its images. SMPL is distributed as Python-2 pickles; ``smplx`` users
commonly hold the same arrays as ``SMPL_NEUTRAL.npz`` / ``SMPL_MALE.npz`` / ``SMPL_FEMALE.npz``, which we read
with ``np.load(..., allow_pickle=False)``: nothing in them can run code. Keys (:data:`KEYS`):

    v_template (V, 3)  shapedirs (V, 3, B)  posedirs (V, 3, 207)  J_regressor (24, V) dense
    weights (V, 24)    kintree_table (2, 24) (row 0: parents; the root's is -1 or 2^32 - 1)    f (F, 3)

A file whose J_regressor is a pickled scipy sparse matrix (an object array) is refused with the fix: save it
dense. Posing is SMPL's: shape blend shapes, pose blend shapes from ``R_j − I`` of joints 1..23, then linear
blend skinning (:func:`densereg.geometry.body.skin`, the same function that poses the procedural body).

Patches: each vertex's segment is the :mod:`densereg.geometry.body` segment of the joint that moves it most
(argmax of the skinning weights, :data:`SEGMENT_OF_JOINT`); :func:`densereg.geometry.unwrap.partition` and
:func:`~densereg.geometry.unwrap.build_atlas` then cut and unwrap the rest (T-pose, mean shape) mesh exactly as
they do the procedural body, so both have the same 24 patch names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from densereg.geometry import body, unwrap

KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")
SMPL_JOINTS = ("pelvis", "L_hip", "R_hip", "spine1", "L_knee", "R_knee", "spine2", "L_ankle", "R_ankle", "spine3",
               "L_foot", "R_foot", "neck", "L_collar", "R_collar", "head", "L_shoulder", "R_shoulder", "L_elbow",
               "R_elbow", "L_wrist", "R_wrist", "L_hand", "R_hand")
# The body segment each SMPL joint's vertices belong to (a joint moves the bone that leaves it). SMPL's
# left is the body's left (+x in its T-pose facing +z), as in densereg.geometry.body.
SEGMENT_OF_JOINT = {
    "pelvis": "torso", "spine1": "torso", "spine2": "torso", "spine3": "torso", "L_collar": "torso",
    "R_collar": "torso", "neck": "head", "head": "head", "L_shoulder": "upper_arm_l", "R_shoulder": "upper_arm_r",
    "L_elbow": "lower_arm_l", "R_elbow": "lower_arm_r", "L_wrist": "hand_l", "R_wrist": "hand_r",
    "L_hand": "hand_l", "R_hand": "hand_r", "L_hip": "upper_leg_l", "R_hip": "upper_leg_r",
    "L_knee": "lower_leg_l", "R_knee": "lower_leg_r", "L_ankle": "foot_l", "R_ankle": "foot_r",
    "L_foot": "foot_l", "R_foot": "foot_r",
}


class SMPLError(ValueError):
    """An SMPL file that cannot be used; the message names the file and the problem."""


@dataclass
class SMPLModel:
    """SMPL's arrays (see the module docstring) and, once asked for, its patch atlas."""

    v_template: np.ndarray
    shapedirs: np.ndarray
    posedirs: np.ndarray
    J_regressor: np.ndarray
    weights: np.ndarray
    parents: np.ndarray
    faces: np.ndarray
    _atlas: unwrap.PatchAtlas | None = field(default=None, repr=False)

    def joints(self, betas=None) -> np.ndarray:
        """(24, 3) rest joint positions of shape ``betas``."""
        return self.J_regressor @ self.shaped(betas)

    def shaped(self, betas=None) -> np.ndarray:
        """(V, 3) rest vertices of shape ``betas`` (zeros: the template)."""
        if betas is None:
            return self.v_template.copy()
        b = np.zeros(self.shapedirs.shape[2])
        given = np.asarray(betas, np.float64).ravel()[: len(b)]
        b[: len(given)] = given
        return self.v_template + self.shapedirs @ b

    def posed(self, pose, betas=None, trans=None) -> np.ndarray:
        """(V, 3) vertices: ``pose`` (72,) or (24, 3) axis-angle, ``betas`` shape, ``trans`` (3,) offset."""
        pose = np.asarray(pose, np.float64).reshape(24, 3)
        rest = self.shaped(betas)
        joints = self.J_regressor @ rest
        feature = (body.rodrigues(pose[1:]) - np.eye(3)).reshape(-1)
        rest = rest + self.posedirs @ feature
        verts = body.skin(rest, self.weights, joints, self.parents, pose)
        return verts + (0 if trans is None else np.asarray(trans, np.float64).reshape(1, 3))

    def segments(self) -> np.ndarray:
        """(V,) :data:`densereg.geometry.body.JOINTS` index of each vertex's segment."""
        seg_of = np.array([body.JOINTS.index(SEGMENT_OF_JOINT[j]) for j in SMPL_JOINTS])
        return seg_of[self.weights.argmax(axis=1)]

    def atlas(self) -> unwrap.PatchAtlas:
        """The 24 patches of the rest mesh, unwrapped (built on first use; ~seconds on the 6,890-vertex mesh)."""
        if self._atlas is None:
            seg = self.segments()
            split = [j for j, name in enumerate(body.JOINTS) if name not in body.UNSPLIT]
            patch = unwrap.partition(self.v_template, seg, split)
            self._atlas = unwrap.build_atlas(self.v_template, self.faces, patch)
        return self._atlas


def load_smpl(path) -> SMPLModel:
    """Read an SMPL ``.npz`` (module docstring) without unpickling anything.

    Raises:
        SMPLError: unreadable, pickled contents, a key missing, or shapes that disagree (named in the message).
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in KEYS if k not in z.files]
            if missing:
                raise SMPLError(f"{path}: missing arrays {missing}; an SMPL .npz has {list(KEYS)}")
            arrays = {k: z[k] for k in KEYS}
    except SMPLError:
        raise
    except ValueError as e:
        raise SMPLError(f"{path}: holds pickled objects ({e}); it needs plain arrays: save every key, "
                        "J_regressor included (a scipy sparse matrix in the original SMPL pickle), as a dense "
                        "numpy array") from e
    except OSError as e:
        raise SMPLError(f"{path}: cannot read it as .npz ({e})") from e
    v = arrays["v_template"].astype(np.float64)
    n = len(v)
    checks = {"v_template": (v.ndim == 2 and v.shape[1] == 3), "shapedirs": arrays["shapedirs"].shape[:2] == (n, 3),
              "posedirs": arrays["posedirs"].shape == (n, 3, 207), "J_regressor": arrays["J_regressor"].shape == (24, n),
              "weights": arrays["weights"].shape == (n, 24), "kintree_table": arrays["kintree_table"].shape == (2, 24),
              "f": arrays["f"].ndim == 2 and arrays["f"].shape[1] == 3 and int(arrays["f"].max()) < n}
    bad = [k for k, ok in checks.items() if not ok]
    if bad:
        raise SMPLError(f"{path}: arrays {bad} do not have SMPL's shapes for {n} vertices and 24 joints "
                        + ", ".join(f"{k} {arrays[k].shape}" for k in bad))
    parents = arrays["kintree_table"][0].astype(np.int64)
    parents[(parents < 0) | (parents >= 24)] = -1
    if parents[0] != -1 or any(parents[j] >= j for j in range(1, 24)):
        raise SMPLError(f"{path}: kintree_table does not list parents before their children")
    return SMPLModel(v, arrays["shapedirs"].astype(np.float64), arrays["posedirs"].astype(np.float64),
                     arrays["J_regressor"].astype(np.float64), arrays["weights"].astype(np.float64), parents,
                     arrays["f"].astype(np.int64))
