"""Inference-time form of a trained network: batch norm folded into the convolutions, and the FLOPs it costs.

At inference a BatchNorm is a fixed per-channel affine map ``y = γ·(x − μ)/√(σ² + ε) + β``, so when it
directly follows a convolution it can be folded into that convolution's weights and bias:
``W' = W·s``, ``b' = (b − μ)·s + β`` with ``s = γ/√(σ² + ε)``. The folded network computes the same function up
to float rounding, with one pass over each feature map fewer per convolution; ``densereg.readout.forward``
runs it by default (``benchmarks/experiments/speed.py`` measured it against the other candidates).

:func:`count_flops` counts the multiply-adds of every convolution and linear layer of one forward pass (2 FLOPs
each), the figure against which the machine's measured GFLOP/s says how close the forward is to its limit.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new convolution equal to ``bn(conv(x))`` with ``bn`` in inference mode (its running statistics).

    Raises:
        ValueError: the shapes do not match (``bn`` must have one channel per output channel of ``conv``), or
            ``bn`` tracks no running statistics (then its inference map depends on the batch).
    """
    if bn.num_features != conv.out_channels:
        raise ValueError(f"cannot fold {bn} into {conv}: {bn.num_features} channels vs {conv.out_channels}")
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(f"cannot fold {bn}: it tracks no running statistics")
    with torch.no_grad():
        scale = bn.running_var.double().add(bn.eps).rsqrt()
        if bn.weight is not None:
            scale = scale * bn.weight.double()
        bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
        bias = (bias - bn.running_mean.double()) * scale
        if bn.bias is not None:
            bias = bias + bn.bias.double()
        folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                           conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode,
                           device=conv.weight.device, dtype=conv.weight.dtype)
        shape = (-1,) + (1,) * (conv.weight.dim() - 1)
        folded.weight.copy_((conv.weight.double() * scale.view(shape)).to(conv.weight.dtype))
        folded.bias.copy_(bias.to(conv.weight.dtype))
    return folded


# (convolution attribute, batch-norm attribute) pairs inside one module: the ResNet stem and blocks.
_PAIRS = (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"))


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with every BatchNorm that follows a convolution folded into it.

    Folded pairs: ``convN``/``bnN`` attributes of one module (the ResNet stem and blocks of
    ``densereg.nn.backbone``) and ``Sequential(Conv2d, BatchNorm2d)`` (the downsample branches). Each folded
    BatchNorm is replaced by ``nn.Identity``; anything else is left as it is. ``model`` itself is not changed.
    The copy is for inference only: training it would train the folded weights, not the original parameters.
    """
    folded = copy.deepcopy(model).eval()
    for module in folded.modules():
        for conv_name, bn_name in _PAIRS:
            conv, bn = getattr(module, conv_name, None), getattr(module, bn_name, None)
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                setattr(module, conv_name, fold_conv_bn(conv, bn))
                setattr(module, bn_name, nn.Identity())
        if isinstance(module, nn.Sequential):
            for i in range(len(module) - 1):
                if isinstance(module[i], nn.Conv2d) and isinstance(module[i + 1], nn.BatchNorm2d):
                    module[i] = fold_conv_bn(module[i], module[i + 1])
                    module[i + 1] = nn.Identity()
    return folded


def count_flops(model: nn.Module, *inputs, **kwargs) -> dict[str, int]:
    """FLOPs of one forward pass ``model(*inputs, **kwargs)``: 2 per multiply-add of convolutions and linears.

    Counted from the shapes each layer sees (forward hooks), so dilation, stride and padding are exact; the
    element-wise work (batch norm, ReLU, additions, the decode) is not counted: it is memory-bound, a few per
    cent of the multiply-adds.

    Returns:
        ``{"conv": FLOPs of Conv2d layers, "linear": FLOPs of Linear layers, "total": their sum}``.
    """
    counts = {"conv": 0, "linear": 0}

    def on_conv(module, args, output):
        k = module.weight[0].numel()                 # (cin / groups)·kh·kw multiply-adds per output element
        counts["conv"] += 2 * k * output.numel()

    def on_linear(module, args, output):
        counts["linear"] += 2 * module.in_features * output.numel()

    hooks = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            hooks.append(module.register_forward_hook(on_conv))
        elif isinstance(module, nn.Linear):
            hooks.append(module.register_forward_hook(on_linear))
    try:
        with torch.inference_mode():
            model(*inputs, **kwargs)
    finally:
        for hook in hooks:
            hook.remove()
    return {**counts, "total": counts["conv"] + counts["linear"]}


def _state_key(model: nn.Module) -> tuple:
    """Identifies the current values of a model's tensors: storage and in-place version of each."""
    return tuple((t.data_ptr(), t._version, t.device.type) for t in model.state_dict(keep_vars=True).values())


def inference_form(model: nn.Module) -> nn.Module:
    """The form ``densereg.readout.forward.predict`` runs: BatchNorm folded, weights channels-last, eval mode.

    Built once per set of weights and kept on ``model`` (outside its modules and state dict); any change of a
    weight (an optimiser step, ``load_state_dict``, ``.to(device)``) changes the key and rebuilds it, so it
    never runs stale weights. A model in training mode is not folded (its BatchNorms use batch statistics).
    """
    if model.training:
        return model
    key = _state_key(model)
    cached = model.__dict__.pop("_densereg_inference_form", None)   # never deep-copied into the new form
    if cached is not None and cached[0] == key:
        model.__dict__["_densereg_inference_form"] = cached
        return cached[1]
    form = fold_batchnorm(model).to(memory_format=torch.channels_last)
    model.__dict__["_densereg_inference_form"] = (key, form)
    return form
