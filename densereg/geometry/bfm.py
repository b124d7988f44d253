"""The Basel Face Model as 3DDFA / 300W-LP use it (reference doc §3.1), loaded as a :class:`Template`.

The BFM's licence forbids shipping it, so users download it themselves; :func:`load_bfm` reads the 3DDFA
file layout (``.npy`` or MATLAB ``.mat``) from a directory, rescales it to template units, re-winds its
triangles outwards and brings its UV into our convention. ``get_template("/path/to/BFM")`` calls it
(cached) through :mod:`densereg.geometry.template`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from densereg.geometry.template import Template, cylindrical_uv, parts_from_landmarks


def _find_array(root: Path, npy_names, mat_keys):
    """First of ``root/<npy_names>``, else the first ``.mat`` in root holding one of ``mat_keys``.

    Returns (array, path, from_mat) or None.
    """
    from scipy import io as sio

    for name in npy_names:
        if (root / name).is_file():
            return np.load(root / name), root / name, False
    for path in sorted(root.glob("*.mat")):
        try:
            names = {entry[0] for entry in sio.whosmat(path)}
        except (ValueError, NotImplementedError, OSError) as err:
            raise ValueError(f"{path}: cannot read this .mat ({err}); save it as MATLAB v7 or older") from err
        for key in mat_keys:
            if key in names:
                return sio.loadmat(path, variable_names=[key])[key], path, True
    return None


def _flat_to_vertices(flat: np.ndarray, n: int | None, path: Path) -> np.ndarray:
    """A 3N flat x0,y0,z0,x1,... vector (3DDFA layout) → (N, 3)."""
    flat = np.asarray(flat, np.float64)
    if flat.ndim == 2 and flat.shape[1] == 3 and flat.shape[0] != 1:
        return flat
    flat = flat.ravel()
    if flat.size % 3 or (n is not None and flat.size != 3 * n):
        raise ValueError(f"{path}: expected a flat x,y,z vector of {'3N' if n is None else 3 * n} values, "
                         f"got {flat.size}")
    return flat.reshape(-1, 3)


def _basis_modes(w: np.ndarray, n: int, path: Path) -> np.ndarray:
    """A 3N×k basis (or k×3N) → (k, N, 3) float32."""
    w = np.asarray(w)
    if w.ndim != 2 or 3 * n not in w.shape:
        raise ValueError(f"{path}: basis of shape {w.shape} does not have a 3N = {3 * n} axis")
    if w.shape[0] != 3 * n:
        w = w.T
    return np.ascontiguousarray(w.T.astype(np.float32).reshape(w.shape[1], n, 3))


def load_bfm(root, uv: str = "file") -> Template:
    """The Basel Face Model as 3DDFA / 300W-LP use it, in template units.

    Reads from ``root``: the mean shape (``u_shp.npy`` or a ``.mat`` with ``mu_shape``/``u_shp``) plus the
    optional mean expression (``u_exp.npy`` / ``mu_exp``), which is added as 3DDFA does; optional bases
    (``w_shp.npy``, ``w.npy``, ``w_shp_sim.npy`` or ``w`` in a .mat; ``w_exp.npy``, ``w_exp_sim.npy`` or
    ``w_exp``), 3N×k; triangles ``tri`` (3×T or T×3, 1-based); landmarks (``keypoints_sim.npy``: 204
    indices into the flat vector, or ``keypoints`` in a .mat: 68 1-based vertex ids); per-vertex texture
    coordinates ``UV`` from ``BFM_UV.mat``.

    Vertices and bases are multiplied by ``scale`` = 1 / outer-eye-corner distance, so the face has our
    units while coefficients keep their native meaning (300W-LP ``Shape_Para`` multiplies ``w`` directly):
    the native shape is ``instance(shape_para, exp_para) / template.scale``. Triangles are re-wound to face
    outwards and v is flipped to grow downwards when the file's v grows with height.

    Args:
        root: directory holding the files.
        uv: ``"file"`` to read ``BFM_UV.mat``; ``"cylindrical"`` to unwrap the mean shape as the built-in
            face is unwrapped instead.
    """
    from scipy import io as sio

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"BFM directory {root} does not exist")
    if uv not in ("file", "cylindrical"):
        raise ValueError(f"uv must be 'file' or 'cylindrical', got {uv!r}")

    found = _find_array(root, ["u_shp.npy", "mu_shape.npy"], ["mu_shape", "u_shp"])
    if found is None:
        raise FileNotFoundError(f"{root}: no BFM mean shape (expected u_shp.npy or a .mat with mu_shape/u_shp)")
    mean = _flat_to_vertices(found[0], None, found[1])
    n = len(mean)
    found = _find_array(root, ["u_exp.npy", "mu_exp.npy"], ["mu_exp", "u_exp"])
    if found is not None:
        mean = mean + _flat_to_vertices(found[0], n, found[1])

    found = _find_array(root, ["tri.npy"], ["tri"])
    if found is None:
        raise FileNotFoundError(f"{root}: no triangles (expected tri.mat with a 'tri' variable)")
    tri, tri_path, _ = found
    tri = np.asarray(tri, np.int64)
    if tri.ndim != 2 or 3 not in tri.shape:
        raise ValueError(f"{tri_path}: 'tri' must be 3×T or T×3, got {tri.shape}")
    if tri.shape[0] == 3 and tri.shape[1] != 3:
        tri = tri.T
    if tri.min() == 1 and tri.max() == n:
        tri = tri - 1
    elif tri.min() < 0 or tri.max() >= n:
        raise ValueError(f"{tri_path}: triangle ids span [{tri.min()}, {tri.max()}], not 1..{n} (1-based)")

    found = _find_array(root, ["keypoints_sim.npy", "keypoints.npy"], ["keypoints"])
    if found is None:
        raise FileNotFoundError(f"{root}: no landmarks (expected keypoints_sim.npy or a .mat with 'keypoints')")
    kp, kp_path, from_mat = found
    kp = np.asarray(kp, np.int64).ravel() - (1 if from_mat else 0)       # MATLAB files are 1-based
    if kp.size == 204:
        if not np.all(kp[1::3] == kp[0::3] + 1) or not np.all(kp[0::3] % 3 == 0):
            raise ValueError(f"{kp_path}: 204 keypoints must be x,y,z triplets of flat-vector indices")
        kp = kp[0::3] // 3
    if kp.size != 68 or kp.min() < 0 or kp.max() >= n:
        raise ValueError(f"{kp_path}: expected 68 landmark vertex ids (or 204 flat indices) in range, "
                         f"got {kp.size} values in [{kp.min()}, {kp.max()}]")

    scale = 1.0 / float(np.linalg.norm(mean[kp[36]] - mean[kp[45]]))
    vertices = mean * scale
    # 3DDFA's tri.mat winds triangles inwards; re-wind so normals point away from the mesh centre.
    normals = np.cross(vertices[tri[:, 1]] - vertices[tri[:, 0]], vertices[tri[:, 2]] - vertices[tri[:, 0]])
    outward = np.einsum("ij,ij->i", normals, vertices[tri].mean(axis=1) - vertices.mean(axis=0))
    if np.mean(outward > 0) < 0.5:
        tri = tri[:, [0, 2, 1]]

    if uv == "file":
        if not (root / "BFM_UV.mat").is_file():
            raise FileNotFoundError(f"{root / 'BFM_UV.mat'} is missing (per-vertex texture coordinates 'UV'); "
                                    "pass uv='cylindrical' to unwrap the mean shape instead")
        uv_arr = np.asarray(sio.loadmat(root / "BFM_UV.mat", variable_names=["UV"]).get("UV"), np.float64)
        if uv_arr.shape != (n, 2):
            raise ValueError(f"{root / 'BFM_UV.mat'}: 'UV' has shape {uv_arr.shape}, expected ({n}, 2) "
                             "(the full-BFM copy must first be trimmed to the 3DDFA vertices with trimIndex)")
        if np.corrcoef(uv_arr[:, 1], vertices[:, 1])[0, 1] > 0:
            uv_arr = uv_arr * [1.0, -1.0] + [0.0, 1.0]                    # v grew upwards: flip to our rows
        uv_arr = np.clip(uv_arr, 0.0, 1.0)
    else:
        axis_z = vertices[:, 2].min() + 0.35 * np.ptp(vertices[:, 2])
        uv_arr = cylindrical_uv(vertices, axis_z, axis_x=float(vertices[:, 0].mean()))

    bases = {}
    for kind, npy_names, keys in (("id", ["w_shp.npy", "w.npy", "w_shp_sim.npy"], ["w", "w_shp"]),
                                  ("exp", ["w_exp.npy", "w_exp_sim.npy"], ["w_exp"])):
        found = _find_array(root, npy_names, keys)
        bases[kind] = (_basis_modes(found[0], n, found[1]) * np.float32(scale) if found is not None
                       else np.zeros((0, n, 3), np.float32))
    return Template(
        name="bfm", vertices=vertices, triangles=tri.astype(np.int32), uv=uv_arr, landmarks=kp,
        vertex_parts=parts_from_landmarks(uv_arr, uv_arr[kp]), id_basis=bases["id"], exp_basis=bases["exp"],
        exp_names=tuple(f"bfm_exp_{i:02d}" for i in range(len(bases["exp"]))),
        id_names=tuple(f"bfm_id_{i:03d}" for i in range(len(bases["id"]))), scale=scale)

