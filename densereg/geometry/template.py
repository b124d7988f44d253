"""The DenseReg template: a 3D face mesh unwrapped cylindrically onto the UV plane (paper Sec. 2).

DenseReg regresses, for every face pixel, the UV coordinate of the template point the pixel shows. This
module owns what every template is: the :class:`Template` type (mean shape, triangles, per-vertex UV, the 68
landmark vertices in iBUG order, per-vertex face-part labels (paper Sec. 4.2) and a linear shape model
(identity + expression) that the synthetic benchmark samples and that 3DMM fittings are expressed in), the
UV and part-label helpers shared by all templates.

Two templates exist, each built in its own module:

* ``builtin``: a face made in code (:func:`densereg.geometry.templates.builtin_face`, geometry in :mod:`densereg.geometry.face_model`), so the
  project runs with no downloads. It is a cylindrical grid surface r(θ, h) around a vertical axis behind the
  face, built from smooth bumps, with the lips cut apart along the mouth line so the mouth can open (the
  opening is a hole in the mesh).
* the Basel Face Model as 3DDFA / 300W-LP use it (:func:`densereg.geometry.bfm.load_bfm`), which users must download
  themselves.

Look one up in the registry :mod:`densereg.geometry.templates` (``get_template("builtin")``,
``get_template("/path/to/BFM")``). ``face_model`` and ``bfm`` build :class:`Template` objects with this
module's helpers; this module imports neither.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
