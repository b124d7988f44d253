"""Cameras: 3D template-space vertices → the image frame the rasteriser draws in.

Image frame (the package conventions): ``verts_img[:, 0]`` = column x, ``[:, 1]`` = row y (down), 0-based with
integer values at pixel centres, ``[:, 2]`` = depth, **larger = closer to the camera**. Three cameras: a scaled
orthographic one (the synthetic benchmark's renders and tests), the 3DDFA weak-perspective pose of 300W-LP's
fittings (``Pose_Para``), and a pinhole camera that puts inverse depth in z so that the z-buffer stays exact
(:func:`densereg.geometry.rasterize.rasterize` with ``perspective_correct=True``).
"""

from __future__ import annotations

import numpy as np


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


def as_vertices(vertices) -> np.ndarray:
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
    p = scale * as_vertices(vertices) @ np.asarray(R, dtype=np.float64).T
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
    V = pose[6] * as_vertices(vertices) @ rotation_3ddfa(*pose[:3]).T + pose[3:6]
    return np.stack([V[:, 0] - 1.0, height - V[:, 1], V[:, 2]], axis=1)


def project_perspective(vertices, R, t, focal: float, cx: float, cy: float) -> np.ndarray:
    """Pinhole camera at the origin looking down −z (y up), OpenGL-style.

    ``p = R·v + t`` must lie in front of the camera (``d = −p_z > 0``); ``x = cx + focal·p_x/d``,
    ``y = cy − focal·p_y/d`` and z = ``1/d`` (inverse depth: larger = closer, and affine in screen space, so
    z-buffering is exact). Pass ``perspective_correct=True`` to :func:`rasterize` for exact attributes.

    Returns:
        ``verts_img`` (V, 3) float64.
    """
    p = as_vertices(vertices) @ np.asarray(R, dtype=np.float64).T + np.asarray(t, dtype=np.float64).ravel()
    d = -p[:, 2]
    behind = int(np.count_nonzero(~(d > 0)))
    if behind:
        raise ValueError(f"{behind} of {len(p)} vertices are not in front of the camera (need R·v + t with z < 0)")
    return np.stack([cx + focal * p[:, 0] / d, cy - focal * p[:, 1] / d, 1.0 / d], axis=1)
