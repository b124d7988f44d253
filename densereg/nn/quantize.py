"""Quantised regression of a UV coordinate: u ↔ (bin, residual) (paper Sec. 3, eq. 2-3).

Each UV axis lies in [0, 1] and is split into ``K`` equal bins of width ``d = 1/K``::

    q = clamp(floor(u / d), 0, K - 1)      # the bin, predicted by a (K+1)-way classifier
    r = u - q * d                          # the residual inside the bin, predicted by the bin's regressor
    u = q * d + r                          # the decode (eq. 3)

The classifier of each axis has ``K + 1`` classes: class 0 is background (as in the released Caffe model)
and bin ``q`` is class ``q + 1``. ``u = 1.0`` falls in the last bin (``q = K - 1``, ``r = d``) rather than in a
bin ``K`` that does not exist.

Every function accepts NumPy arrays or torch tensors and answers in the same kind. Non-finite ``u`` (the NaN
that marks background in UV maps) gives ``q = -1`` and ``r = NaN``, so ``q + 1`` is the background class and
``dequantize`` gives NaN back.

Floating-point note: the bin is computed as ``floor(u * K)`` and the residual as ``u - q / K`` (not
``u / d`` and ``q * d``), because ``K`` is an exact integer: ``0.3 / 0.1`` floors to bin 2 in float64 while
``0.3 * 10`` gives bin 3. A round trip is exact up to one rounding of the final addition.
"""

from __future__ import annotations

import numpy as np
import torch


def _check_k(K: int) -> None:
    if int(K) != K or K < 1:
        raise ValueError(f"K (the number of bins per UV axis) must be a positive integer, got {K!r}")


def _finite(u):
    return torch.isfinite(u) if isinstance(u, torch.Tensor) else np.isfinite(u)


def quantize(u, K: int):
    """Splits UV values into a bin index and the residual inside that bin (eq. 2).

    Args:
        u: UV values along one axis (any shape), nominally in [0, 1]; NaN marks background. Values outside
            [0, 1] are put in the nearest end bin, so their residual lies outside [0, d].
        K: number of bins.

    Returns:
        ``(q, r)``: ``q`` int64 bin indices in ``0..K-1`` (``-1`` where ``u`` is not finite) and ``r`` the
        residual ``u - q/K`` in UV units, same dtype as ``u`` (NaN where ``u`` is not finite).
    """
    _check_k(K)
    finite = _finite(u)
    if isinstance(u, torch.Tensor):
        u = u if u.is_floating_point() else u.double()
        scaled = torch.where(finite, u * K, torch.zeros_like(u))
        q = torch.floor(scaled).clamp(0, K - 1).to(torch.int64)
        q = torch.where(finite, q, torch.full_like(q, -1))
        r = torch.where(finite, u - q.to(u.dtype) / K, torch.full_like(u, float("nan")))
        return q, r
    u = np.asarray(u)
    u = u if np.issubdtype(u.dtype, np.floating) else u.astype(np.float64)
    scaled = np.where(finite, u * K, 0.0)
    q = np.clip(np.floor(scaled), 0, K - 1).astype(np.int64)
    q = np.where(finite, q, -1)
    r = np.where(finite, u - q.astype(u.dtype) / K, np.nan).astype(u.dtype)
    return q, r


def dequantize(q, r, K: int):
    """Rebuilds UV values from bins and residuals (eq. 3): ``u = q/K + r``.

    Args:
        q: bin indices (``-1`` marks background and gives NaN).
        r: residuals in UV units, same shape as ``q``.
        K: number of bins.

    Returns:
        UV values, dtype of ``r``.
    """
    _check_k(K)
    if isinstance(r, torch.Tensor):
        q = torch.as_tensor(q, device=r.device)
        u = q.to(r.dtype) / K + r
        return torch.where(q >= 0, u, torch.full_like(u, float("nan")))
    r = np.asarray(r)
    q = np.asarray(q)
    dtype = r.dtype if np.issubdtype(r.dtype, np.floating) else np.float64
    u = q.astype(dtype) / K + r
    return np.where(q >= 0, u, np.nan).astype(dtype)


def residual_in_bins(u, q, K: int):
    """The residual of ``u`` in bin ``q`` in **bin units**, ``t = u·K − q`` (eq. 2 scaled by ``1/d``).

    The network regresses this (see ``densereg.nn.model``): ``t`` lies in [0, 1] whatever ``K``, so one
    regression weight means the same for every K. Computed as ``u·K − q`` rather than ``r/d`` for precision.
    """
    _check_k(K)
    if isinstance(u, torch.Tensor):
        q = torch.as_tensor(q, device=u.device)
        return u * K - q.to(u.dtype)
    u = np.asarray(u)
    dtype = u.dtype if np.issubdtype(u.dtype, np.floating) else np.float64
    return (u.astype(dtype) * K - np.asarray(q).astype(dtype)).astype(dtype)


def decode_bins(q, t, K: int):
    """Eq. 3 with the residual in bin units: ``u = (q + t)/K`` (``t`` as :func:`residual_in_bins` gives)."""
    _check_k(K)
    if isinstance(t, torch.Tensor):
        q = torch.as_tensor(q, device=t.device)
        return (q.to(t.dtype) + t) / K
    t = np.asarray(t)
    dtype = t.dtype if np.issubdtype(t.dtype, np.floating) else np.float64
    return ((np.asarray(q).astype(dtype) + t) / K).astype(dtype)


def bin_centre(q, K: int):
    """The centre ``(q + 1/2)/K`` of each bin: the decode of a classification-only ("q") model.

    Args:
        q: bin indices (``-1`` gives NaN).
        K: number of bins.

    Returns:
        Float UV values (float64 for NumPy input; the default float dtype for torch input).
    """
    _check_k(K)
    if isinstance(q, torch.Tensor):
        centre = (q.to(torch.get_default_dtype()) + 0.5) / K
        return torch.where(q >= 0, centre, torch.full_like(centre, float("nan")))
    q = np.asarray(q)
    return np.where(q >= 0, (q.astype(np.float64) + 0.5) / K, np.nan)


def uv_to_class(u, K: int, mask=None):
    """Classification targets for one UV axis: 0 = background, bin ``q`` → class ``q + 1``.

    Args:
        u: UV values along one axis; NaN (or any non-finite value) is background.
        K: number of bins.
        mask: optional boolean foreground mask, same shape as ``u``; pixels where it is False are
            background whatever ``u`` holds.

    Returns:
        int64 class map with values in ``0..K``, same shape and kind as ``u``.
    """
    q, _ = quantize(u, K)
    cls = q + 1
    if mask is None:
        return cls
    if isinstance(cls, torch.Tensor):
        mask = torch.as_tensor(mask, device=cls.device).bool()
        return torch.where(mask, cls, torch.zeros_like(cls))
    return np.where(np.asarray(mask, dtype=bool), cls, 0)
