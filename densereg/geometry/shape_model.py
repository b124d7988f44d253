"""A PCA shape model (point distribution model) of 2D landmarks, and its robust reconstruction of a partial shape.

DenseReg refines its landmark read-out "by reconstructing the detected landmarks with a PCA shape model that
is constructed from ground-truth annotations" (paper Sec. 4.3). Training fits one on the training set's
landmarks and stores it in the checkpoint (:meth:`ShapeModel.to_arrays`), so the read-out of a trained model
always uses the shape model of its own training data.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MIN_INLIERS = 6     # the outlier rejection never keeps fewer points than this



def _similarity(src: np.ndarray, dst: np.ndarray, w: np.ndarray):
    """Weighted least-squares similarity ``dst ≈ a·src + t`` on complex points; returns (a, t)."""
    sw = w.sum()
    ms, md = (w * src).sum() / sw, (w * dst).sum() / sw
    s0 = src - ms
    a = (w * np.conj(s0) * (dst - md)).sum() / max((w * np.abs(s0) ** 2).sum(), 1e-300)
    return a, md - a * ms


def _complex(points: np.ndarray) -> np.ndarray:
    return points[..., 0] + 1j * points[..., 1]


@dataclass
class ShapeModel:
    """A point distribution model: mean shape plus PCA modes of similarity-aligned training shapes.

    Attributes:
        mean: (N, 2) mean shape, centred, RMS radius about 1 (the average of the aligned training shapes).
        components: (k, N, 2) orthonormal modes (k may be 0: the mean shape alone).
        variances: (k,) variance of each mode over the training set.
        noise_var: per-coordinate variance left out of the model (mean of the discarded eigenvalues); it sets
            the ridge that keeps coefficients near 0 when few points are observed.
    """

    mean: np.ndarray
    components: np.ndarray
    variances: np.ndarray
    noise_var: float

    @classmethod
    def fit(cls, shapes, n_components: int | None = None, variance: float = 0.999, iterations: int = 20):
        """Generalised Procrustes alignment of ``shapes`` (M, N, 2), then PCA.

        Args:
            n_components: modes kept; None keeps the fewest explaining ``variance`` of the total.
            variance: 0.999 by default: head rotation dominates 2D shape variance (on the synthetic training
                set 98% is explained by 5 modes, which then cannot follow a frontal face's details and makes
                the "refined" shape worse than the read-out); the ridge in :meth:`reconstruct`, not
                truncation, keeps the many modes from overfitting.
        """
        shapes = np.asarray(shapes, dtype=np.float64)
        if shapes.ndim != 3 or shapes.shape[2] != 2 or len(shapes) < 2:
            raise ValueError(f"shapes must be (M >= 2, N, 2), got {shapes.shape}")
        bad = np.flatnonzero(~np.isfinite(shapes).all(axis=(1, 2)))
        if bad.size:
            raise ValueError(f"training shapes {bad[:10].tolist()} have non-finite points")
        z = _complex(shapes)
        z = z - z.mean(axis=1, keepdims=True)
        mean = z[0] / np.sqrt((np.abs(z[0]) ** 2).mean())
        ones = np.ones(z.shape[1])
        for _ in range(iterations):
            aligned = np.stack([a * s + t for s in z for a, t in [_similarity(s, mean, ones)]])
            new = aligned.mean(axis=0)
            new -= new.mean()
            new /= np.sqrt((np.abs(new) ** 2).mean())
            a, _ = _similarity(new, mean, ones)          # keep the gauge (orientation) of the first mean
            new *= a / abs(a)
            done = np.abs(new - mean).max() < 1e-10
            mean = new
            if done:
                break
        x = np.stack([aligned.real, aligned.imag], -1).reshape(len(z), -1)
        mean_flat = x.mean(axis=0)        # the aligned shapes' own average (≈ the unit-size GPA mean)
        mean = mean_flat[0::2] + 1j * mean_flat[1::2]
        _, s, vt = np.linalg.svd(x - mean_flat, full_matrices=False)
        eig = s ** 2 / (len(z) - 1)
        rank = int(np.sum(eig > 1e-12 * max(eig.max(initial=0), 1e-300)))
        if n_components is None:
            cum = np.cumsum(eig) / max(eig.sum(), 1e-300)
            n_components = int(np.searchsorted(cum, variance) + 1) if rank else 0
        k = int(min(n_components, rank))
        d = x.shape[1]
        left = eig[k:].sum() / max(d - k, 1)
        noise = max(left, 1e-10 * eig.sum() / d, 1e-12)
        return cls(mean=np.stack([mean.real, mean.imag], -1), components=vt[:k].reshape(k, -1, 2),
                   variances=eig[:k], noise_var=float(noise))

    @classmethod
    def from_mean(cls, mean_shape):
        """A model with no modes: reconstruction places the mean shape by a similarity (fills gaps)."""
        z = _complex(np.asarray(mean_shape, dtype=np.float64))
        z = z - z.mean()
        z /= np.sqrt((np.abs(z) ** 2).mean())
        return cls(np.stack([z.real, z.imag], -1), np.zeros((0, len(z), 2)), np.zeros(0), 1.0)

    @classmethod
    def from_template(cls, template):
        """The template's landmarks seen frontally (y flipped to image rows), as a mean-only model."""
        pts = np.asarray(template.vertices)[np.asarray(template.landmarks), :2] * [1.0, -1.0]
        return cls.from_mean(pts)

    @property
    def n_components(self) -> int:
        return int(len(self.variances))

    def _fit_observed(self, p: np.ndarray, w: np.ndarray, obs: np.ndarray, iterations: int, noise: float):
        """Similarity and ridge-regularised coefficients fitted jointly to the observed points.

        Minimises ``Σ_obs w·|a·(m + P·c) + t − p|² + |a₀|²·(noise_var + noise²)·Σ c²/λ`` over the
        complex similarity (a, t) and the mode coefficients c (Levenberg-Marquardt: the problem is bilinear, and
        plain alternation or Gauss-Newton steps crawl or overshoot when a profile hides half the shape). ``a₀``
        is the scale of the mean shape placed on the observed points, which fixes the prior's units.
        """
        m, comps = _complex(self.mean), _complex(self.components)          # (N,), (k, N)
        po, wo = p[obs], w[obs]
        a, t = _similarity(m[obs], po, wo)
        k = self.n_components
        if k == 0:
            return a * m + t
        mo, pc = m[obs], comps[:, obs]                                      # (|O|,), (k, |O|)
        ww = np.concatenate([wo, wo])
        prior = abs(a) ** 2 * (self.noise_var + noise ** 2) / np.maximum(self.variances, 1e-300)

        def residual(a, t, c):
            r = a * (mo + c @ pc) + t - po
            return np.concatenate([r.real, r.imag])

        c = np.zeros(k)
        r = residual(a, t, c)
        cost = float(ww @ r ** 2)
        damping = 1e-3
        for _ in range(iterations):
            s = mo + c @ pc
            cols = np.concatenate([np.stack([s, 1j * s, np.ones_like(s), 1j * np.ones_like(s)]), a * pc])
            jac = np.concatenate([cols.real, cols.imag], axis=1).T                   # (2|O|, 4 + k)
            hess = jac.T @ (ww[:, None] * jac)
            hess[4:, 4:] += np.diag(prior)
            grad = jac.T @ (ww * r)
            grad[4:] += prior * c
            improved = False
            for _ in range(10):
                step = np.linalg.solve(hess + damping * np.diag(np.diag(hess) + 1e-12), -grad)
                na, nt, nc = a + step[0] + 1j * step[1], t + step[2] + 1j * step[3], c + step[4:]
                nr = residual(na, nt, nc)
                new = float(ww @ nr ** 2 + prior @ nc ** 2)
                if new <= cost:
                    improved = True
                    break
                damping *= 4.0
            if not improved:
                break
            gain = cost - new
            a, t, c, r, cost = na, nt, nc, nr, new
            damping = max(damping / 3.0, 1e-9)
            if gain <= 1e-12 * max(cost, 1e-300):
                break
        return a * (m + c @ comps) + t

    def reconstruct(self, points, weights=None, iterations: int = 20, outlier_k: float | None = 3.0,
                    keep_observed: bool = False, noise: float = 0.01) -> np.ndarray:
        """The model instance that best explains the observed points; every point is filled.

        Args:
            points: (N, 2) with NaN rows for missing points.
            weights: optional (N,) non-negative confidences of the observed points.
            outlier_k: after a first fit, points whose residual exceeds ``outlier_k`` × the median residual
                (and 3% of the shape's RMS radius) are dropped and the fit repeated; None disables it.
            keep_observed: return the observed points unchanged and fill only the missing ones.
            noise: standard deviation of the observed points' errors, as a fraction of the shape's RMS
                radius (0.01 is about 0.5 px on a 256-pixel synthetic face). With ``noise_var`` it sets the
                ridge: without it a model with many modes would bend the unobserved points wildly to fit
                the observed ones' noise (a profile face hides a third of the shape). 0 for exact data.

        Raises:
            ValueError: wrong shape, or fewer than 3 observed points with positive weight.
        """
        p_in = np.asarray(points, dtype=np.float64)
        if p_in.shape != self.mean.shape:
            raise ValueError(f"points must be {self.mean.shape}, got {p_in.shape}")
        w = np.ones(len(p_in)) if weights is None else np.clip(np.asarray(weights, np.float64), 0, None)
        obs = np.isfinite(p_in).all(axis=1) & (w > 0)
        if obs.sum() < 3:
            raise ValueError(f"shape reconstruction needs at least 3 observed points, got {int(obs.sum())}")
        p = _complex(np.nan_to_num(p_in))
        inliers = obs
        fit = self._fit_observed(p, w, inliers, iterations, noise)
        if outlier_k is not None:
            for _ in range(5):
                # Residuals of every observed point against the current fit: a good point dropped while
                # gross outliers still bent the first fit comes back once they are gone.
                res = np.abs(fit - p)
                radius = np.sqrt((np.abs(fit - fit.mean()) ** 2).mean())
                new = obs & (res <= max(outlier_k * np.median(res[inliers]), 0.03 * radius))
                if new.sum() < MIN_INLIERS or np.array_equal(new, inliers):
                    break
                inliers = new
                fit = self._fit_observed(p, w, inliers, iterations, noise)
        out = np.stack([fit.real, fit.imag], -1)
        if keep_observed:
            seen = np.isfinite(p_in).all(axis=1)
            out[seen] = p_in[seen]
        return out

    def to_arrays(self) -> dict:
        """The model as plain arrays (``mean``, ``components``, ``variances``, ``noise_var``), e.g. for a checkpoint."""
        return {"mean": np.asarray(self.mean, np.float64), "components": np.asarray(self.components, np.float64),
                "variances": np.asarray(self.variances, np.float64), "noise_var": float(self.noise_var)}

    @classmethod
    def from_arrays(cls, data: dict, source: str = "shape model") -> "ShapeModel":
        """The model from :meth:`to_arrays`'s dict (arrays or tensors); ``source`` names it in errors.

        Raises:
            ValueError: a key is missing or the arrays do not fit together.
        """
        try:
            mean, comps, var = (np.asarray(data[k], dtype=np.float64) for k in ("mean", "components", "variances"))
            noise = float(data["noise_var"])
        except KeyError as e:
            raise ValueError(f"{source}: not a ShapeModel, missing {e}") from None
        if mean.ndim != 2 or mean.shape[1] != 2 or comps.shape[1:] != mean.shape or len(var) != len(comps):
            raise ValueError(f"{source}: inconsistent ShapeModel arrays {mean.shape}, {comps.shape}, {var.shape}")
        return cls(mean, comps, var, noise)

    def npz_bytes(self) -> bytes:
        """The model as the bytes of an ``.npz`` file (write them with ``densereg.data.formats.atomic_write_bytes``)."""
        buffer = io.BytesIO()
        arrays = self.to_arrays()
        np.savez(buffer, **{**arrays, "noise_var": np.float64(arrays["noise_var"])})
        return buffer.getvalue()

    @classmethod
    def load(cls, path) -> "ShapeModel":
        """Read a model written as :meth:`npz_bytes`.

        Raises:
            ValueError: the file is not a shape model (names the file and what is missing or malformed).
        """
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as f:
                data = {k: f[k] for k in f.files}
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: cannot read a ShapeModel ({e})") from None
        return cls.from_arrays(data, source=str(path))
