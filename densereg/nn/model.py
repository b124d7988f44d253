"""The DenseReg network: a dilated ResNet trunk with 1×1 quantised-regression heads, and its losses.

Paper Sec. 3 and 4.1, and the released deploy model (``reference/anchors.md`` §1.2): a ResNet-101 whose
layer3/layer4 are dilated so the output stride is 8, with every head a 1×1 convolution on the last trunk
features. Per UV axis there is a (K+1)-way classifier (class 0 = background, bin q = class q+1) and K
one-dimensional residual regressors, of which only the ground-truth bin's is penalised at a pixel.
Optionally a 1-channel depth regressor (Sec. 4.5).

Three variants come from the same code (``VARIANTS``):

* ``"q+r"``: quantised regression, the paper's method.
* ``"q"``: classification only; a pixel decodes to its bin centre (the ``q`` rows of Fig. 5).
* ``"regression"``: plain regression, i.e. ``"q+r"`` with ``K = 1``. With one bin, the bin is [0, 1], the
  residual *is* u, and the 2-way classifier of each axis is a foreground/background classifier, so the
  paper's "K=1, q+r" row and a plain regressor with a foreground classifier are the same network. Its
  default regression weight is the paper's 70 (40 for quantised models).

Residual parametrisation. The regressors predict the residual **in bin units**, ``t = r/d = u·K - q`` in
[0, 1), and decode ``u = (q + t)/K``. This is what the released model does (its decode is
``u = (q + r - 1)/K`` with 1-based classes) and it is the only reading under which the paper's weights 40
(d = 0.1) and 70 (d = 1) are of comparable size: in UV units the d = 0.1 residual loss would be about 100×
smaller than the d = 1 one. It also keeps the regression targets, head initialisation and smooth-L1
regime (|error| < 1, quadratic) the same for every K, so a weight means the same thing across the K ablation.

Inputs. ``DenseRegNet.forward`` takes RGB images as float tensors in [0, 1] (or uint8 in 0..255),
shaped ``(B, 3, H, W)``, and applies the ImageNet mean/std normalisation itself, because that is what
torchvision-trained trunk weights expect; callers never normalise.
"""

from __future__ import annotations

import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from densereg.nn.backbone import build_backbone, load_backbone_weights
from densereg.nn.fast_decode import decode_cpu
from densereg.nn.quantize import bin_centre, decode_bins, residual_in_bins, uv_to_class

# --------------------------------------------------------------------------------------------------
# DenseReg heads, losses and decode.

VARIANTS = {
    "q+r": "quantised regression: (K+1)-way classifier + K residual regressors per axis (the paper)",
    "q": "classification only: (K+1)-way classifier per axis, decoded to the bin centre",
    "regression": "plain regression = q+r with K=1: a foreground classifier + one regressor of u per axis",
}

