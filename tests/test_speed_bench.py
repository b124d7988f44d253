"""The speed benchmarks' own code runs and records what it measured (tiny sizes; the timings are not tested)."""

import numpy as np
import pytest
import torch

from benchmarks.experiments import int8_check, speed
from densereg.geometry.templates import builtin_face
from densereg.nn.config import TrainConfig
from densereg.readout.predictor import DenseReg


@pytest.fixture(autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_candidates_agree_with_the_eager_path_and_give_rows(monkeypatch):
    monkeypatch.setattr(speed, "cpu_net", lambda seed=0: speed.DenseRegNet(backbone="resnet18", width=8,
                                                                            output_stride=8, K=10).eval())
    rows = speed.run(size=48, rounds=1, repeats=1, with_compile=False)
    inference = {r["candidate"]: r for r in rows if r["figure"] == "inference"}
    assert {"eager", "folded", "folded+channels-last", "folded+channels-last, 1 thread"} <= set(inference)
    assert inference["folded+channels-last, 1 thread"]["threads"] == 1
    for name in ("folded", "folded+channels-last", "jit-freeze"):
        assert float(inference[name]["note"].split()[2].rstrip(";")) < 1e-5, name   # max |duv|
    assert {r["figure"] for r in rows} >= {"inference", "matmul"}


def test_int8_forward_gives_uv_maps_of_the_image_size():
    torch.manual_seed(0)
    net = speed.DenseRegNet(backbone="resnet18", width=8, output_stride=8, K=10).eval()
    model = DenseReg(net, TrainConfig(backbone="resnet18", width=8, K=10, image_scale=0.5), builtin_face())
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (50, 70, 3), dtype=np.uint8) for _ in range(2)]
    forward = int8_check.quantised_forward(model, images)
    maps = forward(images)
    assert len(maps) == 2 and maps[0].u.shape == (50, 70) and maps[0].mask.dtype == bool
