"""DeepLab-v2: the face-part segmentation baseline of Table 1 (paper Sec. 4.2; Chen et al., TPAMI 2017).

    python -m densereg.nn.train --task deeplab --preset cpu --source synthetic --out runs/synthetic/deeplab-cpu

The paper compares DenseReg's part labels, obtained by looking up the template label at each regressed UV,
with a DeepLab-v2 trained *for* segmentation on the same images. DeepLab-v2 on ResNet-101 is the same dilated
trunk DenseReg uses followed by ASPP: four parallel 3×3 atrous convolutions straight from the last trunk
features to the class scores, at rates 6, 12, 18 and 24, whose outputs are summed (the released
``fc1_*_c0..c3`` layers + ``Eltwise SUM``). Training is per-pixel softmax cross-entropy at input scale.

Rates at other output strides. The rates 6/12/18/24 are in feature pixels at output stride 8, i.e. 48 to 192
input pixels. At stride ``s`` the same field of view needs rates ``r·8/s``; we use ``max(1, round(r·8/s))``,
which gives 3/6/9/12 at stride 16 and 2/3/4/6 at stride 32 (the latter only approximately the same view).

The class-0 convention is the project's (``densereg/__init__.py``): "other" covers every pixel outside the
seven parts, background included, so the network has no separate background class — exactly the label set of
Table 1.
"""

from __future__ import annotations

import os

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from densereg.nn.inputs import prepare_image
from densereg.nn.model import TrunkNet, _masked_mean, _resize
from densereg.geometry.template import PARTS

ASPP_RATES_OS8 = (6, 12, 18, 24)


def aspp_rates(output_stride: int) -> tuple[int, ...]:
    """The ASPP dilation rates at ``output_stride``: DeepLab-v2's 6/12/18/24 at stride 8, scaled by 8/stride."""
    return tuple(max(1, round(r * 8 / output_stride)) for r in ASPP_RATES_OS8)


