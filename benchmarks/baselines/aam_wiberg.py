"""The AAM fit's Wiberg inverse-compositional loop, computed at the sampled pixels only.

    python -m benchmarks.experiments.fit_speed --root data/synthetic --aam runs/synthetic/aam.pkl \
        --mdm runs/synthetic/mdm-cpu/mdm.pt      (times it against menpofit's loop, same starts)

menpofit's ``WibergInverseCompositional`` rebuilds the appearance instance ``a = ā + A c`` at every pixel of
every patch at each iteration (150 components × 68 patches × 13² pixels × 2 channels), takes its gradient over
whole patches, and only then keeps the sampled pixels (``sampling`` = 4: 16 of 169 per patch). Both steps are
linear in ``c``, so they commute with keeping the sampled pixels:

* ``a_m = ā_m + A_m c`` (``A_m``: the basis rows of the sampled pixels, which menpofit already holds);
* ``∇a_m = ∇ā_m + (∇A)_m c``, with the gradient of the mean and of every basis image, taken exactly as menpofit
  takes it (``np.gradient`` over each patch), kept at the sampled pixels once, when the fitter is built.

Everything else (patch extraction, steepest-descent images, projection out of the appearance subspace, the
Gauss-Newton step, the stopping rule) is menpofit's. The results equal menpofit's up to floating-point
rounding (the sums run in another order); ``tests/test_aam.py`` checks the fitted shapes against menpofit's loop.
"""

from __future__ import annotations

import functools

import numpy as np

from benchmarks.baselines.menpo import import_menpofit


def patch_gradient(pixels, patch_shape):
    """``np.gradient`` over the two patch axes of ``(..., h, w)`` pixels, as ``(2,) + pixels.shape``: the
    gradient menpofit's patch interface takes (``aam.vectorised_patch_interface``)."""
    d_row, d_col = np.gradient(pixels.reshape((-1,) + tuple(patch_shape)), axis=(1, 2), edge_order=1)
    return np.stack([d_row, d_col]).reshape((2,) + pixels.shape)


@functools.lru_cache(maxsize=None)
def sampled_wiberg():
    """The ``WibergInverseCompositional`` subclass that works at the sampled pixels (see the module)."""
    lk = import_menpofit("aam.algorithm.lk")

    class SampledWibergInverseCompositional(lk.WibergInverseCompositional):
        def _precompute(self):
            super()._precompute()
            interface = self.interface
            shape = self.a_bar.pixels.shape                    # (patches, offsets, channels, h, w)
            mask = interface.gradient_mask                     # index arrays over (2,) + shape
            self.nabla_a_bar_m = patch_gradient(self.a_bar.pixels, interface.patch_shape)[mask]
            basis = self.A.reshape((-1,) + shape)              # (m,) + shape: one basis image per component
            self.nabla_A_m = np.stack([patch_gradient(b, interface.patch_shape)[mask] for b in basis], axis=1)
            self.sd_shape = (2,) + shape[:-2] + (-1,)          # steepest_descent_images' layout of the gradient

        def _jacobian_at(self, c):
            """Steepest-descent images of ``-∇a`` at the sampled pixels (menpofit's product and sum)."""
            nabla = -(self.nabla_a_bar_m + self.nabla_A_m.dot(c)).reshape(self.sd_shape)
            sdi = 0
            for d in nabla[..., None] * self.dW_dp[..., None, None, None, :]:
                sdi += d
            return sdi.reshape((-1, sdi.shape[-1]))

        def run(self, image, initial_shape, gt_shape=None, max_iters=20, return_costs=False,
                map_inference=False):
            if return_costs or map_inference:      # not used by the harness: menpofit's own loop
                return super().run(image, initial_shape, gt_shape, max_iters, return_costs, map_inference)
            self.transform.set_target(initial_shape)
            p_list, shapes = [self.transform.as_vector()], [self.transform.target]
            i_m = self.interface.warp(image).as_vector()[self.interface.i_mask]
            c = self.pinv_A_m.dot(i_m - self.a_bar_m)
            a_m = self.a_bar_m + self.A_m.dot(c)
            c_list = [c]
            e_m = i_m - self.a_bar_m
            k, eps = 0, np.inf
            while k < max_iters and eps > self.eps:
                J_m = self._jacobian_at(c)
                QJ_m = self.project_out(J_m)
                self.dp = self.interface.solve_shape_ml(QJ_m.T.dot(J_m), QJ_m, e_m)
                s_k = self.transform.target.points
                self._update_warp()
                p_list.append(self.transform.as_vector())
                shapes.append(self.transform.target)
                i_m = self.interface.warp(image).as_vector()[self.interface.i_mask]
                c = c + self.pinv_A_m.dot(i_m - a_m + J_m.dot(self.dp))
                a_m = self.a_bar_m + self.A_m.dot(c)
                c_list.append(c)
                e_m = i_m - self.a_bar_m
                eps = np.abs(np.linalg.norm(s_k - self.transform.target.points))
                k += 1
            return self.interface.algorithm_result(image=image, shapes=shapes, shape_parameters=p_list,
                                                   appearance_parameters=c_list, initial_shape=initial_shape,
                                                   costs=None, gt_shape=gt_shape)

    return SampledWibergInverseCompositional
