"""The paper preset timed on a GPU machine: inference, a short training run, and DDP on every GPU.

    ./reproduce.sh gpu-bench                     (on a machine with GPUs; rows go to results/speed.csv)
    python -m benchmarks.experiments.gpu_bench --part infer|train [--smoke] [--csv results/speed.csv]
    torchrun --standalone --nproc_per_node N -m benchmarks.experiments.gpu_bench --part train [--csv ...]

``infer``: the ``paper`` preset's network (ResNet-101, output stride 8, K=10) at 300×300, forward + decode as
the library runs it (``densereg.nn.inference.inference_form``), in float32 and bfloat16 autocast, batch 1 and
32: images/s (the paper reports 7–8 frames/s in 2017; issue 16's goal is ≥ 200 images/s on one data-centre
GPU). ``train``: training steps of the paper preset on random 321×321 crops (SGD, the DenseReg losses, bf16
autocast as ``densereg.nn.train`` uses on CUDA): images/s and peak GPU memory; under ``torchrun`` every rank
trains with ``DistributedDataParallel`` and rank 0 reports the total images/s of all GPUs. Data loading is left
out on purpose: this is the network's speed, the ceiling a real run approaches.

``--smoke`` runs a tiny network at 32×32 for a step or two on the CPU, so the script itself is tested without a
GPU (``tests/test_gpu_bench.py``); smoke rows are never written to the CSV.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

from densereg.nn.inference import inference_form
from densereg.nn.model import DenseRegNet

PAPER = dict(backbone="resnet101", width=64, output_stride=8, K=10)
SMOKE = dict(backbone="resnet18", width=8, output_stride=8, K=10)
TARGET_INFER = 200.0       # images/s, paper preset, one data-centre GPU (issue 16)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _device():
    if torch.cuda.is_available():
        return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    return torch.device("cpu")


def _name(device):
    from benchmarks.experiments.speed import device_name

    return f"cuda: {torch.cuda.get_device_name(device)}" if device.type == "cuda" else device_name()


def infer(smoke=False, repeats=20):
    """Rows of inference images/s for fp32/bf16 × batch 1/32 (batch 1/2 and 2 repeats in smoke mode)."""
    device = _device()
    size, batches = (32, (1, 2)) if smoke else (300, (1, 32))
    repeats = 2 if smoke else repeats
    model = inference_form(DenseRegNet(**(SMOKE if smoke else PAPER)).to(device).eval())
    rows = []
    for dtype in ("fp32", "bf16"):
        for batch in batches:
            x = torch.randint(0, 255, (batch, 3, size, size), dtype=torch.uint8, device=device)
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16"):
                for _ in range(2):
                    model.decode(model(x, upsample=False), size=(size, size))
                _sync(device)
                start = time.perf_counter()
                for _ in range(repeats):
                    model.decode(model(x, upsample=False), size=(size, size))
                _sync(device)
            rate = batch * repeats / (time.perf_counter() - start)
            rows.append({"figure": "gpu-infer", "candidate": "paper preset" if not smoke else "smoke",
                         "value": round(rate, 1), "unit": "images/s", "target": TARGET_INFER,
                         "model": "resnet101 OS8 (paper)" if not smoke else "smoke", "size": size, "batch": batch,
                         "dtype": dtype, "threads": torch.get_num_threads(), "load": round(os.getloadavg()[0], 2)})
            print(f"infer {dtype} batch {batch:3d} {size}x{size}: {rate:8.1f} images/s (target >= {TARGET_INFER:g})")
    return rows


def _targets(batch, size, device, K):
    g = torch.Generator(device="cpu").manual_seed(0)
    u, v = torch.rand(batch, size, size, generator=g), torch.rand(batch, size, size, generator=g)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    mask = (xx ** 2 + yy ** 2 < 0.6).expand(batch, size, size)
    nan = torch.tensor(float("nan"))
    return {"u": torch.where(mask, u, nan).to(device), "v": torch.where(mask, v, nan).to(device),
            "mask": mask.to(device)}


def _ddp_wanted():
    """Started by ``torchrun`` with more than one rank."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def train(smoke=False, steps=20, batch=10, crop=321):
    """Rows of training images/s and peak memory; under ``torchrun`` a DDP run over every rank (rank 0 rows)."""
    distributed = _ddp_wanted()
    device = _device()
    if distributed:
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.cuda.reset_peak_memory_stats(device)
    world = torch.distributed.get_world_size() if distributed else 1
    rank = torch.distributed.get_rank() if distributed else 0
    if smoke:
        steps, batch, crop = 1, 2, 32
    torch.manual_seed(rank)
    net = DenseRegNet(**(SMOKE if smoke else PAPER)).to(device).to(memory_format=torch.channels_last).train()
    model = torch.nn.parallel.DistributedDataParallel(
        net, device_ids=[device.index] if device.type == "cuda" else None) if distributed else net
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    x = torch.randint(0, 255, (batch, 3, crop, crop), dtype=torch.uint8, device=device)
    x = x.contiguous(memory_format=torch.channels_last)
    targets = _targets(batch, crop, device, net.K)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            losses = net.losses(model(x, upsample=False), targets)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        optimizer.step()
        assert torch.isfinite(losses["loss"]), "non-finite loss"

    for _ in range(1 if smoke else 2):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    seconds = time.perf_counter() - start
    rate = world * batch * steps / seconds
    memory = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else float("nan")
    rows = []
    if rank == 0:
        what = f"DDP x{world}" if distributed else "1 process"
        rows.append({"figure": "gpu-train", "candidate": ("paper preset" if not smoke else "smoke") + f", {what}",
                     "value": round(rate, 1), "unit": "images/s", "model": "resnet101 OS8 (paper)" if not smoke
                     else "smoke", "size": crop, "batch": batch, "dtype": "bf16 autocast" if device.type == "cuda"
                     else "fp32", "threads": world, "load": round(os.getloadavg()[0], 2),
                     "note": f"peak memory {memory:.1f} GiB per GPU; {steps} steps, random crops, no data loading"})
        print(f"train {what}: {rate:8.1f} images/s ({batch}/GPU, {crop}x{crop}), peak memory {memory:.1f} GiB/GPU")
    if distributed:
        torch.distributed.destroy_process_group()
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.experiments.gpu_bench",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("infer", "train"), required=True)
    parser.add_argument("--smoke", action="store_true", help="tiny network on any device (tests the script)")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps")
    parser.add_argument("--csv", type=Path, default=None, help="append the rows to this CSV (not in smoke mode)")
    args = parser.parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        print("gpu_bench: no CUDA device here; use --smoke to test the script on the CPU", file=sys.stderr)
        return 2
    rows = infer(args.smoke) if args.part == "infer" else train(args.smoke, steps=args.steps)
    if args.csv and rows and not args.smoke:
        from benchmarks.records import append_speed_rows

        append_speed_rows(args.csv, rows, _name(_device()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
