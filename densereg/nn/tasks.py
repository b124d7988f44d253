"""What the training loop can train: ``TASKS`` maps a config's ``task`` to the network it builds.

Each network returns a dict of named losses from ``losses(outputs, batch)`` and decodes its own outputs;
``build_model`` is how both training and checkpoint loading turn a config into a network.
"""

from __future__ import annotations

from densereg.nn import body
from densereg.nn.config import TrainConfig
from densereg.nn.deeplab import DeepLabV2
from densereg.nn.model import DenseRegNet


def _build_densereg(cfg: TrainConfig) -> DenseRegNet:
    return DenseRegNet(backbone=cfg.backbone, output_stride=cfg.output_stride, K=cfg.K, variant=cfg.variant,
                       depth=cfg.depth, width=cfg.width, pretrained=cfg.init_weights, freeze_bn=cfg.freeze_bn)


def _build_deeplab(cfg: TrainConfig) -> DeepLabV2:
    # K, variant and depth do not apply: the baseline predicts the 8 template parts directly.
    return DeepLabV2(backbone=cfg.backbone, output_stride=cfg.output_stride, width=cfg.width,
                     pretrained=cfg.init_weights, freeze_bn=cfg.freeze_bn)


def _build_body(cfg: TrainConfig) -> body.BodyNet:
    # K and variant do not apply: the patches replace the quantisation (densereg.nn.body).
    return body.BodyNet(backbone=cfg.backbone, output_stride=cfg.output_stride, width=cfg.width,
                        pretrained=cfg.init_weights, freeze_bn=cfg.freeze_bn)


TASKS = {"densereg": _build_densereg, "deeplab": _build_deeplab, "body": _build_body}

# Tasks whose training data are not the face fittings: task -> (training_samples(cfg), batches(samples, cfg)).
TASK_DATA = {"body": (body.training_samples, body.BodyBatches)}


def build_model(cfg: TrainConfig) -> DenseRegNet | DeepLabV2:
    """The network ``cfg.task`` names, built from ``cfg``'s architecture fields."""
    if cfg.task not in TASKS:   # (registry.lookup sorts the keys; the tests pin this order)
        raise KeyError(f"unknown task {cfg.task!r}; valid: {', '.join(TASKS)}")
    return TASKS[cfg.task](cfg)
