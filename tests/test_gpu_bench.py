"""The GPU benchmark script runs end to end in its CPU smoke mode (the GPU numbers need a GPU machine)."""

import math

import pytest
import torch

from benchmarks.experiments import gpu_bench


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One thread: a tiny network gains nothing from two, and the shared machine's load makes two far slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_smoke_inference_rows():
    rows = gpu_bench.infer(smoke=True)
    assert [(r["dtype"], r["batch"]) for r in rows] == [("fp32", 1), ("fp32", 2), ("bf16", 1), ("bf16", 2)]
    assert all(r["value"] > 0 and r["unit"] == "images/s" for r in rows)


@pytest.mark.slow   # the first backward pass of the session pays oneDNN's set-up: >10 s on the busy machine
def test_smoke_training_steps(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    rows = gpu_bench.train(smoke=True)
    assert len(rows) == 1 and rows[0]["value"] > 0 and "1 process" in rows[0]["candidate"]


@pytest.mark.slow   # as above
def test_smoke_training_under_a_one_rank_process_group(monkeypatch):
    """The DDP path (what torchrun starts on every GPU) on one gloo rank."""
    for k, v in {"WORLD_SIZE": "1", "RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29533"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(gpu_bench, "_ddp_wanted", lambda: True, raising=False)
    rows = gpu_bench.train(smoke=True)
    assert len(rows) == 1 and "DDP x1" in rows[0]["candidate"] and math.isfinite(rows[0]["value"])


def test_cli_refuses_a_full_run_without_a_gpu(capsys):
    assert gpu_bench.main(["--part", "infer"]) == 2
    assert "--smoke" in capsys.readouterr().err
