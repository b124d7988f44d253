"""The built-in face template, made in code (paper Sec. 2 template, so the project runs with no downloads).

A cylindrical grid surface r(θ, h) around a vertical axis behind the face, built from smooth bumps, with the
lips cut apart along the mouth line so the mouth can open (the opening is a hole in the mesh). This module
holds its geometry: the surface construction, the mouth cut, the 68 landmark vertices, the identity and
expression displacement modes. :func:`densereg.geometry.templates.builtin_face` is the cached entry point; it calls
:func:`build_face` here.

The face is built in "face units" first (outer eye corners at height 0, about 1 apart), then rescaled so the
outer-eye-corner distance is exactly 1 and the mesh's bounding box is centred on 0.
"""

from __future__ import annotations

import numpy as np

from densereg.geometry.template import EXPRESSIONS, PARTS, Template, cylindrical_uv, parts_from_landmarks

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


def build_face() -> Template:
    """Builds the built-in face template (no files); :func:`densereg.geometry.templates.builtin_face` caches it.

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
