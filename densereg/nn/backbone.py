"""Dilated ResNet backbones whose parameter names and shapes are torchvision's (the DenseReg/DeepLab-v2 trunk).

The paper's trunk is DeepLab-v2's ResNet-101 with layer3/layer4 dilated so the output stride is 8. The
``state_dict`` names (``conv1``, ``bn1``, ``layer1..4``, ``downsample.0/.1``, ``fc``) match torchvision's at
``width=64``, so ImageNet/COCO weights published for torchvision load directly (:func:`load_backbone_weights`);
smaller ``width`` values give the narrow trunks of the CPU presets.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn

from densereg.registry import lookup




def _conv3x3(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False)


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with a skip (ResNet-18/34). Unlike torchvision's, it accepts dilation > 1."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 dilation: int = 1):
        super().__init__()
        self.conv1 = _conv3x3(cin, planes, stride, dilation)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, 1, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + skip)


class Bottleneck(nn.Module):
    """1×1 → 3×3 (strided, dilated) → 1×1 with a skip (ResNet-50/101), torchvision's "v1.5" layout."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 dilation: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + skip)


# Which of layer2/3/4 trade their stride for dilation, per output stride (DeepLab-v2 at 8).
_DILATE = {32: (False, False, False), 16: (False, False, True), 8: (False, True, True)}


class ResNet(nn.Module):
    """A ResNet trunk whose ``state_dict`` names and shapes match torchvision's at ``width=64``.

    Args:
        block: ``BasicBlock`` or ``Bottleneck``.
        layers: blocks per stage, e.g. ``(2, 2, 2, 2)`` for ResNet-18.
        output_stride: 8, 16 or 32; the last stages replace their stride 2 by dilation, as in
            torchvision's ``replace_stride_with_dilation`` (OS8: layer3 dilation 2, layer4 dilation 4; the
            first block of a dilated stage keeps the previous dilation).
        width: channels of the stem and of the first stage (torchvision: 64); the stages have
            ``width·(1, 2, 4, 8)`` planes. Dilation never changes parameter shapes.
        num_classes: when given, adds ``avgpool`` + ``fc`` so a full torchvision classifier state dict
            loads strictly; DenseReg uses ``None`` (trunk only).
    """

    def __init__(self, block: type[nn.Module], layers: tuple[int, ...], output_stride: int = 32,
                 width: int = 64, num_classes: int | None = None):
        super().__init__()
        if output_stride not in _DILATE:
            raise ValueError(f"output_stride must be one of {sorted(_DILATE)}, got {output_stride}")
        self.output_stride = output_stride
        self._cin, self._dilation = width, 1
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        dilate = _DILATE[output_stride]
        self.layer1 = self._make_stage(block, width, layers[0], 1, False)
        self.layer2 = self._make_stage(block, width * 2, layers[1], 2, dilate[0])
        self.layer3 = self._make_stage(block, width * 4, layers[2], 2, dilate[1])
        self.layer4 = self._make_stage(block, width * 8, layers[3], 2, dilate[2])
        self.out_channels = width * 8 * block.expansion
        if num_classes is not None:
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(self.out_channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_stage(self, block, planes: int, blocks: int, stride: int, dilate: bool) -> nn.Sequential:
        previous = self._dilation
        if dilate:
            self._dilation *= stride
            stride = 1
        downsample = None
        if stride != 1 or self._cin != planes * block.expansion:
            downsample = nn.Sequential(nn.Conv2d(self._cin, planes * block.expansion, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes * block.expansion))
        stage = [block(self._cin, planes, stride, downsample, previous)]
        self._cin = planes * block.expansion
        stage += [block(self._cin, planes, dilation=self._dilation) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The trunk: stride ``output_stride`` features with ``out_channels`` channels."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.features(x)
        if not hasattr(self, "fc"):
            return feats
        return self.fc(torch.flatten(self.avgpool(feats), 1))


def resnet18(**kw) -> ResNet:
    return ResNet(BasicBlock, (2, 2, 2, 2), **kw)


def resnet34(**kw) -> ResNet:
    return ResNet(BasicBlock, (3, 4, 6, 3), **kw)


def resnet50(**kw) -> ResNet:
    return ResNet(Bottleneck, (3, 4, 6, 3), **kw)


def resnet101(**kw) -> ResNet:
    return ResNet(Bottleneck, (3, 4, 23, 3), **kw)


BACKBONES = {"resnet18": resnet18, "resnet34": resnet34, "resnet50": resnet50, "resnet101": resnet101}


def build_backbone(name: str, **kw) -> ResNet:
    """Builds ``BACKBONES[name](**kw)``, naming the valid names when ``name`` is unknown."""
    return lookup(BACKBONES, name, "backbone")(**kw)


def load_backbone_weights(model: nn.Module, path: str | os.PathLike) -> int:
    """Loads a torchvision-named ResNet state dict (e.g. ImageNet weights) into a trunk.

    ``fc.*`` entries of the file are ignored (DenseReg has no classifier); every other tensor must match
    the trunk's names and shapes exactly.

    Args:
        model: a ``ResNet``, or a ``DenseRegNet`` (its ``backbone`` is loaded).
        path: a file written by ``torch.save(state_dict)``; read with ``weights_only=True``.

    Returns:
        The number of tensors loaded.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a state dict, or its keys or shapes differ from the trunk's; the
            message names the file and lists the missing, unexpected and mis-shaped keys.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights file not found: {path}")
    trunk = model.backbone if hasattr(model, "backbone") else model
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a state dict (name → tensor), got {type(state).__name__}")
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    own = {k: v for k, v in trunk.state_dict().items() if not k.startswith("fc.")}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    misshaped = [f"{k} (file {tuple(state[k].shape)}, model {tuple(own[k].shape)})"
                 for k in sorted(set(own) & set(state)) if state[k].shape != own[k].shape]
    if missing or unexpected or misshaped:
        def show(keys):
            return ", ".join(keys[:8]) + (f", … ({len(keys)} in all)" if len(keys) > 8 else "") or "none"
        raise ValueError(f"{path} does not match the {type(trunk).__name__} trunk "
                         f"(width {trunk.conv1.out_channels}): missing keys: {show(missing)}; "
                         f"unexpected keys: {show(unexpected)}; mis-shaped keys: {show(misshaped)}")
    trunk.load_state_dict(state, strict=False)  # strict in effect: keys were checked above, fc is absent
    return len(state)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
