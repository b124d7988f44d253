"""Checkpoints (save / validate / load) and the training-data fingerprint they carry."""

import shutil

import numpy as np
import pytest
import torch

from densereg.data import datasets
from densereg.data.fingerprint import fingerprint
from densereg.nn import checkpoint, train


def test_fingerprint_follows_file_contents_not_order(tiny_synth, tmp_path):
    samples = datasets.load_dataset("300w-lp", tiny_synth, "train")
    fp = fingerprint(samples)
    assert len(fp) == 64 and fp == fingerprint(list(reversed(samples)))
    assert fp != fingerprint(samples[:-1])
    copy = tmp_path / "copy"
    shutil.copytree(tiny_synth, copy)
    copied = datasets.load_dataset("300w-lp", copy, "train")
    assert fingerprint(copied) == fp, "a copy of the same data is the same data"
    image = copied[0].image_path
    data = bytearray(image.read_bytes())
    data[-10] ^= 0xFF
    image.write_bytes(bytes(data))
    assert fingerprint(copied) != fp


def _cfg(root, **kw):
    return train.make_config("tiny", root=str(root), **kw)


def test_checkpoint_carries_config_template_data_and_shape_model(tiny_synth, tmp_path):
    cfg = _cfg(tiny_synth, iterations=2)
    path = train.train(cfg, tmp_path / "run", progress=False)
    state = checkpoint.read_checkpoint(path)
    assert state["config"]["template"] == "builtin" and state["config"]["seed"] == 0
    samples = train.training_samples(cfg)
    assert state["data_fingerprint"] == fingerprint(samples)
    pca = checkpoint.checkpoint_shape_model(state, path)
    assert pca is not None and pca.mean.shape == (68, 2)
    net, loaded = checkpoint.load_model(path)
    assert loaded == train.TrainConfig.from_dict(state["config"]) and not net.training
    assert sorted(p.name for p in path.parent.iterdir()) == ["config.json", "last.pt", "log.csv"]


def test_resume_refuses_another_training_config(tiny_synth, tmp_path):
    cfg = _cfg(tiny_synth, iterations=2)
    train.train(cfg, tmp_path / "run", progress=False, stop_after=1)
    with pytest.raises(ValueError, match=r"another training config \(seed: checkpoint 0 vs requested 3\).*--fresh"):
        train.train(_cfg(tiny_synth, iterations=2, seed=3), tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match="base_lr: checkpoint 0.001 vs requested 0.01"):
        train.train(_cfg(tiny_synth, iterations=2, base_lr=0.01), tmp_path / "run", progress=False)
    # bookkeeping fields may change; --fresh starts again with the new config
    train.train(_cfg(tiny_synth, iterations=2, log_every=2), tmp_path / "run", progress=False)
    path = train.train(_cfg(tiny_synth, iterations=2, seed=3), tmp_path / "run", progress=False, fresh=True)
    assert checkpoint.read_checkpoint(path)["config"]["seed"] == 3


def test_read_checkpoint_rejects_damage_and_other_kinds(tmp_path):
    path = checkpoint.save_checkpoint(tmp_path / "a.pt", {"config": {"K": 3}, "model": {}}, kind="mdm-1")
    assert checkpoint.read_checkpoint(path, kind="mdm-1", expect={"K": 3})["config"] == {"K": 3}
    with pytest.raises(ValueError, match="a.pt: not a densereg-checkpoint-1 file"):
        checkpoint.read_checkpoint(path)
    with pytest.raises(ValueError, match="a.pt: checkpoint made with another network"):
        checkpoint.read_checkpoint(path, kind="mdm-1", expect={"K": 4})
    torch.save({"format": "x", "evil": np.float64(1.0)}, tmp_path / "b.pt")
    with pytest.raises(ValueError, match="b.pt: unreadable"):       # weights_only refuses numpy objects
        checkpoint.read_checkpoint(tmp_path / "b.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        checkpoint.read_checkpoint(tmp_path / "missing.pt")
