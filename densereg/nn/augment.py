"""Photometric training augmentation for synthetic-to-real transfer (``TrainConfig.augment``).

A network trained on rendered faces keys on what every render shares: the same colour balance, sharpness,
noise level and compression. ``transfer`` varies each of those per training crop, so only the geometry of the
face stays informative: colour (brightness, contrast, saturation, per-channel gain, sometimes grey), blur
(Gaussian focus or linear motion), resolution loss (down- then up-sampling), sensor noise and JPEG. Geometric
augmentation (scale, crop) is the training loop's own (``TrainConfig.scales``, the random crop around the face);
the ``transfer`` preset widens the scales. Nothing here changes where a pixel is, so the dense targets are
untouched.

:data:`AUGMENTATIONS` is the registry (``"none"`` leaves the image as it is and draws no random number, so a run
without augmentation is the run it always was).
"""

from __future__ import annotations

import cv2
import numpy as np

from densereg.registry import lookup


def _motion_kernel(rng, length):
    k = np.zeros((length, length), np.float32)
    k[length // 2] = 1.0
    rot = cv2.getRotationMatrix2D(((length - 1) / 2, (length - 1) / 2), float(rng.uniform(0, 180)), 1.0)
    k = cv2.warpAffine(k, rot, (length, length))
    return k / max(float(k.sum()), 1e-6)


def transfer(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random photometric variant of an ``H×W×3`` uint8 RGB crop (same shape and dtype)."""
    img = image.astype(np.float32) / 255
    if rng.random() < 0.8:                                       # colour
        img = img * rng.uniform(0.6, 1.4) + rng.uniform(-0.1, 0.1)          # exposure, offset
        mean = img.mean()
        img = (img - mean) * rng.uniform(0.6, 1.4) + mean                   # contrast
        grey = img.mean(axis=2, keepdims=True)
        img = grey + (img - grey) * rng.uniform(0.4, 1.5)                   # saturation
        img = img * rng.normal(1.0, 0.08, 3).astype(np.float32)             # white balance
    if rng.random() < 0.1:
        img = np.repeat(img.mean(axis=2, keepdims=True), 3, axis=2)
    img = np.clip(img, 0, 1)
    blur = rng.random()
    if blur < 0.15:
        img = cv2.filter2D(img, -1, _motion_kernel(rng, int(rng.integers(3, 8))))
    elif blur < 0.45:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 1.5))
    if rng.random() < 0.2:                                       # resolution loss
        h, w = img.shape[:2]
        f = rng.uniform(0.3, 0.7)
        small = cv2.resize(img, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
        img = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.4:                                       # sensor noise
        img = img + rng.normal(0, rng.uniform(0.005, 0.04), img.shape).astype(np.float32)
    out = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
    if rng.random() < 0.4:                                       # compression
        ok, buf = cv2.imencode(".jpg", out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(25, 95))])
        if ok:
            out = np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])
    return out


AUGMENTATIONS = {"none": None, "transfer": transfer}


def augment(name: str, image: np.ndarray, valid: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``image`` augmented by :data:`AUGMENTATIONS` ``[name]``; padding pixels (``~valid``) stay black."""
    fn = lookup(AUGMENTATIONS, name, "augmentation")
    if fn is None:
        return image
    out = fn(image, rng)
    out[~valid] = 0
    return out
