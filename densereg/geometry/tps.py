"""Thin-plate splines: the smoothest 2D deformation that takes given points exactly onto given targets.

The paper has no 3D ear model, so it brings ear images into dense correspondence with thin-plate splines on
their landmarks (Sec. 4.7): the spline that maps an ear's landmarks onto a reference ear carries every other
pixel of the ear along, smoothly. :class:`ThinPlateSpline` is that map; what an "ear region" and the
reference ear are lives in :mod:`densereg.geometry.ear`.

A spline ``f: R² → R²`` is ``f(p) = A·[1, p] + Σ_i w_i U(|p − c_i|)`` with the radial kernel
``U(r) = r² log r²``: an affine part plus a bending part that minimises the bending energy
``∬ |∂²f|² dx dy`` among all interpolants (Bookstein 1989). With ``regularization = 0`` it interpolates
(``f(c_i) = t_i`` up to round-off); a positive value trades exactness for less bending.

Numerics: control points are centred and scaled to unit RMS radius before the system is solved, so the solve
does not depend on pixel units (a 2000-px image and a [0, 1] template condition equally well).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _kernel(d2: np.ndarray) -> np.ndarray:
    """``U = r² log r²`` from squared distances ``d2`` (0 at r = 0, its limit)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = d2 * np.log(d2)
    out[d2 <= 0] = 0.0
    return out


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)


@dataclass(frozen=True)
class ThinPlateSpline:
    """A fitted 2D thin-plate spline (build it with :meth:`fit`; map points by calling it).

    Attributes:
        controls: (N, 2) control points in normalised coordinates (``(p − centre) / scale``).
        weights: (N, 2) bending weights.
        affine: (3, 2) affine part acting on ``[1, x, y]`` (normalised coordinates).
        centre, scale: the normalisation of the source frame.
    """

    controls: np.ndarray
    weights: np.ndarray
    affine: np.ndarray
    centre: np.ndarray
    scale: float

    @classmethod
    def fit(cls, source, target, regularization: float = 0.0) -> "ThinPlateSpline":
        """The spline taking ``source`` (N, 2) onto ``target`` (N, 2).

        Raises:
            ValueError: shapes differ, fewer than 3 points, non-finite values, or the points are collinear or
                repeated (the affine part is then undetermined); the message says which.
        """
        src, dst = np.asarray(source, np.float64), np.asarray(target, np.float64)
        if src.ndim != 2 or src.shape[1] != 2 or src.shape != dst.shape:
            raise ValueError(f"thin-plate spline needs two (N, 2) point sets of equal shape, got {src.shape} and "
                             f"{dst.shape}")
        if len(src) < 3:
            raise ValueError(f"thin-plate spline needs at least 3 points, got {len(src)}")
        if not (np.isfinite(src).all() and np.isfinite(dst).all()):
            raise ValueError("thin-plate spline points must be finite (a landmark is NaN or infinite)")
        centre = src.mean(0)
        scale = float(np.sqrt(((src - centre) ** 2).sum(1).mean()))
        if scale <= 0:
            raise ValueError("thin-plate spline source points all coincide")
        c = (src - centre) / scale
        n = len(c)
        P = np.concatenate([np.ones((n, 1)), c], axis=1)
        if np.linalg.matrix_rank(P, tol=1e-9) < 3:
            raise ValueError("thin-plate spline source points are collinear: the affine part is undetermined")
        L = np.zeros((n + 3, n + 3))
        L[:n, :n] = _kernel(_squared_distances(c, c)) + regularization * np.eye(n)
        L[:n, n:], L[n:, :n] = P, P.T
        rhs = np.zeros((n + 3, 2))
        rhs[:n] = dst
        try:
            sol = np.linalg.solve(L, rhs)
        except np.linalg.LinAlgError as exc:
            raise ValueError(f"thin-plate spline system is singular (repeated source points?): {exc}") from None
        return cls(controls=c, weights=sol[:n], affine=sol[n:], centre=centre, scale=scale)

    def __call__(self, points) -> np.ndarray:
        """Map ``points`` (M, 2) (or any ``(..., 2)``) through the spline; returns the same shape."""
        p = np.asarray(points, np.float64)
        flat = ((p.reshape(-1, 2) - self.centre) / self.scale)
        out = np.empty_like(flat)
        for start in range(0, len(flat), 65536):      # bounded memory: (chunk × N) kernel at a time
            q = flat[start:start + 65536]
            K = _kernel(_squared_distances(q, self.controls))
            out[start:start + 65536] = self.affine[0] + q @ self.affine[1:] + K @ self.weights
        return out.reshape(p.shape)

    def map_grid(self, height: int, width: int, mask=None) -> tuple[np.ndarray, np.ndarray]:
        """The spline at every pixel centre of an ``height×width`` grid (pixel (row i, col j) is ``(x=j, y=i)``).

        Args:
            mask: optional (H, W) bool; only those pixels are mapped, the others are NaN.

        Returns:
            ``(fx, fy)``: two (H, W) float arrays.
        """
        fx = np.full((height, width), np.nan)
        fy = np.full((height, width), np.nan)
        where = np.ones((height, width), bool) if mask is None else np.asarray(mask, bool)
        if where.shape != (height, width):
            raise ValueError(f"mask shape {where.shape} is not the grid's {(height, width)}")
        rows, cols = np.nonzero(where)
        mapped = self(np.stack([cols, rows], axis=1).astype(np.float64))
        fx[rows, cols], fy[rows, cols] = mapped[:, 0], mapped[:, 1]
        return fx, fy

    def bending_energy(self) -> float:
        """``trace(Wᵀ K W)`` of the normalised frame: 0 exactly when the spline is affine."""
        K = _kernel(_squared_distances(self.controls, self.controls))
        return float(np.trace(self.weights.T @ K @ self.weights))
