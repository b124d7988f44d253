"""The DenseReg template: a 3D face mesh unwrapped cylindrically onto the UV plane (paper Sec. 2).

DenseReg regresses, for every face pixel, the UV coordinate of the template point the pixel shows. This
module owns that template: its mean shape, triangles, per-vertex UV, the 68 landmark vertices (iBUG order),
per-vertex face-part labels (paper Sec. 4.2) and a linear shape model (identity + expression) that the
synthetic benchmark samples and that 3DMM fittings are expressed in.

Two templates exist:

* ``builtin``: a face made in code (:func:`builtin_face`), so the project runs with no downloads. It is a
  cylindrical grid surface r(θ, h) around a vertical axis behind the face, built from smooth bumps, with the
  lips cut apart along the mouth line so the mouth can open (the opening is a hole in the mesh).
* the Basel Face Model as 3DDFA / 300W-LP use it (:func:`load_bfm`), which users must download themselves.

Look one up with ``get_template("builtin")`` or ``get_template("/path/to/BFM")``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

PARTS = ("other", "left_eyebrow", "right_eyebrow", "left_eye", "right_eye", "nose", "upper_lip", "lower_lip")
EXPRESSIONS = ("mouth_open", "smile", "pout", "brow_raise", "frown", "eye_closure")
UV_MARGIN = 0.02           # empty border kept around the unwrapped template in UV
PART_IMAGE_SIZE = 512      # resolution of the UV label image behind Template.part_at


@dataclass(frozen=True, eq=False)
class Template:
    """A face template: mean mesh, its UV unwrapping, landmarks, part labels and a linear shape model.

    Object space: x to the viewer's right, y up, z towards the camera (see ``densereg/__init__.py``).
    UV: u grows to the viewer's right, v grows downwards, both in [0, 1].

    Attributes:
        name: short identifier (``"builtin"``, ``"bfm"``).
        vertices: (V, 3) float64 mean shape.
        triangles: (T, 3) int32 vertex ids, counter-clockwise seen from outside (outward normals).
        uv: (V, 2) float64 per-vertex (u, v).
        landmarks: (68,) int64 vertex ids in iBUG 68-point order (0-based).
        vertex_parts: (V,) uint8 ids into :data:`PARTS`.
        id_basis: (n_id, V, 3) identity displacement modes; ``instance`` adds ``coef @ basis``.
        exp_basis: (n_exp, V, 3) expression displacement modes.
        exp_names: one name per expression mode.
        id_names: one name per identity mode (may be empty).
        scale: template units per native model unit (1 for the built-in face; about 1/86000 for the BFM,
            whose native shape is therefore ``instance(...) / scale``).
    """

    name: str
    vertices: np.ndarray
    triangles: np.ndarray
    uv: np.ndarray
    landmarks: np.ndarray
    vertex_parts: np.ndarray
    id_basis: np.ndarray
    exp_basis: np.ndarray
    exp_names: tuple
    id_names: tuple = ()
    scale: float = 1.0
    _cache: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self):
        def put(name, value):
            value = np.asarray(value).view()
            value.setflags(write=False)     # a cached template is shared: nobody may edit it in place
            object.__setattr__(self, name, value)

        put("vertices", np.asarray(self.vertices, np.float64))
        n = self.vertices.shape[0]
        put("triangles", np.asarray(self.triangles, np.int32))
        put("uv", np.asarray(self.uv, np.float64))
        put("landmarks", np.asarray(self.landmarks, np.int64))
        put("vertex_parts", np.asarray(self.vertex_parts, np.uint8))
        for basis in ("id_basis", "exp_basis"):
            b = np.asarray(getattr(self, basis))
            put(basis, b if np.issubdtype(b.dtype, np.floating) else b.astype(np.float64))
        object.__setattr__(self, "exp_names", tuple(self.exp_names))
        object.__setattr__(self, "id_names", tuple(self.id_names))
        problems = []
        if self.vertices.ndim != 2 or self.vertices.shape[1] != 3 or not np.all(np.isfinite(self.vertices)):
            problems.append(f"vertices must be finite (V, 3), got {self.vertices.shape}")
        if self.triangles.ndim != 2 or self.triangles.shape[1] != 3 or (
                self.triangles.size and (self.triangles.min() < 0 or self.triangles.max() >= n)):
            problems.append(f"triangles must be (T, 3) ids in [0, {n})")
        if self.uv.shape != (n, 2) or not (np.all(self.uv >= 0) and np.all(self.uv <= 1)):
            problems.append(f"uv must be ({n}, 2) in [0, 1], got {self.uv.shape}")
        if self.landmarks.shape != (68,) or self.landmarks.min() < 0 or self.landmarks.max() >= n:
            problems.append(f"landmarks must be 68 vertex ids in [0, {n})")
        if self.vertex_parts.shape != (n,) or self.vertex_parts.max(initial=0) >= len(PARTS):
            problems.append(f"vertex_parts must be ({n},) ids into PARTS")
        for basis in ("id_basis", "exp_basis"):
            b = getattr(self, basis)
            if b.ndim != 3 or b.shape[1:] != (n, 3):
                problems.append(f"{basis} must be (k, {n}, 3), got {b.shape}")
        if len(self.exp_names) != self.exp_basis.shape[0]:
            problems.append(f"{len(self.exp_names)} exp_names for {self.exp_basis.shape[0]} expression modes")
        if self.id_names and len(self.id_names) != self.id_basis.shape[0]:
            problems.append(f"{len(self.id_names)} id_names for {self.id_basis.shape[0]} identity modes")
        if problems:
            raise ValueError(f"template {self.name!r}: " + "; ".join(problems))

    def instance(self, id_coef=None, exp_coef=None) -> np.ndarray:
        """The (V, 3) shape ``mean + id_coef·id_basis + exp_coef·exp_basis``.

        Args:
            id_coef: identity coefficients (the first ``len`` modes are used; None = all zero).
            exp_coef: expression coefficients, a sequence or a ``{name: value}`` dict keyed by ``exp_names``.
                For the built-in face 1.0 is the full expression (``eye_closure`` = 1 shuts the eye;
                beyond 1 the lid overshoots), negative values the opposite movement.
        """
        if isinstance(exp_coef, dict):
            unknown = set(exp_coef) - set(self.exp_names)
            if unknown:
                raise KeyError(f"unknown expression(s) {sorted(unknown)}; valid: {list(self.exp_names)}")
            exp_coef = [exp_coef.get(name, 0.0) for name in self.exp_names]
        out = np.array(self.vertices, np.float64)
        for coef, basis, what in ((id_coef, self.id_basis, "identity"), (exp_coef, self.exp_basis, "expression")):
            if coef is None:
                continue
            c = np.asarray(coef, np.float64).ravel()
            if c.size > basis.shape[0]:
                raise ValueError(f"{c.size} {what} coefficients but template {self.name!r} has "
                                 f"{basis.shape[0]} {what} modes")
            if c.size:
                out += np.tensordot(c, basis[:c.size], axes=1)
        return out

    @property
    def landmark_uv(self) -> np.ndarray:
        """(68, 2) UV of the landmark vertices."""
        return self.uv[self.landmarks]

    def part_image(self, size: int = 256) -> np.ndarray:
        """The (size, size) uint8 part-label image of the UV plane; pixel [row, col] is at
        (u, v) = (col, row) / (size - 1). Uncovered UV area is 0 ("other")."""
        key = ("part_image", int(size))
        if key not in self._cache:
            img = rasterize_uv_labels(self.uv, self.triangles, self.vertex_parts, int(size))
            img.setflags(write=False)
            self._cache[key] = img
        return self._cache[key]

    def part_at(self, u, v, size: int = PART_IMAGE_SIZE) -> np.ndarray:
        """Part ids at UV positions (any matching shapes); NaN gives 0, values outside [0, 1] are clamped."""
        u, v = np.broadcast_arrays(np.asarray(u, np.float64), np.asarray(v, np.float64))
        ok = np.isfinite(u) & np.isfinite(v)
        col = np.rint(np.clip(np.where(ok, u, 0.0), 0, 1) * (size - 1)).astype(np.intp)
        row = np.rint(np.clip(np.where(ok, v, 0.0), 0, 1) * (size - 1)).astype(np.intp)
        return np.where(ok, self.part_image(size)[row, col], 0).astype(np.uint8)


# ----------------------------------------------------------------------------------------------------------
# UV helpers shared by every template


def cylindrical_uv(vertices: np.ndarray, axis_z: float, axis_x: float = 0.0,
                   margin: float = UV_MARGIN) -> np.ndarray:
    """Cylindrical unwrapping (paper Sec. 2): u from the angle around a vertical axis, v from height.

    Args:
        vertices: (V, 3) object-space points (y up, z towards the camera).
        axis_z, axis_x: where the vertical axis pierces the x-z plane (behind the face).
        margin: empty border left on each side, so both u and v span [margin, 1 - margin].

    Returns:
        (V, 2) UV with u growing to the viewer's right and v growing downwards.
    """
    angle = np.arctan2(vertices[:, 0] - axis_x, vertices[:, 2] - axis_z)
    height = vertices[:, 1]

    def fill(t):
        return margin + (1 - 2 * margin) * (t - t.min()) / max(np.ptp(t), 1e-12)

    return np.stack([fill(angle), fill(-height)], axis=1)


def rasterize_uv_labels(uv: np.ndarray, triangles: np.ndarray, labels: np.ndarray, size: int) -> np.ndarray:
    """Paints each pixel of the UV plane with the label of the nearest vertex of the triangle covering it.

    Args:
        uv: (V, 2) per-vertex UV; triangles: (T, 3) vertex ids; labels: (V,) integer labels.
        size: output side; pixel centre (row, col) sits at (u, v) = (col, row) / (size - 1).

    Returns:
        (size, size) uint8 image, 0 where no triangle covers the pixel.
    """
    img = np.zeros((size, size), np.uint8)
    tri = (np.asarray(uv, np.float64) * (size - 1))[triangles]           # (T, 3, 2) in (col, row)
    lo = np.clip(np.ceil(tri.min(axis=1) - 1e-9), 0, size - 1).astype(np.int64)
    hi = np.clip(np.floor(tri.max(axis=1) + 1e-9), 0, size - 1).astype(np.int64)
    w, h = hi[:, 0] - lo[:, 0] + 1, hi[:, 1] - lo[:, 1] + 1
    count = np.where((w > 0) & (h > 0), w * h, 0)
    tid = np.repeat(np.arange(len(tri)), count)                          # one entry per (triangle, pixel)
    k = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    px = np.stack([lo[tid, 0] + k % w[tid], lo[tid, 1] + k // w[tid]], axis=1).astype(np.float64)
    a, b, c = tri[tid, 0], tri[tid, 1], tri[tid, 2]
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    safe = np.where(np.abs(area) > 1e-12, area, 1.0)
    l1 = ((c[:, 0] - b[:, 0]) * (px[:, 1] - b[:, 1]) - (c[:, 1] - b[:, 1]) * (px[:, 0] - b[:, 0])) / safe
    l2 = ((a[:, 0] - c[:, 0]) * (px[:, 1] - c[:, 1]) - (a[:, 1] - c[:, 1]) * (px[:, 0] - c[:, 0])) / safe
    bary = np.stack([l1, l2, 1 - l1 - l2], axis=1)
    inside = (np.abs(area) > 1e-12) & np.all(bary >= -1e-7, axis=1)
    nearest = np.asarray(triangles)[tid, np.argmax(bary, axis=1)]
    img[px[inside, 1].astype(np.intp), px[inside, 0].astype(np.intp)] = np.asarray(labels)[nearest[inside]]
    return img


def _convex_hull(points: np.ndarray) -> np.ndarray:
    """Counter-clockwise convex hull of 2D points (monotone chain)."""
    pts = sorted(map(tuple, np.asarray(points, np.float64)))

    def half(seq):
        out = []
        for p in seq:
            while len(out) >= 2 and ((out[-1][0] - out[-2][0]) * (p[1] - out[-2][1])
                                     - (out[-1][1] - out[-2][1]) * (p[0] - out[-2][0])) <= 0:
                out.pop()
            out.append(p)
        return out[:-1]

    return np.array(half(pts) + half(pts[::-1]))


def _inside_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd rule point-in-polygon test, vectorised over points."""
    x, y = points[:, 0], points[:, 1]
    inside = np.zeros(len(points), bool)
    for (x0, y0), (x1, y1) in zip(polygon, np.roll(polygon, -1, axis=0)):
        crosses = (y0 > y) != (y1 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (x < x_at)
    return inside


def part_polygons(landmark_uv: np.ndarray) -> dict:
    """The seven face parts as UV polygons built from the 68 landmark UVs.

    Eyes are the 36-41 / 42-47 rings; each brow is its 5-point curve thickened (mostly downwards, since the
    iBUG brow points run along the brow's upper edge); the nose is the hull of the bridge, widened, and the
    nostril points; the lips are the outer contour halves closed by the inner contour. Sizes scale with the
    mean eye width so the same rule fits any template.
    """
    L = np.asarray(landmark_uv, np.float64)
    ew = 0.5 * (np.linalg.norm(L[39] - L[36]) + np.linalg.norm(L[45] - L[42]))
    down = np.array([0.0, 1.0])
    polys = {}
    for name, ids in (("left_eyebrow", range(17, 22)), ("right_eyebrow", range(22, 27))):
        curve = L[list(ids)]
        taper = np.array([0.55, 0.9, 1.0, 1.0, 0.85])
        if name == "right_eyebrow":
            taper = taper[::-1]                              # outer end (thinner) is 17 on the left, 26 on the right
        top = curve - down * (0.08 * ew * taper)[:, None]
        bottom = curve + down * (0.32 * ew * taper)[:, None]
        polys[name] = np.concatenate([top, bottom[::-1]])
    polys["left_eye"] = L[36:42]
    polys["right_eye"] = L[42:48]
    side = np.array([1.0, 0.0])
    nose_pts = [L[27] - 0.22 * ew * side, L[27] + 0.22 * ew * side,
                L[31] - 0.25 * ew * side - 0.2 * ew * down, L[35] + 0.25 * ew * side - 0.2 * ew * down,
                L[31] - 0.12 * ew * side + 0.05 * ew * down, L[35] + 0.12 * ew * side + 0.05 * ew * down,
                L[32], L[33] + 0.05 * ew * down, L[34]]
    polys["nose"] = _convex_hull(np.array(nose_pts))
    polys["upper_lip"] = np.concatenate([L[48:55], L[[64, 63, 62, 61, 60]]])
    polys["lower_lip"] = np.concatenate([L[54:60], L[[48, 60, 67, 66, 65, 64]]])
    return polys


def parts_from_landmarks(uv: np.ndarray, landmark_uv: np.ndarray) -> np.ndarray:
    """(V,) uint8 part ids: each vertex whose UV falls in a :func:`part_polygons` polygon gets that part.

    Later parts win overlaps (nose < brows < eyes < lips), so a thick brow never swallows the eye.
    """
    labels = np.zeros(len(uv), np.uint8)
    polys = part_polygons(landmark_uv)
    for name in ("nose", "left_eyebrow", "right_eyebrow", "left_eye", "right_eye", "upper_lip", "lower_lip"):
        labels[_inside_polygon(np.asarray(uv, np.float64), polys[name])] = PARTS.index(name)
    return labels


# ----------------------------------------------------------------------------------------------------------
# The Basel Face Model (3DDFA / 300W-LP layout; reference doc §3.1)


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


# ----------------------------------------------------------------------------------------------------------
# The built-in face. Built in "face units" first (outer eye corners at height 0, about 1 apart), then
# rescaled so the outer-eye-corner distance is exactly 1 and the mesh's bounding box is centred on 0.

_AXIS_Z = 0.55                  # the unwrapping axis sits this far behind the outer eye corners
_THETA_MAX = np.radians(105.0)  # the surface wraps past the cheeks towards the ears
_N_COLS = 101
_H_TOP, _H_MOUTH = 0.80, -0.84  # forehead top and mouth line (a grid row, cut open between the corners)
_MOUTH_X = 0.30                 # |x| of the mouth corners
_EYE_IN, _EYE_OUT = 0.20, 0.50  # |x| of the inner / outer eye corners
_UNDER_CHIN = 0.07              # how far the mesh continues under the jaw line
_JAW_LINE = [(0.0, -1.26), (0.2, -1.24), (0.4, -1.17), (0.6, -1.07), (0.8, -0.98), (1.05, -0.9),
             (1.4, -0.82), (1.57, -0.76), (1.7, -0.5), (1.84, -0.22)]          # (|θ|, height) of the jaw's lower edge, chin to ear
ID_NAMES = ("face_width", "face_length", "nose_size", "nose_length", "eye_spacing", "jaw_width", "chin",
            "cheek_fullness", "brow_height", "lip_thickness", "forehead_slope", "eye_depth")


def _g(x, mu, sigma):
    return np.exp(-0.5 * ((x - mu) / sigma) ** 2)


def _smoothstep(t):
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _curve(x, knots):
    """Monotone cubic (PCHIP) through ``knots`` (increasing x), held constant outside them."""
    from scipy.interpolate import PchipInterpolator

    k = np.asarray(knots, np.float64)
    return PchipInterpolator(k[:, 0], k[:, 1])(np.clip(x, k[0, 0], k[-1, 0]))


def _rows() -> np.ndarray:
    """Row heights of the centre column: dense (0.013) from chin to brows, 0.03 elsewhere, with the mouth
    line exactly on a row."""
    def spacing(h):
        return 0.03 - 0.017 * _smoothstep((h + 1.08) / 0.08) * _smoothstep((0.2 - h) / 0.08)

    bottom = _curve(0.0, _JAW_LINE) - _UNDER_CHIN
    out = []
    for end, sign in ((_H_TOP, 1.0), (bottom, -1.0)):
        h = [_H_MOUTH]
        while sign * (end - h[-1]) > 1e-9:
            h.append(h[-1] + sign * spacing(h[-1]))
        h = np.array(h)
        out.append(_H_MOUTH + (h - _H_MOUTH) * (end - _H_MOUTH) / (h[-1] - _H_MOUTH))   # land on `end`
    return np.concatenate([out[1][::-1], out[0][1:]])


def _base_radius(theta, h):
    """Distance from the axis of a smooth head without features: a super-ellipse per height."""
    half_width = _curve(h, [(-1.5, 0.3), (-1.25, 0.38), (-1.05, 0.47), (-0.85, 0.56), (-0.6, 0.66),
                            (-0.3, 0.76), (0.0, 0.8), (0.4, 0.79), (0.8, 0.72)])
    front = _AXIS_Z + _curve(h, [(-1.5, 0.08), (-1.2, 0.14), (-0.9, 0.18), (-0.6, 0.21), (-0.3, 0.19),
                                 (0.0, 0.17), (0.3, 0.22), (0.55, 0.2), (0.8, 0.06)])
    p = 2.5
    return (np.abs(np.sin(theta) / half_width) ** p + np.abs(np.cos(theta) / front) ** p) ** (-1 / p)


def _lids(xa):
    """Eyelid margins at |x| = xa: (upper height, lower height, t) with t = 0 inner corner, 1 outer."""
    t = np.clip((xa - _EYE_IN) / (_EYE_OUT - _EYE_IN), 0.0, 1.0)
    centre = -0.02 + 0.02 * t
    s = np.sin(np.pi * t ** 0.9)                       # peak a little towards the nose, as real lids
    return centre + 0.07 * s ** 0.85, centre - 0.04 * s, t


def _lip_width(x):
    """Lip fullness across the mouth: 1 in the middle, falling smoothly to 0 just past the corners."""
    return np.clip(1 - (x / (_MOUTH_X + 0.03)) ** 2, 0, 1) ** 1.5


def _relief(x, h, dh_mouth, jaw_line):
    """Radial offsets of the facial features from the smooth head, as named components."""
    xa = np.abs(x)
    up, lo, t = _lids(xa)
    lid = np.sin(np.pi * t) ** 0.5
    opening = (t > 0) & (t < 1) & (h > lo) & (h < up)
    eyes = (-0.12 * _g(xa, 0.34, 0.17) * _g(h, 0.0, 0.12)                                  # socket
            + 0.075 * np.sqrt(np.clip(1 - ((xa - 0.35) / 0.2) ** 2 - (h / 0.12) ** 2, 0, 1))  # eyeball
            + lid * (0.012 * _g(h, up + 0.012, 0.01) + 0.008 * _g(h, lo - 0.01, 0.01)      # lid rims
                     - 0.01 * _g(h, up + 0.06, 0.012))                                     # lid crease
            - 0.012 * opening)                                                             # lids overhang
    brows = 0.05 * _g(xa, 0.32, 0.22) * _g(h, 0.22, 0.07) + 0.02 * _g(x, 0, 0.1) * _g(h, 0.2, 0.08)
    ridge = _curve(h, [(-0.63, 0.0), (-0.6, 0.03), (-0.57, 0.13), (-0.53, 0.26), (-0.49, 0.31),
                       (-0.45, 0.3), (-0.38, 0.25), (-0.25, 0.17), (-0.1, 0.1), (0.05, 0.04), (0.2, 0.0)])
    width = _curve(h, [(-0.63, 0.08), (-0.45, 0.085), (-0.25, 0.065), (0.0, 0.055), (0.2, 0.07)])
    nose = (ridge * np.exp(-0.5 * np.abs(x / width) ** 2.4)
            + 0.03 * _g(x, 0, 0.05) * _g(h, -0.47, 0.04)                                    # tip
            + 0.11 * _g(xa, 0.13, 0.05) * _g(h, -0.53, 0.045)                               # alae
            - 0.02 * _g(xa, 0.19, 0.015) * _g(h, -0.5, 0.06)                                # alar crease
            - 0.05 * _g(xa, 0.07, 0.025) * _g(h, -0.575, 0.015))                            # nostrils
    cheeks = 0.05 * _g(xa, 0.5, 0.17) * _g(h, -0.25, 0.17)
    w = _lip_width(x)
    s = 0.35 + 0.65 * np.sqrt(w)                      # the vermilion thins towards the corners
    lips = (0.055 * w ** 1.2 * _g(dh_mouth, 0.04 * s, 0.035 * s)
            + 0.065 * w ** 1.2 * _g(dh_mouth, -0.07 * s, 0.045 * s)
            - 0.012 * w * _g(dh_mouth, 0.0, 0.012)                                          # lip line
            - 0.015 * _g(xa, _MOUTH_X + 0.01, 0.035) * _g(dh_mouth, 0.0, 0.035))            # corner dimples
    chin = (-0.012 * _g(x, 0, 0.025) * _g(h, -0.66, 0.05)                                  # philtrum
            - 0.045 * _g(x, 0, 0.2) * _g(h, -1.07, 0.05)                                   # labiomental fold
            + 0.08 * _g(x, 0, 0.2) * _g(h, -1.2, 0.09))
    under = -0.3 * np.clip((jaw_line + 0.02 - h) / (_UNDER_CHIN + 0.02), 0, None) ** 2      # jaw turns under
    return {"eyes": eyes, "brows": brows, "nose": nose, "cheeks": cheeks, "lips": lips, "chin": chin,
            "under": under}


def _grid():
    """The (θ, h) grid, its triangles and the mouth cut. Returns a dict of per-vertex arrays."""
    p = np.linspace(-1.0, 1.0, _N_COLS)
    theta = _THETA_MAX * (0.5 * p + 0.5 * p ** 3)      # columns twice as dense at the front as at the sides
    rows = _rows()
    n_rows, n_cols = len(rows), _N_COLS
    bottom = _curve(np.abs(theta), _JAW_LINE) - _UNDER_CHIN
    # Each column spans [its own jaw bottom, forehead top], so the lower border follows the jaw. Rows above
    # the mouth keep their heights wherever there is room (the whole mouth region), the rest stretch.
    up_scale = np.minimum(1.0, 0.85 * (_H_TOP - bottom) / (_H_TOP - _H_MOUTH))
    mouth_h = _H_TOP - (_H_TOP - _H_MOUTH) * up_scale
    low_scale = (mouth_h - bottom) / (_H_MOUTH - rows[0])
    hh = np.where(rows[:, None] >= _H_MOUTH, _H_TOP - (_H_TOP - rows[:, None]) * up_scale,
                  mouth_h - (_H_MOUTH - rows[:, None]) * low_scale)
    th = np.broadcast_to(theta, hh.shape)
    i_mouth = int(np.argmin(np.abs(rows - _H_MOUTH)))
    x_mouth = _base_radius(theta, hh[i_mouth]) * np.sin(theta)
    j_a, j_b = int(np.argmin(np.abs(x_mouth + _MOUTH_X))), int(np.argmin(np.abs(x_mouth - _MOUTH_X)))
    cut = np.arange(j_a + 1, j_b)                     # columns whose mouth-row vertex is duplicated
    grid_id = np.arange(n_rows * n_cols).reshape(n_rows, n_cols)
    lower_id = np.full(n_cols, -1)
    lower_id[cut] = n_rows * n_cols + np.arange(len(cut))

    i, j = np.meshgrid(np.arange(n_rows - 1), np.arange(n_cols - 1), indexing="ij")
    bl, br, tl, tr = grid_id[i, j], grid_id[i, j + 1], grid_id[i + 1, j], grid_id[i + 1, j + 1]
    below_cut = (i + 1 == i_mouth)                   # quads just under the mouth row use the lower copies
    tl = np.where(below_cut & (lower_id[j] >= 0), lower_id[j], tl)
    tr = np.where(below_cut & (lower_id[j + 1] >= 0), lower_id[j + 1], tr)
    left = (j + 0.5) < (n_cols - 1) / 2              # mirror the diagonals so the mesh is left-right symmetric
    tri_a = np.where(left[..., None], np.stack([bl, br, tr], -1), np.stack([bl, br, tl], -1))
    tri_b = np.where(left[..., None], np.stack([bl, tr, tl], -1), np.stack([br, tr, tl], -1))
    triangles = np.concatenate([tri_a.reshape(-1, 3), tri_b.reshape(-1, 3)])

    flat_h, flat_th = hh.ravel(), np.asarray(th).ravel()
    src = np.concatenate([np.arange(n_rows * n_cols), grid_id[i_mouth, cut]])      # duplicate's source
    side = np.zeros(len(src), np.int8)               # +1 upper mouth-row copy, -1 lower copy, 0 elsewhere
    side[grid_id[i_mouth, cut]] = 1
    side[n_rows * n_cols:] = -1
    mouth_row_h = hh[i_mouth]
    theta_corner = theta[j_b]
    return {"theta": flat_th[src], "h": flat_h[src], "side": side, "triangles": triangles,
            "corners": (grid_id[i_mouth, j_a], grid_id[i_mouth, j_b]),
            "h_line": np.interp(np.minimum(np.abs(flat_th[src]), theta_corner), theta, mouth_row_h)}


def _eye_closure(x, h):
    """Height change that brings each upper lid down onto its lower lid (the eyeball folds under)."""
    up, lo, t = _lids(np.abs(x))
    crease = up + 0.08
    closed_up = lo + 0.08 * (up - lo)                # where the upper margin lands
    new_h = np.where((h > lo) & (h <= up), lo + (h - lo) * 0.08, h)
    above = (h > up) & (h < crease)
    new_h = np.where(above, closed_up + (h - up) * (crease - closed_up) / np.maximum(crease - up, 1e-9), new_h)
    return np.where((t > 0) & (t < 1), new_h - h, 0.0)


def _modes(g, pts, relief):
    """Identity and expression displacement fields (face units, coefficient 1 = one s.d. / full expression)."""
    theta, h, x = g["theta"], g["h"], pts[:, 0]
    xa, dhm = np.abs(x), h - g["h_line"]
    radial = np.stack([np.sin(theta), np.zeros_like(theta), np.cos(theta)], axis=1)
    zero = np.zeros_like(x)

    def vec(dx=zero, dy=zero, dr=zero):
        return np.stack([dx, dy, zero], axis=1) + dr[:, None] * radial

    width_lips = _lip_width(x)
    nose_w = _g(x, 0, 0.18) * _g(h, -0.5, 0.12)
    chin_w = _g(x, 0, 0.25) * _g(h, -1.2, 0.18)
    identity = [
        vec(dx=0.06 * x),                                                               # face_width
        vec(dy=np.where(h < 0, 0.07, 0.03) * h),                                        # face_length
        vec(dx=0.1 * x * _g(x, 0, 0.2) * _g(h, -0.35, 0.2), dr=0.22 * relief["nose"]),  # nose_size
        vec(dy=-0.05 * nose_w, dr=0.02 * nose_w),                                       # nose_length
        vec(dx=0.03 * np.tanh(x / 0.1) * _g(xa, 0.35, 0.2) * _g(h, 0.05, 0.18)),        # eye_spacing
        vec(dx=0.07 * x * _smoothstep((-0.4 - h) / 0.6)),                               # jaw_width
        vec(dy=-0.04 * chin_w, dr=0.04 * chin_w),                                       # chin
        vec(dr=0.04 * _g(xa, 0.45, 0.2) * _g(h, -0.45, 0.2)),                           # cheek_fullness
        vec(dy=0.03 * _g(xa, 0.33, 0.25) * _g(h, 0.25, 0.12)),                          # brow_height
        vec(dy=0.015 * width_lips * (_g(dhm, 0.06, 0.03) - _g(dhm, -0.1, 0.04)),        # lip_thickness
            dr=0.3 * relief["lips"]),
        vec(dr=-0.07 * _smoothstep((h - 0.25) / 0.55)),                                 # forehead_slope
        vec(dr=-0.03 * _g(xa, 0.34, 0.17) * _g(h, 0.0, 0.12)),                          # eye_depth
    ]

    # mouth_open: the jaw turns about a hinge near the ears, weighted by m: 1 on the mandible and lower lip,
    # 0 above the mouth. Along the cut the lower copy starts at 1/2 + taper/2 and the upper at 1/2 - taper/2
    # (a lens-shaped gap); m then runs monotonically to 1 below / 0 above, so no triangle folds over.
    taper = np.clip(1 - (x / _MOUTH_X) ** 2, 0, 1) ** 0.8
    band = 0.06 + 0.25 * np.maximum(0.8 * np.abs(theta) - _MOUTH_X, 0)
    lower_side = (g["side"] == -1) | ((g["side"] == 0) & (dhm < 0))
    m = np.where(lower_side, 0.5 + 0.5 * taper + (0.5 - 0.5 * taper) * _smoothstep(-dhm / band),
                 (0.5 - 0.5 * taper) * (1 - _smoothstep(dhm / band)))
    hinge_y, hinge_z, alpha = -0.15, -0.6, 0.3
    open_jaw = alpha * m[:, None] * np.stack([zero, -(pts[:, 2] - hinge_z), pts[:, 1] - hinge_y + 0.5], 1)
    open_jaw[:, 1] += 0.025 * ~lower_side * taper * _g(dhm, 0.0, 0.06)      # upper lip lifts a little
    corner = _g(xa, _MOUTH_X, 0.12) * _g(dhm, 0.0, 0.12)
    cheek = _g(xa, 0.42, 0.15) * _g(h, -0.5, 0.15)
    lips_w = _g(x, 0, 0.2) * _g(dhm, -0.01, 0.1)
    brow_w = _g(xa, 0.3, 0.3) * np.where(h < 0.22, _g(h, 0.22, 0.1), np.clip(1 - 0.7 * (h - 0.22) / 0.58, 0, 1))
    frown_w = _g(xa, 0.18, 0.14) * _g(h, 0.2, 0.1)
    expression = [
        open_jaw,                                                                        # mouth_open
        vec(dx=0.04 * np.sign(x) * corner, dy=0.06 * corner + 0.03 * cheek,             # smile
            dr=-0.02 * corner + 0.03 * cheek),
        vec(dx=-0.25 * x * lips_w, dr=0.06 * lips_w),                                    # pout
        vec(dy=0.06 * brow_w),                                                           # brow_raise
        vec(dx=-0.035 * np.tanh(x / 0.05) * frown_w, dy=-0.035 * frown_w, dr=0.01 * frown_w),  # frown
        vec(dy=_eye_closure(x, h)),                                                      # eye_closure
    ]
    return np.stack(identity), np.stack(expression)


def _nearest(x, h, candidates, target):
    """Id of the candidate vertex nearest to ``target`` = (x, h)."""
    d = (x[candidates] - target[0]) ** 2 + (h[candidates] - target[1]) ** 2
    return int(candidates[np.argmin(d)])


def _jaw_contour(pts, n=17, top=0.0, centre_y=-0.45):
    """``n`` vertices evenly spaced along the frontal silhouette below height ``top``, image-left first."""
    rel = pts[:, :2] - [0.0, centre_y]
    psi = np.arctan2(rel[:, 0], -rel[:, 1])            # 0 straight down, negative on the viewer's left
    radius = np.hypot(rel[:, 0], rel[:, 1])
    bins = np.round(np.degrees(psi) * 2).astype(int)   # half-degree bins; keep the farthest vertex of each
    order = np.lexsort((-radius, bins))
    first = order[np.r_[True, np.diff(bins[order]) != 0]]
    outline = first[np.argsort(psi[first])]
    outline = outline[pts[outline, 1] <= top]
    arc = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(pts[outline, :2], axis=0), axis=1))]
    picks = np.interp(np.linspace(0, arc[-1], n), arc, np.arange(len(outline)))
    return outline[np.rint(picks).astype(int)]


