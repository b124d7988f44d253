"""Things in front of faces in photos: glasses, hats, hands and microphones, drawn from the face's landmarks.

``densereg.data.appearance.occluder`` draws a random blob; real faces are covered by objects with shapes a
network must learn to see through. Each occluder here is placed from the 68 projected landmarks (so it sits on
the eyes, the forehead, the chin or the mouth however the face is posed) and returns ``(rgb, alpha)``: ``H×W×3``
and ``H×W`` float32 in [0, 1], composited by the caller as ``image·(1 − α) + rgb·α``. Like real occlusion in
300-W, they change the image and never the ground truth (landmarks and UV stay those of the face behind them).

:data:`OCCLUDERS` is the registry (name → function ``(rng, landmarks, height, width, skin) -> (rgb, alpha)``);
:func:`random_occluder` picks one with the weights of :data:`WEIGHTS`.
"""

from __future__ import annotations

import cv2
import numpy as np

from densereg.registry import lookup


def _canvas(height, width):
    return np.zeros((height, width, 3), np.float32), np.zeros((height, width), np.float32)


def _pt(p):
    return int(round(float(p[0]) * 4)), int(round(float(p[1]) * 4))   # 2 fractional bits (cv2 shift=2)


def _face_frame(landmarks):
    """Eye centres, the inter-ocular vector, its length and the face's 'down' unit vector."""
    left, right = landmarks[36:42].mean(0), landmarks[42:48].mean(0)
    across = right - left
    d = max(float(np.linalg.norm(across)), 1.0)
    down = np.array([-across[1], across[0]]) / d
    if np.dot(down, landmarks[8] - (left + right) / 2) < 0:
        down = -down
    return left, right, across / d, d, down


def _shade(rng, rgb, alpha, strength=0.25):
    """A soft left-to-right shading ramp on the occluder, so it is not a flat colour."""
    h, w = alpha.shape
    ramp = np.linspace(1 - strength, 1 + strength, w, dtype=np.float32)[None, :, None]
    if rng.random() < 0.5:
        ramp = ramp[:, ::-1]
    return np.clip(rgb * ramp, 0, 1), np.clip(alpha, 0, 1)


def glasses(rng, landmarks, height, width, skin=None):
    """Spectacles or sunglasses: a rim around each eye, a bridge, temples to the ears, tinted lenses."""
    rgb, alpha = _canvas(height, width)
    left, right, axis, d, down = _face_frame(landmarks)
    angle = float(np.degrees(np.arctan2(axis[1], axis[0])))
    frame = rng.uniform(0, 0.35, 3) if rng.random() < 0.7 else rng.uniform(0.4, 0.9, 3)
    sun = rng.random() < 0.3
    lens_alpha, lens_colour = (rng.uniform(0.75, 0.95), rng.uniform(0.0, 0.15, 3)) if sun else \
        (rng.uniform(0.05, 0.2), np.array([0.8, 0.85, 0.9]))
    size = (d * rng.uniform(0.36, 0.46), d * rng.uniform(0.24, 0.34))
    thick = max(1, int(round(d * rng.uniform(0.03, 0.07))))
    lens = np.zeros((height, width), np.float32)
    rim = np.zeros((height, width), np.float32)
    for centre in (left, right):
        c = centre + down * d * rng.uniform(-0.02, 0.08)
        axes = (int(round(size[0] * 4)), int(round(size[1] * 4)))
        cv2.ellipse(lens, _pt(c), axes, angle, 0, 360, 1.0, -1, cv2.LINE_AA, 2)
        cv2.ellipse(rim, _pt(c), axes, angle, 0, 360, 1.0, thick, cv2.LINE_AA, 2)
    inner_l, inner_r = left + axis * size[0], right - axis * size[0]
    cv2.line(rim, _pt(inner_l), _pt(inner_r), 1.0, thick, cv2.LINE_AA, 2)
    for centre, ear, sign in ((left, landmarks[0], -1), (right, landmarks[16], 1)):
        cv2.line(rim, _pt(centre + sign * axis * size[0]), _pt(ear + (centre - ear) * 0.1), 1.0, thick,
                 cv2.LINE_AA, 2)
    rgb[:] = lens_colour
    rgb[rim > 0] = frame
    alpha = np.maximum(lens * lens_alpha, rim)
    return _shade(rng, rgb, alpha, 0.15)


