"""The decode of eq. 3 for CPU tensors: one compiled pass per pixel instead of a dozen full-size tensor passes.

``densereg.nn.model.decode`` resizes the raw maps to the image size, takes two softmaxes, two argmaxes over
the channel axis and two gathers; on a CPU each of those walks every pixel once more, and the argmax over the
channel axis of an ``NCHW`` tensor is strided. At 300×300 that cost more than half as much as the whole
``cpu``-preset forward pass. Here the maps are resized by the same ``F.interpolate`` call (channels-last), and a
numba loop then reads each pixel's channels once: background probability of each axis, bin = argmax over the
bin classes, the residual of that bin, foreground probability. The final ``q``/``t`` → UV arithmetic is
``densereg.nn.quantize``'s (the one place of eqs. 2–3).

The result equals ``model.decode``'s up to float rounding: the softmax sums in another order (fg_prob within
~1e-6) and the argmax is over ``exp(l - max)`` rather than over the normalised probabilities, which picks the
same bin except where two bin probabilities tie to the last bit (the first of equal values wins in both).
"""

from __future__ import annotations

import numba
import numpy as np
import torch
import torch.nn.functional as F

from densereg.nn.quantize import bin_centre, decode_bins


@numba.njit(cache=True, nogil=True)
def _per_pixel(maps, n_cls, n_res, fg, q_out, t_out):
    """For ``maps`` ``(B, H, W, C)`` = [logits_u | logits_v | res_u | res_v]: fg prob, bins and residuals.

    ``n_cls`` classes per axis (class 0 = background), ``n_res`` residual channels per axis (0 for a "q"
    model). Writes ``fg (B, H, W)``, ``q_out (2, B, H, W)`` (bin index among the bin classes) and ``t_out``
    (the chosen bin's residual, 0 without residuals).
    """
    B, H, W, _ = maps.shape
    for b in range(B):
        for y in range(H):
            for x in range(W):
                m = maps[b, y, x]
                p0 = np.float32(0.0)
                for a in range(2):
                    off = a * n_cls
                    top = m[off]
                    for c in range(1, n_cls):
                        if m[off + c] > top:
                            top = m[off + c]
                    e0 = np.exp(m[off] - top)
                    total = e0
                    best = np.float32(-1.0)
                    q = 0
                    for c in range(1, n_cls):
                        e = np.exp(m[off + c] - top)
                        total += e
                        if e > best:
                            best = e
                            q = c - 1
                    p0 += e0 / total
                    q_out[a, b, y, x] = q
                    t_out[a, b, y, x] = m[2 * n_cls + a * n_res + q] if n_res > 0 else np.float32(0.0)
                fg[b, y, x] = np.float32(1.0) - np.float32(0.5) * p0


def decode_cpu(outputs: dict[str, torch.Tensor], K: int, size: tuple[int, int] | None = None) -> dict[str, torch.Tensor]:
    """``densereg.nn.model.decode`` for CPU tensors (same arguments, same keys, dtypes and shapes)."""
    size = tuple(size) if size is not None else tuple(outputs["logits_u"].shape[-2:])
    names = [n for n in ("logits_u", "logits_v", "res_u", "res_v", "depth") if n in outputs]
    stacked = torch.cat([outputs[n].float() for n in names], 1).contiguous(memory_format=torch.channels_last)
    if tuple(stacked.shape[-2:]) != size:
        stacked = F.interpolate(stacked, size=size, mode="bilinear", align_corners=False)
    maps = stacked.permute(0, 2, 3, 1).contiguous().numpy()
    n_res = outputs["res_u"].shape[1] if "res_u" in outputs else 0
    B, H, W, _ = maps.shape
    fg = np.empty((B, H, W), np.float32)
    q = np.empty((2, B, H, W), np.int64)
    t = np.empty((2, B, H, W), np.float32)
    _per_pixel(maps, K + 1, n_res, fg, q, t)
    mask = fg > 0.5
    result = {"fg_prob": torch.from_numpy(fg), "mask": torch.from_numpy(mask)}
    for i, a in enumerate(("u", "v")):
        centre = bin_centre(q[i], K).astype(np.float32)
        result[f"{a}_q"] = torch.from_numpy(np.where(mask, centre, np.float32(np.nan)))
        value = np.clip(decode_bins(q[i], t[i], K), 0.0, 1.0) if n_res else centre   # eq. 3
        result[a] = torch.from_numpy(np.where(mask, value, np.float32(np.nan)).astype(np.float32))
    if "depth" in outputs:
        result["depth"] = torch.from_numpy(np.where(mask, maps[..., -1], np.float32(np.nan)))
    return result
