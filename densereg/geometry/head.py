"""A whole head around the face template: skull, hair, ears, neck and shoulders, as one labelled mesh.

The built-in template (:mod:`densereg.geometry.face_model`) is a face mask: forehead to chin, wrapping to the
ears. Rendered alone it floats, and a network trained on it learns the mask's edge rather than a face. This
module continues it to a head in the template's own frame (outer-eye-corner distance 1, x to the viewer's
right, y up, z towards the camera; the face's bounding box centred on 0), so the same 3DDFA pose puts head and
face in one image (:func:`densereg.geometry.camera.project_3ddfa`).

The head is *not* part of the template: it has no UV, and the dense ground truth (rasterised from the fitting
of the face alone, ``densereg.data.groundtruth``) labels its pixels as non-face. The synthetic renderer draws it
first and the face over it, so the visible face pixels are exactly the ground-truth foreground. Its pieces are
superellipsoids and elliptic cylinders sized from human proportions in outer-eye units (head width ≈ 1.7,
length ≈ 2.1, crown ≈ 1.2 above the eyes), jittered per sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Labels of the head's triangles (``Head.labels``): what material a renderer paints them with.
HEAD_PARTS = ("skin", "hair", "clothes")
HAIR_STYLES = ("bald", "short", "long")
# The point the shoulders turn about (template units): the base of the neck. A renderer poses the body with a
# damped copy of the head's rotation about it, since people turn their heads far more than their shoulders.
NECK_BASE = np.array([0.0, -2.0, -0.7])


@dataclass
class Head:
    """A head mesh in template units.

    Attributes:
        vertices: (V, 3) float64 in the template frame.
        triangles: (T, 3) int64.
        labels: (T,) uint8 index into :data:`HEAD_PARTS`.
        style: the hair style (one of :data:`HAIR_STYLES`).
        body: (V,) bool, the shoulders' vertices (posed about :data:`NECK_BASE`, see there).
    """

    vertices: np.ndarray
    triangles: np.ndarray
    labels: np.ndarray
    style: str
    body: np.ndarray


def _grid_triangles(n_rows: int, n_cols: int, wrap: bool) -> np.ndarray:
    """Triangles of an ``n_rows × n_cols`` vertex grid (row-major), the columns closed into a ring if ``wrap``."""
    cols = n_cols if wrap else n_cols - 1
    i, j = np.meshgrid(np.arange(n_rows - 1), np.arange(cols), indexing="ij")
    j1 = (j + 1) % n_cols
    a, b, c, d = i * n_cols + j, i * n_cols + j1, (i + 1) * n_cols + j, (i + 1) * n_cols + j1
    return np.concatenate([np.stack([a, b, d], -1).reshape(-1, 3), np.stack([a, d, c], -1).reshape(-1, 3)])


def _signed_pow(x, p):
    return np.sign(x) * np.abs(x) ** p


def superellipsoid(centre, axes, exponent: float = 2.0, n_lat: int = 24, n_lon: int = 40,
                   lat_range=(-np.pi / 2, np.pi / 2)):
    """A (part of a) superellipsoid surface.

    Args:
        centre: (3,) centre; axes: (3,) semi-axes along x, y, z.
        exponent: 2 is an ellipsoid, larger values are boxier.
        lat_range: latitudes kept (−π/2 bottom … π/2 top).

    Returns:
        (vertices (V, 3), triangles (T, 3), latitude (V,), longitude (V,)); longitude 0 faces +z (the camera
        side of the template), ±π the back.
    """
    lat = np.linspace(*lat_range, n_lat)
    lon = np.linspace(-np.pi, np.pi, n_lon, endpoint=False)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    e = 2.0 / exponent
    x = _signed_pow(np.cos(la), e) * _signed_pow(np.sin(lo), e)
    y = _signed_pow(np.sin(la), e)
    z = _signed_pow(np.cos(la), e) * _signed_pow(np.cos(lo), e)
    verts = np.stack([x, y, z], -1).reshape(-1, 3) * np.asarray(axes, float) + np.asarray(centre, float)
    return verts, _grid_triangles(n_lat, n_lon, wrap=True), la.ravel(), lo.ravel()


def elliptic_tube(centre_top, centre_bottom, axes_xz, n_rows: int = 8, n_cols: int = 32):
    """An open elliptic cylinder between two centres (its axis need not be vertical): (vertices, triangles)."""
    t = np.linspace(0.0, 1.0, n_rows)[:, None, None]
    lon = np.linspace(-np.pi, np.pi, n_cols, endpoint=False)
    ring = np.stack([axes_xz[0] * np.sin(lon), np.zeros_like(lon), axes_xz[1] * np.cos(lon)], -1)[None]
    centres = (1 - t) * np.asarray(centre_top, float) + t * np.asarray(centre_bottom, float)
    return (centres + ring).reshape(-1, 3), _grid_triangles(n_rows, n_cols, wrap=True)


def _hairline(lon, front: float, nape: float, temple: float) -> np.ndarray:
    """Height above which the skull is hair, by longitude: ``front`` over the forehead, ``temple`` above the
    ears (|lon| = π/2), ``nape`` at the back."""
    a = np.abs(lon) / np.pi                       # 0 front, 0.5 sides, 1 back
    return np.where(a < 0.5, front + (temple - front) * (2 * a) ** 2,
                    temple + (nape - temple) * np.sin(np.clip(a - 0.5, 0, None) * np.pi) ** 0.7)


def build_head(rng: np.random.Generator, style: str | None = None) -> Head:
    """A random head for the built-in template (proportions jittered by a few per cent, a hair style).

    The face template spans x ±0.82, y −1.08 (chin) … 1.08 (forehead top), z −0.66 … 0.66, with the eyes at
    y ≈ 0.27; the skull is centred behind it so that its front lies under the face (drawn over it) and its
    sides, top and back show around it.
    """
    style = style or HAIR_STYLES[rng.choice(3, p=[0.12, 0.55, 0.33])]
    if style not in HAIR_STYLES:
        raise ValueError(f"unknown hair style {style!r}; valid: {', '.join(HAIR_STYLES)}")
    j = lambda lo, hi: rng.uniform(lo, hi)  # noqa: E731 - a short jitter helper
    width, length, height = j(0.80, 0.90), j(0.98, 1.10), j(0.95, 1.08)
    skull_c = np.array([0.0, 0.38, -0.42 - 0.5 * (length - 1.0)])
    parts = []   # (vertices, triangles, label)
    sv, st, slat, slon = superellipsoid(skull_c, (width, height, length), exponent=2.3, n_lat=26, n_lon=44,
                                        lat_range=(-np.pi / 2 + 0.35, np.pi / 2))
    parts.append((sv, st, "skin"))
    # Neck: from inside the skull down past the collar; then the shoulders and upper chest.
    neck_w, neck_d = j(0.50, 0.60), j(0.50, 0.58)
    nv, nt = elliptic_tube((0.0, -0.1, -0.55), (0.0, -2.2, -0.7), (neck_w, neck_d))
    parts.append((nv, nt, "skin"))
    shoulder_w = j(1.9, 2.4)
    tv, tt, _, _ = superellipsoid((0.0, -2.95, -0.75), (shoulder_w, 1.05, j(0.6, 0.75)), exponent=3.2,
                                  n_lat=16, n_lon=36, lat_range=(-0.3, np.pi / 2))
    parts.append((tv, tt, "clothes"))
    n_before_body = sum(len(v) for v, _, _ in parts[:-1])
    # Ears: flattened ellipsoids on the sides of the skull at eye-to-nose height, turned slightly forward.
    for sign in (-1.0, 1.0):
        ev, et, _, _ = superellipsoid((0.0, 0.0, 0.0), (0.06, j(0.26, 0.32), j(0.15, 0.19)), n_lat=10, n_lon=16)
        turn = sign * 0.35
        rot = np.array([[np.cos(turn), 0, np.sin(turn)], [0, 1, 0], [-np.sin(turn), 0, np.cos(turn)]])
        ev = ev @ rot.T + [sign * (width + 0.02), 0.02, -0.50]
        parts.append((ev, et, "skin"))
    if style != "bald":
        # Hair: a shell over the skull above a hairline; long hair hangs to the shoulders at the back and sides.
        thick = j(1.04, 1.09) if style == "short" else j(1.07, 1.14)
        nape = -0.35 if style == "short" else -1.9
        lat_lo = -np.pi / 2 + 0.35 if style == "short" else -np.pi / 2 + 0.05
        hv, ht, hlat, hlon = superellipsoid(skull_c, (width * thick, height * thick, length * thick),
                                            exponent=2.3, n_lat=30, n_lon=44, lat_range=(lat_lo, np.pi / 2))
        if style == "long":   # stretch the lower back half downwards into a curtain
            low = hv[:, 1] < skull_c[1]
            hv[low, 1] = skull_c[1] + (hv[low, 1] - skull_c[1]) * 2.3
        line = _hairline(hlon, front=j(0.95, 1.15), nape=nape, temple=j(0.35, 0.6))
        keep = hv[:, 1] > line
        tri_keep = keep[ht].all(axis=1)
        parts.append((hv, ht[tri_keep], "hair"))
    vertices, triangles, labels, offset = [], [], [], 0
    for v, t, label in parts:
        vertices.append(v)
        triangles.append(t + offset)
        labels.append(np.full(len(t), HEAD_PARTS.index(label), np.uint8))
        offset += len(v)
    body = np.zeros(offset, bool)
    body[n_before_body:n_before_body + len(tv)] = True
    return Head(np.concatenate(vertices), np.concatenate(triangles).astype(np.int64), np.concatenate(labels),
                style, body)