# Smooth-L1 weights of the residual terms (paper Sec. 4.1), with residuals in bin units (module docstring).
REG_WEIGHT_QUANTISED = 40.0
REG_WEIGHT_PLAIN = 70.0

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``(B, C, h, w)`` maps to ``size`` (align_corners=False); a no-op at that size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class TrunkNet(nn.Module):
    """A dilated ResNet trunk with ImageNet input normalisation; the base of DenseReg and of DeepLab-v2.

    Args:
        backbone: a key of ``BACKBONES``.
        output_stride: 8 (the paper), 16 or 32.
        width: trunk base width (64 = torchvision-compatible shapes).
        pretrained: optional path to torchvision-named trunk weights (see ``load_backbone_weights``).
        freeze_bn: keep every trunk BatchNorm in inference mode with frozen affine parameters, as the
            DeepLab-v2 trunk is trained (``use_global_stats``); only sensible with pretrained weights.
    """

    def __init__(self, backbone: str, output_stride: int, width: int, pretrained: str | os.PathLike | None,
                 freeze_bn: bool):
        super().__init__()
        self.freeze_bn = freeze_bn
        self.backbone = build_backbone(backbone, output_stride=output_stride, width=width)
        if pretrained is not None:
            load_backbone_weights(self.backbone, pretrained)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        if freeze_bn:
            for m in self.backbone.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.requires_grad_(False)

    @property
    def output_stride(self) -> int:
        return self.backbone.output_stride

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_bn:
            for m in self.backbone.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Trunk features of ``(B, 3, H, W)`` RGB, float in [0, 1] or uint8 (normalised here)."""
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        return self.backbone.features((x - self.mean) / self.std)


class DenseRegNet(TrunkNet):
    """Dilated ResNet trunk + 1×1 DenseReg heads.

    Args:
        backbone: a key of ``BACKBONES``.
        output_stride: 8 (the paper), 16 or 32.
        K: bins per UV axis; ``None`` means 10 (the released model), or 1 for ``"regression"``.
        variant: a key of ``VARIANTS``.
        depth: add the 1-channel depth regressor (Sec. 4.5).
        width: trunk base width (64 = torchvision-compatible shapes).
        pretrained: optional path to torchvision-named trunk weights (see ``load_backbone_weights``).
        reg_weight: weight of each residual smooth-L1 term; ``None`` = 70 when K = 1, else 40.
        depth_weight: weight of the depth smooth-L1 term. The paper gives none; depth in [0, 1] is
            regressed directly like u in the K = 1 model, so it gets that model's weight, 70.
        freeze_bn: keep every trunk BatchNorm in inference mode with frozen affine parameters, as the
            DeepLab-v2 trunk is trained (``use_global_stats``); only sensible with pretrained weights.
    """

    def __init__(self, backbone: str = "resnet101", output_stride: int = 8, K: int | None = None,
                 variant: str = "q+r", depth: bool = False, width: int = 64,
                 pretrained: str | os.PathLike | None = None, reg_weight: float | None = None,
                 depth_weight: float = REG_WEIGHT_PLAIN, freeze_bn: bool = False):
        super().__init__(backbone, output_stride, width, pretrained, freeze_bn)
        if variant not in VARIANTS:
            raise KeyError(f"unknown variant {variant!r}; valid: {', '.join(VARIANTS)}")
        if variant == "regression":
            if K not in (None, 1):
                raise ValueError(f"variant 'regression' is q+r with K=1; got K={K}")
            K = 1
        K = 10 if K is None else K
        if int(K) != K or K < 1:
            raise ValueError(f"K must be a positive integer, got {K!r}")
        self.K, self.variant, self.has_depth = int(K), variant, depth
        self.has_residuals = variant != "q"
        self.reg_weight = float(reg_weight if reg_weight is not None
                                else REG_WEIGHT_PLAIN if self.K == 1 else REG_WEIGHT_QUANTISED)
        self.depth_weight = float(depth_weight)
        c = self.backbone.out_channels
        # Released-model initialisation: N(0, 0.01) for classifiers, N(0, 0.001) for regressors. Regressor
        # biases start at 0.5, the mean of a residual uniform in its bin (and of u, depth), which removes most
        # of the initial regression-loss spike that the paper handles with a low-lr warm start.
        self.cls_u = self._head(c, self.K + 1, std=0.01, bias=0.0)
        self.cls_v = self._head(c, self.K + 1, std=0.01, bias=0.0)
        if self.has_residuals:
            self.res_u = self._head(c, self.K, std=0.001, bias=0.5)
            self.res_v = self._head(c, self.K, std=0.001, bias=0.5)
        if depth:
            self.depth = self._head(c, 1, std=0.001, bias=0.5)

    @staticmethod
    def _head(cin: int, cout: int, std: float, bias: float) -> nn.Conv2d:
        conv = nn.Conv2d(cin, cout, 1)
        nn.init.normal_(conv.weight, std=std)
        nn.init.constant_(conv.bias, bias)
        return conv

    def forward(self, x: torch.Tensor, upsample: bool = True) -> dict[str, torch.Tensor]:
        """Raw head outputs.

        Args:
            x: ``(B, 3, H, W)`` RGB, float in [0, 1] or uint8.
            upsample: resize every map bilinearly to ``H×W`` (the paper's losses are at input scale). With
                False the maps stay at the trunk's stride; ``losses`` and ``decode`` resize them when needed.

        Returns:
            ``logits_u``, ``logits_v``: ``(B, K+1, ., .)``; ``res_u``, ``res_v``: ``(B, K, ., .)`` residuals in
            bin units (absent for variant ``"q"``); ``depth``: ``(B, 1, ., .)`` when enabled.
        """
        feats = self.trunk(x)
        out = {"logits_u": self.cls_u(feats), "logits_v": self.cls_v(feats)}
        if self.has_residuals:
            out["res_u"], out["res_v"] = self.res_u(feats), self.res_v(feats)
        if self.has_depth:
            out["depth"] = self.depth(feats)
        if upsample:
            out = {k: _resize(v, x.shape[-2:]) for k, v in out.items()}
        return out

    def losses(self, outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Weighted loss terms and their sum ``loss``; see ``densereg_losses``."""
        return densereg_losses(outputs, targets, self.K, self.reg_weight, self.depth_weight)

    def decode(self, outputs: dict[str, torch.Tensor], size: tuple[int, int] | None = None) -> dict[str, torch.Tensor]:
        """Per-pixel UV estimate; see the module function ``decode``."""
        return decode(outputs, self.K, size)


def _masked_mean(values: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over ``where``; 0 (still attached to the graph) when ``where`` is empty."""
    where = where.to(values.dtype)
    return (values * where).sum() / where.sum().clamp(min=1.0)


def densereg_losses(outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor], K: int,
                    reg_weight: float, depth_weight: float = REG_WEIGHT_PLAIN) -> dict[str, torch.Tensor]:
    """The DenseReg training losses at the targets' (input) resolution.

    Outputs at another resolution (``forward(upsample=False)``) are first resized bilinearly to the
    targets' size, so the losses are taken at input scale either way (paper Sec. 4.1).

    Terms, for each axis a in {u, v}:

    * ``cls_a``: softmax cross-entropy over the K+1 classes, averaged over the valid pixels
      (background pixels have class 0).
    * ``reg_a``: ``reg_weight`` × smooth-L1 (β = 1) between the GT bin's residual channel and the GT
      residual ``t = u·K - q`` (bin units), averaged over the valid foreground pixels (the paper's
      "normalised by the number of pixels that contribute"). Only when ``res_a`` is present.
    * ``depth``: ``depth_weight`` × smooth-L1 on valid foreground pixels with a finite depth target; only
      when both the output and ``targets["depth"]`` are present.

    Args:
        outputs: the dict of ``DenseRegNet.forward``.
        targets: ``u``, ``v``: ``(B, H, W)`` float, NaN on background; ``mask``: ``(B, H, W)`` bool
            foreground; optional ``valid``: ``(B, H, W)`` bool, False where a pixel must not contribute at
            all (crop padding, faces without annotation); optional ``depth``: ``(B, H, W)`` float.
        K: bins per axis.
        reg_weight: weight of each residual term.
        depth_weight: weight of the depth term.

    Returns:
        The weighted terms and ``loss``, their sum.
    """
    size = tuple(targets["u"].shape[-2:])
    mask = targets["mask"].bool()
    valid = targets.get("valid")
    valid = torch.ones_like(mask) if valid is None else valid.bool()
    terms = {}
    for axis in ("u", "v"):
        uv = targets[axis]
        cls = uv_to_class(uv, K, mask)
        logits = _resize(outputs[f"logits_{axis}"], size)
        terms[f"cls_{axis}"] = _masked_mean(F.cross_entropy(logits, cls, reduction="none"), valid)
        if f"res_{axis}" in outputs:
            fg = (cls > 0) & valid
            q = (cls - 1).clamp(min=0)
            res = _resize(outputs[f"res_{axis}"], size)
            pred = res.gather(1, q.unsqueeze(1)).squeeze(1)
            # GT residual in bin units (eq. 2), zeroed off the foreground.
            t = torch.where(fg, residual_in_bins(uv.to(pred.dtype), q, K), torch.zeros_like(pred))
            err = F.smooth_l1_loss(pred, t, reduction="none", beta=1.0)
            terms[f"reg_{axis}"] = reg_weight * _masked_mean(err, fg)
    if "depth" in outputs and targets.get("depth") is not None:
        z = targets["depth"]
        fg = mask & valid & torch.isfinite(z)
        pred = _resize(outputs["depth"], size)[:, 0]
        err = F.smooth_l1_loss(pred, torch.where(fg, z.to(pred.dtype), torch.zeros_like(pred)),
                               reduction="none", beta=1.0)
        terms["depth"] = depth_weight * _masked_mean(err, fg)
    terms["loss"] = sum(terms.values())
    return terms


@torch.no_grad()
def decode(outputs: dict[str, torch.Tensor], K: int, size: tuple[int, int] | None = None) -> dict[str, torch.Tensor]:
    """Turns raw outputs into a UV field (eq. 3); see :func:`decode_torch` for the rule and the keys.

    CPU tensors go through ``densereg.nn.fast_decode.decode_cpu`` (one compiled pass per pixel, equal up to
    float rounding and about 3× faster there); others through :func:`decode_torch`.
    """
    if all(v.device.type == "cpu" for v in outputs.values()):
        return decode_cpu(outputs, K, size)
    return decode_torch(outputs, K, size)


@torch.no_grad()
def decode_torch(outputs: dict[str, torch.Tensor], K: int, size: tuple[int, int] | None = None) -> dict[str, torch.Tensor]:
    """Turns raw outputs into a UV field (eq. 3), with tensor operations on any device.

    Foreground is decided jointly from both axes: ``fg_prob = 1 - (P_u(class 0) + P_v(class 0)) / 2``,
    foreground where ``fg_prob > 0.5``. The bin of each axis is the argmax over the K bin classes only, so
    every foreground pixel has a bin even when one axis alone would have voted background. For a confident
    net this equals the released decode (background when either axis' argmax is class 0).

    Args:
        outputs: the dict of ``DenseRegNet.forward`` (any resolution).
        K: bins per axis.
        size: ``(H, W)`` to resize the raw maps to before decoding; None keeps their size.

    Returns:
        ``fg_prob`` ``(B, H, W)``; ``mask`` bool foreground; ``u``, ``v``: ``(q + t)/K`` clipped to [0, 1]
        (the bin centre for a ``"q"`` model), NaN on background; ``u_q``, ``v_q``: bin centres only, NaN on
        background (the ``q`` rows of the K ablation); ``depth`` when the model has it, NaN on background.
    """
    size = tuple(size) if size is not None else tuple(outputs["logits_u"].shape[-2:])
    probs = {a: torch.softmax(_resize(outputs[f"logits_{a}"], size).float(), dim=1) for a in ("u", "v")}
    fg_prob = 1.0 - 0.5 * (probs["u"][:, 0] + probs["v"][:, 0])
    mask = fg_prob > 0.5
    nan = torch.tensor(float("nan"), device=fg_prob.device)
    result = {"fg_prob": fg_prob, "mask": mask}
    for a in ("u", "v"):
        q = probs[a][:, 1:].argmax(dim=1)
        centre = bin_centre(q, K).float()
        result[f"{a}_q"] = torch.where(mask, centre, nan)
        if f"res_{a}" in outputs:
            t = _resize(outputs[f"res_{a}"], size).float().gather(1, q.unsqueeze(1)).squeeze(1)
            value = decode_bins(q, t, K).clamp(0.0, 1.0)     # eq. 3
        else:
            value = centre
        result[a] = torch.where(mask, value, nan)
    if "depth" in outputs:
        result["depth"] = torch.where(mask, _resize(outputs["depth"], size)[:, 0].float(), nan)
    return result
