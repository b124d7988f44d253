"""Training: determinism of batches, resume-after-kill equivalence, checkpoint validation, inference."""

import numpy as np
import pytest
import torch

from densereg.readout import forward as infer
from densereg.nn import train


def _cfg(root, **kw):
    return train.make_config("tiny", root=str(root), **kw)


def test_batches_are_a_pure_function_of_the_step(tiny_synth):
    cfg = _cfg(tiny_synth)
    data = train.TrainingBatches(train.training_samples(cfg), cfg)
    a, b = data[1], data[1]
    assert all(torch.equal(a[k], b[k]) for k in a if k not in ("u", "v", "depth"))
    assert torch.equal(torch.nan_to_num(a["u"]), torch.nan_to_num(b["u"]))
    assert a["image"].shape == (cfg.batch_size, 3, cfg.crop, cfg.crop) and a["image"].dtype == torch.uint8
    assert a["mask"].any(), "the crop must contain the face"
    assert not torch.equal(a["image"], data[2]["image"])


def test_resume_after_kill_gives_the_same_weights(tiny_synth, tmp_path):
    cfg = _cfg(tiny_synth)
    straight = train.train(cfg, tmp_path / "a", progress=False)
    train.train(cfg, tmp_path / "b", progress=False, stop_after=1)     # "killed" after one step
    assert torch.load(tmp_path / "b" / "last.pt", weights_only=True)["step"] == 1
    resumed = train.train(cfg, tmp_path / "b", progress=False)
    sa = torch.load(straight, weights_only=True)
    sb = torch.load(resumed, weights_only=True)
    assert sa["step"] == sb["step"] == cfg.iterations
    for k in sa["model"]:
        assert torch.equal(sa["model"][k], sb["model"][k]), k
    log = (tmp_path / "b" / "log.csv").read_text().splitlines()
    assert [int(r.split(",")[0]) for r in log[1:]] == list(range(1, cfg.iterations + 1))


def test_checkpoint_errors_name_the_file(tiny_synth, tmp_path):
    cfg = _cfg(tiny_synth, iterations=1)
    path = train.train(cfg, tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match="another network.*K: checkpoint 10 vs requested 5"):
        train.read_checkpoint(path, {**cfg.resolved(), "K": 5})
    broken = tmp_path / "broken.pt"
    broken.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(ValueError, match="broken.pt: unreadable checkpoint"):
        train.load_model(broken)
    with pytest.raises(ValueError, match="another network"):
        train.train(_cfg(tiny_synth, iterations=2, width=16), tmp_path / "run", progress=False)


def test_samples_without_fittings_cannot_train(tiny_synth):
    from densereg.data import datasets

    samples = datasets.load_dataset("300w", tiny_synth, "train")
    with pytest.raises(ValueError, match="no 3D fitting"):
        train.TrainingBatches(samples, _cfg(tiny_synth))


def test_predict_any_size(tiny_synth, tmp_path):
    path = train.train(_cfg(tiny_synth, iterations=1), tmp_path / "run", progress=False)
    model, cfg = train.load_model(path)
    images = [np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in
              [(37, 53), (64, 64), (37, 53), (81, 40)]]
    maps = infer.predict(model, images, image_scale=cfg.image_scale, batch_size=3)
    for img, m in zip(images, maps):
        assert m.u.shape == img.shape[:2] and m.fg_prob.shape == img.shape[:2]
        assert np.isnan(m.u[~m.mask]).all()
        fu = m.u[m.mask]
        assert ((fu >= 0) & (fu <= 1)).all()
    assert infer.panel(images[1], maps[1]).shape == (64, 64 * 3, 3)


def test_lr_schedule():
    cfg = train.make_config("paper")
    assert train.learning_rate(cfg, 0) == pytest.approx(1e-4)
    assert train.learning_rate(cfg, cfg.warmup_iters) == pytest.approx(1e-3 * (1 - 200 / 20000) ** 0.9)
    assert train.learning_rate(cfg, cfg.iterations - 1) < 1e-6


def test_config_template_and_boolean_flags():
    assert train.make_config("tiny").template == "builtin"
    assert train.make_config("paper").template == "bfm"
    assert train.make_config("paper", template="builtin").template == "builtin"
    parser = __import__("argparse").ArgumentParser()
    from densereg.nn.config import add_config_flags

    add_config_flags(parser)
    assert parser.parse_args(["--depth", "yes"]).depth is True
    assert parser.parse_args(["--depth", "off"]).depth is False
    with pytest.raises(SystemExit):
        parser.parse_args(["--depth", "ye"])