@functools.cache
def builtin_face() -> Template:
    """The built-in face template, made in code (no files); cached per process.

    A cylindrical grid surface r(θ, h) around a vertical axis behind the face: a smooth super-elliptic head
    plus Gaussian-shaped features (brow ridge, eye sockets with eyeballs and lids, nose with alae and
    nostrils, lips, chin, cheeks), wrapping back to ±105° so the far side self-occludes in profile. The
    mouth-line row is duplicated between the mouth corners, so ``mouth_open`` separates the lips and opens a
    hole. u is the angle around the axis and v the height (downwards), each filling [0.02, 0.98].

    Shape model: identity modes (``id_names``) are smooth displacement fields scaled so coefficients ~N(0, 1)
    give plausible faces (±2.5 folds no triangle). Expression modes (``exp_names``) are 0 at rest and 1 at
    the full expression; ``mouth_open`` and ``eye_closure`` are meant for [0, 1] (below 0 the lips or lids
    cross, above 1 the lid overshoots), the others also allow mild negative values.
    """
    g = _grid()
    theta, h = g["theta"], g["h"]
    x_base = _base_radius(theta, h) * np.sin(theta)
    jaw_line = _curve(np.abs(theta), _JAW_LINE)
    relief = _relief(x_base, h, h - g["h_line"], jaw_line)
    r = _base_radius(theta, h) + sum(relief.values())
    pts = np.stack([r * np.sin(theta), h, r * np.cos(theta) - _AXIS_Z], axis=1)

    # Landmarks (iBUG 68 order): nearest vertices to designed (x, height) positions, lips on the cut rows.
    x, n_grid = pts[:, 0], int(np.sum(g["side"] >= 0))
    front = np.flatnonzero((np.abs(theta) < 1.2) & (g["side"] >= 0))
    upper, lower = np.flatnonzero(g["side"] == 1), np.flatnonzero(g["side"] == -1)
    lm = np.zeros(68, np.int64)
    lm[:17] = _jaw_contour(pts[:n_grid])
    brow_x, brow_h = [-0.62, -0.52, -0.40, -0.28, -0.16], [0.20, 0.27, 0.30, 0.28, 0.22]
    for k in range(5):
        lm[17 + k] = _nearest(x, h, front, (brow_x[k], brow_h[k]))
        lm[26 - k] = _nearest(x, h, front, (-brow_x[k], brow_h[k]))
    for k, hk in enumerate([0.03, -0.13, -0.30]):
        lm[27 + k] = _nearest(x, h, front, (0.0, hk))
    tip = front[(np.abs(x[front]) < 0.03) & (h[front] < -0.3) & (h[front] > -0.62)]
    lm[30] = tip[np.argmax(pts[tip, 2])]
    for k, (xk, hk) in enumerate([(-0.13, -0.56), (-0.065, -0.585), (0.0, -0.6), (0.065, -0.585), (0.13, -0.56)]):
        lm[31 + k] = _nearest(x, h, front, (xk, hk))
    for sign, (outer, up1, up2, inner, lo2, lo1) in ((-1, range(36, 42)), (1, (45, 44, 43, 42, 47, 46))):
        lm[outer] = _nearest(x, h, front, (sign * _EYE_OUT, 0.0))
        lm[inner] = _nearest(x, h, front, (sign * _EYE_IN, -0.02))
        for upper_id, lower_id, xk in ((up1, lo1, 0.4), (up2, lo2, 0.3)):
            # Lid points are margin vertices on the opening's side, the lower one in the upper one's column,
            # so eye_closure brings each pair together.
            top, bottom, _ = _lids(xk)
            lm[upper_id] = _nearest(x, h, front[h[front] <= top + 1e-9], (sign * xk, top))
            column = front[(theta[front] == theta[lm[upper_id]]) & (h[front] >= bottom - 1e-9)]
            lm[lower_id] = _nearest(x, h, column, (sign * xk, bottom))
    dhm = h - g["h_line"]
    lm[48], lm[54] = g["corners"]
    for k, (xk, dk) in enumerate([(-0.2, 0.065), (-0.09, 0.095), (0.0, 0.09), (0.09, 0.095), (0.2, 0.065)]):
        lm[49 + k] = _nearest(x, dhm, front, (xk, dk))
    for k, (xk, dk) in enumerate([(0.2, -0.09), (0.1, -0.14), (0.0, -0.15), (-0.1, -0.14), (-0.2, -0.09)]):
        lm[55 + k] = _nearest(x, dhm, front, (xk, dk))
    for idx, xk in ((60, -0.26), (61, -0.1), (62, 0.0), (63, 0.1), (64, 0.26)):
        lm[idx] = _nearest(x, dhm, upper, (xk, 0.0))
    for idx, xk in ((65, 0.1), (66, 0.0), (67, -0.1)):
        lm[idx] = _nearest(x, dhm, lower, (xk, 0.0))

    id_basis, exp_basis = _modes(g, pts, relief)
    # Final units: outer-eye-corner distance 1, bounding box centred on the origin (x stays symmetric).
    scale = 1.0 / np.linalg.norm(pts[lm[36]] - pts[lm[45]])
    centre = 0.5 * (pts.min(axis=0) + pts.max(axis=0))
    centre[0] = 0.0
    vertices = (pts - centre) * scale
    uv = cylindrical_uv(vertices, axis_z=(-_AXIS_Z - centre[2]) * scale)
    parts = parts_from_landmarks(uv, uv[lm])
    parts[upper] = PARTS.index("upper_lip")          # the two copies of the mouth line share their UV
    parts[lower] = PARTS.index("lower_lip")
    return Template(name="builtin", vertices=vertices, triangles=g["triangles"], uv=uv, landmarks=lm,
                    vertex_parts=parts, id_basis=id_basis * scale, exp_basis=exp_basis * scale,
                    exp_names=EXPRESSIONS, id_names=ID_NAMES)


TEMPLATES = {"builtin": builtin_face}


@functools.lru_cache(maxsize=2)
def _load_bfm_cached(root: str) -> Template:
    return load_bfm(root)


def get_template(name_or_path) -> Template:
    """A template by registry name (``TEMPLATES``) or a directory holding the BFM files (:func:`load_bfm`)."""
    if isinstance(name_or_path, str) and name_or_path in TEMPLATES:
        return TEMPLATES[name_or_path]()
    path = Path(name_or_path)
    if path.is_dir():
        return _load_bfm_cached(str(path.resolve()))
    raise KeyError(f"unknown template {str(name_or_path)!r}: valid names are {sorted(TEMPLATES)}, "
                   "or give a directory holding the BFM files")
