"""DenseReg for the human body (paper Sec. 4.6): patch classification + per-patch (u, v) regression.

    python -m densereg.nn.train --task body --preset cpu --out runs/synthetic/body-cpu

"The partitioning replaces the quantisation and the rest of the system remains the same": where the face
network classifies each UV axis into K bins and regresses a residual inside the bin, the body network
classifies each pixel into one of 25 classes (background + the 24 patches of :mod:`densereg.geometry.body`,
as the released ``deployHuman`` model) and regresses (u, v) inside the patch with one regressor pair per patch,
of which only the ground-truth patch's is penalised at a pixel. A patch is a bin, and (u, v) in the patch's
[0, 1]² chart is the residual in bin units, so the heads, initialisation, smooth-L1 loss and its weight (40,
the quantised models') are those of :class:`densereg.nn.model.DenseRegNet`, on the same trunk.

Training data come through the task registry (:data:`densereg.nn.tasks.TASK_DATA`): :func:`training_samples`
(the synthetic body set, generated on first use) and :class:`BodyBatches` (item ``t`` = the whole batch of
step ``t``, a pure function of ``(seed, t, rank)``, like the face batches), so the one training loop of
:mod:`densereg.nn.train` trains it unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from densereg.data import synth_body
from densereg.geometry import body
from densereg.nn.batches import StepBatches
from densereg.nn.model import REG_WEIGHT_QUANTISED, TrunkNet, _masked_mean, _resize


class BodyNet(TrunkNet):
    """Dilated ResNet trunk + 1×1 heads: a ``n_patches + 1``-way patch classifier (class 0 = background) and
    ``n_patches`` regressors each of u and v.

    Args:
        backbone, output_stride, width, pretrained, freeze_bn: as :class:`densereg.nn.model.TrunkNet`.
        n_patches: patches of the body surface (24).
        reg_weight: weight of each smooth-L1 (u, v) term.
    """

    def __init__(self, backbone: str = "resnet101", output_stride: int = 8, width: int = 64,
                 n_patches: int = body.N_PATCHES, pretrained: str | os.PathLike | None = None,
                 freeze_bn: bool = False, reg_weight: float = REG_WEIGHT_QUANTISED):
        super().__init__(backbone, output_stride, width, pretrained, freeze_bn)
        self.n_patches, self.reg_weight = int(n_patches), float(reg_weight)
        c = self.backbone.out_channels
        # The released-model initialisation DenseRegNet uses: N(0, 0.01) classifier, N(0, 0.001) regressors
        # with bias 0.5 (the mean of a coordinate uniform in its chart).
        self.cls_patch = self._head(c, self.n_patches + 1, 0.01, 0.0)
        self.res_u = self._head(c, self.n_patches, 0.001, 0.5)
        self.res_v = self._head(c, self.n_patches, 0.001, 0.5)

    @staticmethod
    def _head(cin: int, cout: int, std: float, bias: float) -> torch.nn.Conv2d:
        conv = torch.nn.Conv2d(cin, cout, 1)
        torch.nn.init.normal_(conv.weight, std=std)
        torch.nn.init.constant_(conv.bias, bias)
        return conv

    def forward(self, x: torch.Tensor, upsample: bool = True) -> dict[str, torch.Tensor]:
        """Raw head outputs: ``logits_patch`` (B, P+1, ., .), ``res_u``, ``res_v`` (B, P, ., .); resized to
        the input's ``H×W`` when ``upsample``. ``x``: (B, 3, H, W) RGB, float in [0, 1] or uint8."""
        feats = self.trunk(x)
        out = {"logits_patch": self.cls_patch(feats), "res_u": self.res_u(feats), "res_v": self.res_v(feats)}
        if upsample:
            out = {k: _resize(v, x.shape[-2:]) for k, v in out.items()}
        return out

    def losses(self, outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``cls_patch``: cross-entropy over the P+1 classes on valid pixels; ``reg_u``, ``reg_v``:
        ``reg_weight`` × smooth-L1 (β = 1) of the GT patch's regressor against the GT coordinate, on valid
        foreground pixels; ``loss``: their sum.

        Args:
            targets: ``patch`` (B, H, W) int64, 0 = background; ``u``, ``v`` (B, H, W) float, NaN on background;
                optional ``valid`` (B, H, W) bool (False on crop padding).
        """
        patch = targets["patch"].long()
        size = tuple(patch.shape[-2:])
        valid = targets.get("valid")
        valid = torch.ones_like(patch, dtype=torch.bool) if valid is None else valid.bool()
        logits = _resize(outputs["logits_patch"], size)
        terms = {"cls_patch": _masked_mean(F.cross_entropy(logits, patch, reduction="none"), valid)}
        fg = (patch > 0) & valid
        q = (patch - 1).clamp(min=0).unsqueeze(1)
        for axis in ("u", "v"):
            pred = _resize(outputs[f"res_{axis}"], size).gather(1, q).squeeze(1)
            t = torch.where(fg, torch.nan_to_num(targets[axis].to(pred.dtype)), torch.zeros_like(pred))
            err = F.smooth_l1_loss(pred, t, reduction="none", beta=1.0)
            terms[f"reg_{axis}"] = self.reg_weight * _masked_mean(err, fg)
        terms["loss"] = sum(terms.values())
        return terms

    @torch.no_grad()
    def decode(self, outputs: dict[str, torch.Tensor], size: tuple[int, int] | None = None) -> dict[str, torch.Tensor]:
        """Per pixel: ``patch`` (B, H, W) int64, the argmax class (0 = background); ``u``, ``v`` the chosen
        patch's regressors clipped to [0, 1], NaN on background; ``fg_prob`` = 1 − P(background)."""
        size = tuple(size) if size is not None else tuple(outputs["logits_patch"].shape[-2:])
        probs = torch.softmax(_resize(outputs["logits_patch"], size).float(), dim=1)
        patch = probs.argmax(dim=1)
        mask = patch > 0
        q = (patch - 1).clamp(min=0).unsqueeze(1)
        nan = torch.tensor(float("nan"), device=probs.device)
        out = {"patch": patch, "mask": mask, "fg_prob": 1.0 - probs[:, 0]}
        for axis in ("u", "v"):
            value = _resize(outputs[f"res_{axis}"], size).float().gather(1, q).squeeze(1).clamp(0.0, 1.0)
            out[axis] = torch.where(mask, value, nan)
        return out


def predict(model: BodyNet, images: list[np.ndarray], batch_size: int = 8,
            image_scale: float = 1.0) -> list[dict[str, np.ndarray]]:
    """``{"patch", "u", "v"}`` per ``H×W×3`` uint8 image, at each image's own size.

    As in training, each image is first resized by ``image_scale`` (the config's), padded to a multiple of
    the output stride and decoded at that size; the maps are cropped and brought back to the image's size by
    nearest neighbour (so no pixel mixes two patches' coordinates).
    """
    model.eval()
    device = next(model.parameters()).device
    stride = model.output_stride
    scaled = [im if image_scale == 1.0 else
              cv2.resize(im, (max(1, round(im.shape[1] * image_scale)), max(1, round(im.shape[0] * image_scale))),
                         interpolation=cv2.INTER_AREA if image_scale < 1 else cv2.INTER_LINEAR) for im in images]
    results = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            chunk = scaled[start:start + batch_size]
            h = max(im.shape[0] for im in chunk)
            w = max(im.shape[1] for im in chunk)
            ph, pw = -(-h // stride) * stride, -(-w // stride) * stride
            x = np.zeros((len(chunk), ph, pw, 3), np.uint8)
            for i, im in enumerate(chunk):
                x[i, :im.shape[0], :im.shape[1]] = im
            x = torch.from_numpy(x).permute(0, 3, 1, 2).to(device)
            dec = model.decode(model(x, upsample=False), size=(ph, pw))
            for i, im in enumerate(chunk):
                hh, ww = im.shape[:2]
                oh, ow = images[start + i].shape[:2]
                maps = {}
                for k in ("patch", "u", "v"):
                    a = dec[k][i, :hh, :ww].cpu().numpy()
                    if (hh, ww) != (oh, ow):
                        a = cv2.resize(a.astype(np.float32), (ow, oh), interpolation=cv2.INTER_NEAREST)
                    maps[k] = a.astype(np.int64) if k == "patch" else a
                results.append(maps)
    return results


# ------------------------------------------------------------------------------------------------ data


def training_samples(cfg) -> list:
    """The body training images: ``cfg.root`` if given, else the synthetic body set (generated on first use)."""
    if cfg.source != "synthetic" and cfg.root is None:
        raise ValueError("body task: training on real data (UP-3D) needs --root pointing at a body set in the "
                         "layout of densereg.data.synth_body; only --source synthetic builds one itself")
    root = Path(cfg.root) if cfg.root is not None else synth_body.ensure_body_synthetic()
    return synth_body.load_body(root, cfg.split)


class BodyBatches(StepBatches):
    """Item ``t`` is the whole batch of step ``t``: images, ``patch``, ``u``, ``v``, ``valid``."""

    def example(self, step: int, slot: int) -> dict[str, np.ndarray]:
        """One example: a random image at a random scale, its GT re-rendered at that scale from the stored
        pose and camera (exact, no resampling across patch seams), and a random crop holding the image centre
        in its central 60% (padding marked invalid)."""
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, step, self.rank, slot])
        sample = self.samples[rng.integers(len(self.samples))]
        scale = cfg.image_scale * float(rng.choice(cfg.scales))
        image = sample.image()
        h, w = image.shape[:2]
        sh, sw = max(1, round(h * scale)), max(1, round(w * scale))
        image = cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        gt = synth_body.render_sample_gt(sample, (sh, sw), (sw / w, sh / h))
        c = cfg.crop
        x0 = int(np.floor(sw / 2 - c * rng.uniform(0.2, 0.8)))
        y0 = int(np.floor(sh / 2 - c * rng.uniform(0.2, 0.8)))
        img_c = np.zeros((c, c, 3), np.uint8)
        patch = np.zeros((c, c), np.int64)
        u = np.full((c, c), np.nan, np.float32)
        v = np.full((c, c), np.nan, np.float32)
        valid = np.zeros((c, c), bool)
        ys, xs = slice(max(y0, 0), min(y0 + c, sh)), slice(max(x0, 0), min(x0 + c, sw))
        yd, xd = slice(ys.start - y0, ys.stop - y0), slice(xs.start - x0, xs.stop - x0)
        img_c[yd, xd] = image[ys, xs]
        patch[yd, xd], u[yd, xd], v[yd, xd] = gt.patch[ys, xs], gt.u[ys, xs], gt.v[ys, xs]
        valid[yd, xd] = True
        return {"image": img_c.transpose(2, 0, 1).copy(), "patch": patch, "u": u, "v": v, "valid": valid}
