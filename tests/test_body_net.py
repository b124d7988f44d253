"""The body task: partition replaces quantisation (25-way patch classifier + per-patch u, v regressors), trained
by the one training loop through the task registry, and decoded back to patches and UV."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from densereg.data import synth_body
from densereg.nn import body as body_net
from densereg.nn import train
from densereg.nn.config import make_config


def _targets():
    patch = torch.zeros(1, 16, 16, dtype=torch.long)
    patch[0, 4:12, 4:8], patch[0, 4:12, 8:12] = 3, 24
    u = torch.full((1, 16, 16), float("nan"))
    v = torch.full((1, 16, 16), float("nan"))
    u[patch > 0], v[patch > 0] = 0.25, 0.75
    return {"patch": patch, "u": u, "v": v}


def test_loss_penalises_only_the_gt_patch_regressor_and_decode_reads_it():
    """A perfect output (GT patch logits high, GT regressor = GT u, v, every other regressor wrong) has zero
    regression loss and decodes to exactly the GT; moving a non-GT regressor changes nothing."""
    net = body_net.BodyNet(backbone="resnet18", width=8)
    t = _targets()
    logits = torch.full((1, 25, 16, 16), -20.0)
    logits.scatter_(1, t["patch"].unsqueeze(1), 20.0)
    res_u = torch.full((1, 24, 16, 16), 0.9)
    res_v = torch.full((1, 24, 16, 16), 0.1)
    for p in (3, 24):
        res_u[0, p - 1], res_v[0, p - 1] = 0.25, 0.75
    out = {"logits_patch": logits, "res_u": res_u, "res_v": res_v}
    terms = net.losses(out, t)
    assert float(terms["reg_u"]) == 0 and float(terms["reg_v"]) == 0 and float(terms["cls_patch"]) < 1e-6
    dec = net.decode(out)
    assert torch.equal(dec["patch"], t["patch"])
    fg = t["patch"] > 0
    assert torch.allclose(dec["u"][fg], t["u"][fg]) and torch.isnan(dec["u"][~fg]).all()
    res_u[0, 0] = 0.0          # patch 1 is nowhere in the GT
    assert float(net.losses(out, t)["reg_u"]) == 0
    res_u[0, 2] = 0.5          # patch 3 is
    assert float(net.losses(out, t)["reg_u"]) > 0


def test_body_preset_layers_over_the_named_preset():
    cfg = make_config("cpu", task="body")
    assert cfg.task == "body" and cfg.dataset == "synthetic-body" and cfg.backbone == "resnet18"
    assert make_config("cpu").dataset == "300w-lp"            # the face task is untouched
    assert make_config("cpu", task="body", iterations=3).iterations == 3


@pytest.fixture(scope="module")
def tiny_body(tmp_path_factory):
    root = tmp_path_factory.mktemp("bodyset")
    synth_body.generate(root / "set", seed=1, counts={"train": 4, "test": 2}, workers=1)
    return root / "set"


def test_tiny_training_through_the_task_registry_and_checkpoint_reload(tiny_body, tmp_path):
    cfg = make_config("tiny", task="body", root=str(tiny_body), iterations=2)
    batch = body_net.BodyBatches(train.training_samples(cfg), cfg)[0]
    assert batch["image"].shape == (2, 3, 64, 64) and batch["patch"].max() <= 24 and batch["valid"].any()
    last = train.train(cfg, tmp_path / "run", progress=False)
    model, loaded = train.load_model(last)
    assert isinstance(model, body_net.BodyNet) and loaded.task == "body"
    images = [s.image() for s in synth_body.load_body(tiny_body, "test")]
    pred = body_net.predict(model, images)
    assert pred[0]["patch"].shape == images[0].shape[:2] and pred[0]["patch"].max() <= 24