def hat(rng, landmarks, height, width, skin=None):
    """A cap or brimmed hat over the forehead: a crown above the brows and a brim across them."""
    rgb, alpha = _canvas(height, width)
    left, right, axis, d, down = _face_frame(landmarks)
    mid = (left + right) / 2
    brow = landmarks[17:27].mean(0)
    base = brow - down * d * rng.uniform(0.25, 0.6)          # where the hat sits on the forehead
    half = d * rng.uniform(1.05, 1.4)
    top = base - down * d * rng.uniform(0.9, 1.5)
    crown = np.array([base - axis * half, base + axis * half, top + axis * half * 0.8, top - axis * half * 0.8])
    cv2.fillConvexPoly(alpha, np.round(crown * 4).astype(np.int32), 1.0, cv2.LINE_AA, 2)
    cv2.ellipse(alpha, _pt(top), (int(half * 0.8 * 4), int(d * 0.3 * 4)),
                float(np.degrees(np.arctan2(axis[1], axis[0]))), 0, 360, 1.0, -1, cv2.LINE_AA, 2)
    brim_w = half * rng.uniform(1.0, 1.6)
    brim_off = axis * rng.uniform(-0.3, 0.3) * d
    cv2.ellipse(alpha, _pt(base + brim_off), (int(brim_w * 4), int(d * rng.uniform(0.12, 0.35) * 4)),
                float(np.degrees(np.arctan2(axis[1], axis[0]))), 0, 360, 1.0, -1, cv2.LINE_AA, 2)
    rgb[:] = rng.uniform(0.05, 0.9, 3)
    del mid
    return _shade(rng, rgb, alpha, 0.3)


def hand(rng, landmarks, height, width, skin=None):
    """A hand against the face: a palm ellipse and four fingers from below or the side, in skin colour."""
    rgb, alpha = _canvas(height, width)
    left, right, axis, d, down = _face_frame(landmarks)
    target = landmarks[rng.choice([8, 57, 4, 12, 33, 2, 14])]
    side = rng.choice([-1.0, 1.0])
    from_dir = down * rng.uniform(0.5, 1.0) + axis * side * rng.uniform(0.3, 1.0)
    from_dir /= np.linalg.norm(from_dir)
    palm = target + from_dir * d * rng.uniform(0.4, 0.9)
    angle = float(np.degrees(np.arctan2(from_dir[1], from_dir[0])))
    cv2.ellipse(alpha, _pt(palm), (int(d * 0.75 * 4), int(d * 0.5 * 4)), angle, 0, 360, 1.0, -1, cv2.LINE_AA, 2)
    spread = np.array([-from_dir[1], from_dir[0]])
    finger_w = max(2, int(round(d * 0.17)))
    for k in range(4):
        root = palm - from_dir * d * 0.55 + spread * d * (k - 1.5) * 0.22
        tip = root - from_dir * d * rng.uniform(0.6, 0.9) + spread * d * rng.normal(0, 0.05)
        cv2.line(alpha, _pt(root), _pt(tip), 1.0, finger_w, cv2.LINE_AA, 2)
    tone = np.asarray(skin if skin is not None else rng.uniform(0.3, 0.9, 3), np.float32)
    rgb[:] = np.clip(tone * rng.uniform(0.85, 1.1), 0, 1)
    return _shade(rng, rgb, cv2.GaussianBlur(alpha, (0, 0), 0.7), 0.3)


def microphone(rng, landmarks, height, width, skin=None):
    """A hand-held microphone in front of the mouth: a grille ball on a dark handle going down and out."""
    rgb, alpha = _canvas(height, width)
    left, right, axis, d, down = _face_frame(landmarks)
    mouth = landmarks[48:68].mean(0)
    head_c = mouth + down * d * rng.uniform(0.2, 0.7) + axis * d * rng.normal(0, 0.3)
    radius = d * rng.uniform(0.3, 0.45)
    handle_dir = down * 1.0 + axis * rng.uniform(-0.6, 0.6)
    handle_dir /= np.linalg.norm(handle_dir)
    end = head_c + handle_dir * d * rng.uniform(1.5, 3.0)
    handle = np.zeros((height, width), np.float32)
    cv2.line(handle, _pt(head_c), _pt(end), 1.0, max(2, int(round(radius * 0.9))), cv2.LINE_AA, 2)
    ball = np.zeros((height, width), np.float32)
    cv2.circle(ball, _pt(head_c), int(round(radius * 4)), 1.0, -1, cv2.LINE_AA, 2)
    grille = rng.uniform(0.35, 0.7)
    yy, xx = np.mgrid[0:height, 0:width]
    mesh = 0.8 + 0.2 * ((xx + yy) % 3 == 0)
    rgb[:] = rng.uniform(0.02, 0.15)
    rgb[ball > 0] = (grille * mesh[ball > 0])[:, None]
    return _shade(rng, rgb, np.maximum(ball, handle), 0.3)


OCCLUDERS = {"glasses": glasses, "hat": hat, "hand": hand, "microphone": microphone}
WEIGHTS = {"glasses": 0.4, "hat": 0.2, "hand": 0.25, "microphone": 0.15}


def random_occluder(rng, landmarks, height, width, skin=None, name=None):
    """One occluder of :data:`OCCLUDERS` (``name``, or drawn with :data:`WEIGHTS`): ``(name, rgb, alpha)``."""
    if name is None:
        names = list(WEIGHTS)
        name = names[rng.choice(len(names), p=np.array(list(WEIGHTS.values())) / sum(WEIGHTS.values()))]
    rgb, alpha = lookup(OCCLUDERS, name, "occluder")(rng, np.asarray(landmarks, float), height, width, skin)
    return name, rgb, alpha
