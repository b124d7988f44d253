"""Network inputs: rescale an image by the model's training scale and pad it to a multiple of the stride.

DenseReg and DeepLab-v2 see identical inputs (Table 1 compares them on the same pixels): the image is resized
by the training config's ``image_scale`` and padded (reflection) to a multiple of the trunk's output stride, so
trunk features stay aligned with pixels; outputs are decoded at the padded size and cropped back.
"""

from __future__ import annotations

import cv2
import numpy as np


def pad_to(image: np.ndarray, multiple: int) -> np.ndarray:
    """``image`` padded at the bottom and right to a multiple of ``multiple`` (reflection; constant if 1 px)."""
    h, w = image.shape[:2]
    ph, pw = -h % multiple, -w % multiple
    if ph == 0 and pw == 0:
        return image
    return cv2.copyMakeBorder(image, 0, ph, 0, pw, cv2.BORDER_REFLECT_101 if min(h, w) > 1 else cv2.BORDER_CONSTANT)


def prepare_image(img: np.ndarray, stride: int, image_scale: float) -> tuple[tuple[int, int], np.ndarray]:
    """Check, rescale by ``image_scale`` and pad an image to a multiple of ``stride``.

    Returns:
        ``((h, w), padded)``: the size after rescaling (the valid part of the padded image) and the image.
    """
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected H×W×3 uint8 RGB, got {img.dtype} {img.shape}")
    if image_scale != 1.0:
        h, w = img.shape[:2]
        img = cv2.resize(img, (max(1, round(w * image_scale)), max(1, round(h * image_scale))),
                         interpolation=cv2.INTER_AREA if image_scale < 1 else cv2.INTER_LINEAR)
    return img.shape[:2], pad_to(img, stride)