class DeepLabV2(TrunkNet):
    """Dilated ResNet trunk + DeepLab-v2 ASPP head (four summed 3×3 atrous branches → class scores).

    Args:
        backbone: a key of ``densereg.nn.backbone.BACKBONES`` (the paper: ``resnet101``, as for DenseReg).
        output_stride: 8 (DeepLab-v2 and the paper), 16 or 32; the ASPP rates follow (``aspp_rates``).
        width: trunk base width (64 = torchvision-compatible shapes).
        n_classes: output classes; 8 = ``template.PARTS`` (class 0 "other" includes background).
        pretrained: optional path to torchvision-named trunk weights (see ``densereg.nn.backbone.load_backbone_weights``).
        freeze_bn: keep the trunk's BatchNorms in inference mode with frozen affine parameters, as DeepLab-v2
            trains (``use_global_stats``); only sensible with pretrained weights.
    """

    def __init__(self, backbone: str = "resnet101", output_stride: int = 8, width: int = 64,
                 n_classes: int = len(PARTS), pretrained: str | os.PathLike | None = None,
                 freeze_bn: bool = False):
        if n_classes < 2:
            raise ValueError(f"n_classes must be at least 2, got {n_classes}")
        super().__init__(backbone, output_stride, width, pretrained, freeze_bn)
        self.n_classes = int(n_classes)
        self.rates = aspp_rates(output_stride)
        c = self.backbone.out_channels
        self.aspp = nn.ModuleList(nn.Conv2d(c, self.n_classes, 3, padding=r, dilation=r) for r in self.rates)
        for conv in self.aspp:   # DeepLab-v2's released initialisation of the ASPP layers
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor, upsample: bool = True) -> dict[str, torch.Tensor]:
        """Class scores per pixel.

        Args:
            x: ``(B, 3, H, W)`` RGB, float in [0, 1] or uint8 (ImageNet normalisation is applied here).
            upsample: resize the scores bilinearly to ``H×W``; False keeps the trunk's stride.

        Returns:
            ``logits_parts``: ``(B, n_classes, ., .)``, the sum of the four ASPP branches.
        """
        feats = self.trunk(x)
        logits = sum(branch(feats) for branch in self.aspp)
        if upsample:
            logits = _resize(logits, x.shape[-2:])
        return {"logits_parts": logits}

    def losses(self, outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-pixel softmax cross-entropy at the targets' (input) scale.

        Args:
            outputs: the dict of ``forward`` (any resolution; resized bilinearly to the targets' size, so the
                loss is back-propagated through the interpolation as in DeepLab-v2 and DenseReg).
            targets: ``parts``: ``(B, H, W)`` int64 class ids (0 = other, background included); optional
                ``valid``: ``(B, H, W)`` bool, False where a pixel must not contribute (crop padding).

        Returns:
            ``cls_parts``: cross-entropy averaged over the valid pixels, and ``loss`` (the same value).
        """
        labels = targets["parts"].long()
        valid = targets.get("valid")
        valid = torch.ones_like(labels, dtype=torch.bool) if valid is None else valid.bool()
        logits = _resize(outputs["logits_parts"], tuple(labels.shape[-2:]))
        cls = _masked_mean(F.cross_entropy(logits, labels, reduction="none"), valid)
        return {"cls_parts": cls, "loss": cls}

    @torch.no_grad()
    def decode(self, outputs: dict[str, torch.Tensor], size: tuple[int, int] | None = None) -> dict[str, torch.Tensor]:
        """Per-pixel labels: the argmax of the scores resized bilinearly to ``size`` (default: their own size).

        Returns:
            ``parts``: ``(B, H, W)`` int64 class ids; ``probs``: ``(B, n_classes, H, W)`` softmax.
        """
        logits = outputs["logits_parts"]
        logits = _resize(logits, tuple(size) if size is not None else tuple(logits.shape[-2:])).float()
        probs = torch.softmax(logits, dim=1)
        return {"parts": probs.argmax(dim=1), "probs": probs}


def predict_parts(model: DeepLabV2, images, batch_size: int = 8, image_scale: float = 1.0,
                  device=None) -> list[np.ndarray]:
    """Part labels for a list of ``H×W×3`` uint8 RGB images (any sizes), at each image's resolution.

    The same pre-processing as ``densereg.readout.forward.predict`` for DenseReg, so the two methods of Table 1 see identical
    inputs: resize by ``image_scale`` (the training config's), pad to a multiple of the output stride, decode
    at the padded size, crop, and resize the labels back with nearest-neighbour interpolation.

    Returns:
        One ``H×W`` uint8 label image per input image (a single array when given a single image).
    """
    single = isinstance(images, np.ndarray) and images.ndim == 3
    images = [images] if single else list(images)
    model.eval()
    device = device or next(model.parameters()).device
    prepared = [prepare_image(img, model.output_stride, image_scale) for img in images]
    results: list[np.ndarray | None] = [None] * len(images)
    groups: dict[tuple, list[int]] = {}       # images of equal padded size share a forward pass
    for i, (_, padded) in enumerate(prepared):
        groups.setdefault(padded.shape[:2], []).append(i)
    with torch.inference_mode():
        for shape, members in groups.items():
            for start in range(0, len(members), batch_size):
                idx = members[start:start + batch_size]
                x = torch.from_numpy(np.stack([prepared[i][1] for i in idx])).permute(0, 3, 1, 2).to(device)
                labels = model.decode(model(x, upsample=False), size=shape)["parts"].to(torch.uint8).cpu().numpy()
                for j, i in enumerate(idx):
                    (h, w), (h0, w0) = prepared[i][0], images[i].shape[:2]
                    out = np.ascontiguousarray(labels[j, :h, :w])
                    if out.shape != (h0, w0):
                        out = cv2.resize(out, (w0, h0), interpolation=cv2.INTER_NEAREST)
                    results[i] = out
    return results[0] if single else results
