"""Inference speed of the ``cpu`` preset: the candidate execution paths side by side, and the machine's limit.

    python -m benchmarks.experiments.speed [--size 300] [--rounds 5] [--repeats 3] [--no-compile] [--no-raster]
        [--csv results/speed.csv]

Every candidate computes the same forward + decode at ``size×size``, batch 1, on one untrained ``cpu``-preset
network (the speed does not depend on the weights; BatchNorm statistics are randomised so folding is not
trivially exact). The machine this was written on is shared, so timings are interleaved: each round times
every candidate in turn, and a candidate's speed-up is the median over rounds of its time divided by the
baseline's in the *same* round. The load average (``/proc/loadavg``) is printed and recorded with each figure.

Candidates (``CANDIDATES``): ``eager`` (the path before this work: plain network, tensor decode), ``fast
decode`` (``densereg.nn.fast_decode``), ``folded`` (+ BatchNorm folded, ``densereg.nn.inference``; the
library's default), ``folded+channels-last``, ``jit-freeze`` (TorchScript trace + freeze +
``optimize_for_inference``: oneDNN fusion), ``compile`` (``torch.compile``, inductor), ``onnxruntime`` (only
when the package can be imported: it is not a dependency) and ``bf16`` (CPU autocast; not within float
tolerance, shown for reference); the library's path and ONNX Runtime also on one thread. Each candidate's largest difference in ``u``/``v`` from the eager path is
printed beside its speed. Int8 quantisation is measured separately (``--int8``) because it needs a trained
checkpoint to state its read-out error.

Also stated: the preset's FLOPs per image (``densereg.nn.inference.count_flops``) and the machine's measured
float32 matmul GFLOP/s, so the achieved fraction of the machine's practical limit is on record, and (unless
``--no-raster``) the ground-truth rasteriser's renders/s.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from densereg.nn.inference import count_flops, fold_batchnorm
from densereg.nn.model import DenseRegNet, decode_torch

TARGET_IMAGES_PER_S = 20.0          # issue 16: the cpu preset at 300×300, batch 1, on the 2-core machine


def load_average() -> float:
    """The 1-minute load average (how busy the shared machine was while a figure was measured)."""
    return round(os.getloadavg()[0], 2)


def device_name() -> str:
    if torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name()}"
    return f"cpu: {platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def cpu_net(seed: int = 0, **overrides) -> DenseRegNet:
    """The ``cpu`` preset's network (resnet18, width 32, OS8, K=10) with randomised BatchNorm statistics."""
    from densereg.nn.config import PRESETS

    p = {**PRESETS["cpu"], **overrides}
    torch.manual_seed(seed)
    net = DenseRegNet(backbone=p["backbone"], width=p["width"], output_stride=p["output_stride"], K=10).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)
    return net


class _Heads(torch.nn.Module):
    """The network with a tuple output (what tracing and ONNX export need)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        out = self.net(x, upsample=False)
        return out["logits_u"], out["logits_v"], out["res_u"], out["res_v"]


def _as_dict(outputs) -> dict:
    return dict(zip(("logits_u", "logits_v", "res_u", "res_v"), outputs))


def candidates(net: DenseRegNet, x: torch.Tensor, with_compile: bool = True) -> dict:
    """``{name: callable() -> decoded dict}``; a candidate that cannot be built here maps to its error text."""
    size, K = tuple(x.shape[-2:]), net.K
    folded = fold_batchnorm(net)
    found: dict = {
        "eager": lambda: decode_torch(net(x, upsample=False), K, size),
        "fast decode": lambda: net.decode(net(x, upsample=False), size),
        "folded": lambda: folded.decode(folded(x, upsample=False), size),
    }
    cl = fold_batchnorm(net).to(memory_format=torch.channels_last)
    xcl = x.contiguous(memory_format=torch.channels_last)
    found["folded+channels-last"] = lambda: cl.decode(cl(xcl, upsample=False), size)
    found["folded+channels-last, 1 thread"] = _one_thread(found["folded+channels-last"])
    try:
        with torch.no_grad():
            frozen = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(_Heads(net).eval(), x)))
        found["jit-freeze"] = lambda: net.decode(_as_dict(frozen(x)), size)
    except Exception as exc:  # noqa: BLE001 - a candidate that does not build is reported, not fatal
        found["jit-freeze"] = f"{type(exc).__name__}: {exc}"[:200]
    if with_compile:
        try:
            compiled = torch.compile(_Heads(folded).eval())
            with torch.inference_mode():
                compiled(x)
            found["compile"] = lambda: net.decode(_as_dict(compiled(x)), size)
        except Exception as exc:  # noqa: BLE001
            found["compile"] = f"{type(exc).__name__}: {exc}"[:200]
    found["onnxruntime"] = _onnxruntime(folded, x)
    if not isinstance(found["onnxruntime"], str):
        run = found["onnxruntime"]
        found["onnxruntime"] = lambda: net.decode(_as_dict(torch.from_numpy(a) for a in run()), size)
        run1 = _onnxruntime(folded, x, threads=1)
        found["onnxruntime, 1 thread"] = _one_thread(lambda: net.decode(_as_dict(torch.from_numpy(a) for a in run1()),
                                                                         size))

    def bf16():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = folded(x, upsample=False)
        return folded.decode(out, size)
    found["bf16 (not fp32)"] = bf16
    return found


def _one_thread(fn):
    """``fn`` run with torch on one thread (restored after): on a busy machine, threads that wait on each other
    cost more than they share."""
    def run():
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn()
        finally:
            torch.set_num_threads(threads)
    return run


def _onnxruntime(model, x, threads=None):
    """A callable running ``model`` under ONNX Runtime, or the reason it cannot (not installed, export fails)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return "onnxruntime is not installed (not a dependency of this project)"
    import io

    try:
        buf = io.BytesIO()
        x01 = x.float() / 255.0              # float input in [0, 1]: what the network expects of floats
        torch.onnx.export(_Heads(model).eval(), (x01,), buf, opset_version=17, dynamo=False)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        session = ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        feed = {name: x01.numpy()}
        return lambda: session.run(None, feed)
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {exc}"[:200]


def max_uv_difference(a: dict, b: dict) -> float:
    """Largest |Δu|, |Δv| between two decodes over pixels both call foreground (inf if the masks differ)."""
    if not torch.equal(a["mask"], b["mask"]):
        return float(np.mean((a["mask"] != b["mask"]).numpy())) * float("inf") or float("inf")
    return max(float((a[k] - b[k]).abs().nan_to_num(0).max()) for k in ("u", "v"))


def matmul_gflops(n: int = 1024, repeats: int = 5) -> tuple[float, float]:
    """Measured float32 matmul GFLOP/s: ``(wall clock with torch's threads, per CPU-second on one thread)``.

    The second is the practical limit of one core, and the fairer one on a shared machine: the CPU time of a
    single thread is barely inflated by other jobs, while the wall clock of two threads can be many times.
    """
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best, best_cpu = float("inf"), float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(repeats):
            c = time.process_time()
            torch.mm(a, b)
            best_cpu = min(best_cpu, time.process_time() - c)
    finally:
        torch.set_num_threads(threads)
    return 2 * n ** 3 / best / 1e9, 2 * n ** 3 / best_cpu / 1e9


def measure(found: dict, rounds: int, repeats: int) -> dict:
    """Interleaved timings: ``{name: {"seconds", "cpu", "load": [one per round]}}``.

    ``seconds``: wall-clock seconds per call; ``cpu``: this process's CPU seconds per call (all threads), which
    the other work of a shared machine inflates far less than the wall clock.
    """
    runnable = {k: f for k, f in found.items() if callable(f)}
    with torch.inference_mode():
        for f in runnable.values():          # warm-up (numba / jit / compile caches)
            f()
            f()
        times = {k: {"seconds": [], "cpu": [], "load": []} for k in runnable}
        for _ in range(rounds):
            for name, f in runnable.items():
                t, c = time.perf_counter(), time.process_time()
                for _ in range(repeats):
                    f()
                times[name]["seconds"].append((time.perf_counter() - t) / repeats)
                times[name]["cpu"].append((time.process_time() - c) / repeats)
                times[name]["load"].append(load_average())
    return times


def report(found: dict, times: dict, reference: dict, flops: float, gflops: tuple, size: int) -> list[dict]:
    """Print one line per candidate and return the result rows (``benchmarks.records.SCHEMAS["speed"]``)."""
    base = times["eager"]["seconds"]
    gflops, core = gflops
    cores = os.cpu_count() or 1
    rows = []
    print(f"cpu preset, {size}x{size}, batch 1, {torch.get_num_threads()} threads, {device_name()}; "
          f"{flops / 1e9:.2f} GFLOP per image; measured matmul {gflops:.0f} GFLOP/s wall, {core:.0f} GFLOP/s per "
          f"CPU-second on one core, so at most {core * cores * 1e9 / flops:.1f} images/s on {cores} free cores "
          f"at matmul efficiency")
    print(f"target: >= {TARGET_IMAGES_PER_S:g} images/s.  speed-up = median over rounds of (eager / candidate) "
          "in the same round")
    for name, value in found.items():
        if not callable(value):
            print(f"  {name:<22s} not measured: {value}")
            continue
        s = times[name]["seconds"]
        ratio = statistics.median(b / c for b, c in zip(base, s))
        best, median = min(s), statistics.median(s)
        cpu = statistics.median(times[name]["cpu"])
        cpu_ratio = statistics.median(times["eager"]["cpu"]) / cpu
        load = statistics.median(times[name]["load"])
        with torch.inference_mode():
            diff = max_uv_difference(reference, value())
        print(f"  {name:<22s} {1 / median:6.2f} images/s median ({1 / best:6.2f} best), x{ratio:.2f} vs eager; "
              f"{1000 * cpu:6.1f} CPU ms/image (x{cpu_ratio:.2f}) = {flops / cpu / 1e9:5.1f} GFLOP per CPU-second "
              f"({flops / cpu / 1e9 / core:4.0%} of one core's matmul); max |Δuv| {diff:.1e}; load {load}")
        rows.append({"figure": "inference", "candidate": name, "value": round(1 / median, 2), "unit": "images/s",
                     "best": round(1 / best, 2), "ratio": round(ratio, 2),
                     "cpu_ms": round(1000 * cpu, 1), "cpu_ratio": round(cpu_ratio, 2), "target": TARGET_IMAGES_PER_S,
                     "model": "cpu (resnet18 w32 OS8)", "size": size, "batch": 1,
                     "dtype": "bf16" if "bf16" in name else "fp32",
                     "threads": 1 if name.endswith("1 thread") else torch.get_num_threads(),
                     "load": load, "note": f"max |duv| {diff:.1e}; {flops / 1e9:.2f} GFLOP/image"})
    rows.append({"figure": "matmul", "candidate": "torch.mm 1024 fp32", "value": round(gflops, 1),
                 "unit": "GFLOP/s", "threads": torch.get_num_threads(), "load": load_average(),
                 "note": f"wall clock; {core:.1f} GFLOP per CPU-second on one thread (one core's practical limit)"})
    rows.append({"figure": "matmul", "candidate": "torch.mm 1024 fp32, per core", "value": round(core, 1),
                 "unit": "GFLOP/CPU-s", "threads": 1, "load": load_average(),
                 "note": f"cpu preset forward: {flops / 1e9:.2f} GFLOP/image"})
    return rows


def run(size: int = 300, rounds: int = 5, repeats: int = 3, with_compile: bool = True) -> list[dict]:
    """Build every candidate, time them interleaved and return the rows."""
    net = cpu_net()
    x = torch.randint(0, 255, (1, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    flops = count_flops(net, x, upsample=False)["total"]
    found = candidates(net, x, with_compile=with_compile)
    with torch.inference_mode():
        reference = found["eager"]()
    gflops = matmul_gflops()
    times = measure(found, rounds, repeats)
    return report(found, times, reference, flops, gflops, size)


def raster(renders: int = 200) -> list[dict]:
    """The ground-truth renderer's figure (``densereg.geometry.raster_bench``: 20k triangles at 256², one
    thread), printed with its target, as a row."""
    from densereg.geometry import raster_bench

    r = raster_bench.benchmark(renders=renders)
    print(f"rasteriser: {r['renders_per_s']:.1f} renders/s wall, {r['cpu_renders_per_s']:.1f} renders/s by CPU time "
          f"({r['triangles']} triangles, {r['size']}x{r['size']}, one thread; target >= "
          f"{raster_bench.TARGET_RENDERS_PER_S:g}); load {r['load']}")
    return [{"figure": "raster", "candidate": "rasterize", "value": round(r["renders_per_s"], 1),
             "unit": "renders/s", "target": raster_bench.TARGET_RENDERS_PER_S,
             "cpu_ms": round(r["ms_per_render"] * r["renders_per_s"] / r["cpu_renders_per_s"], 3),
             "size": r["size"], "threads": 1, "load": r["load"],
             "note": f"{r['triangles']} triangles; {r['cpu_renders_per_s']:.1f} renders/s by CPU time"}]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.experiments.speed", description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile (its first build is slow)")
    parser.add_argument("--no-raster", action="store_true", help="skip the rasteriser's figure")
    parser.add_argument("--csv", type=Path, default=None, help="append the rows to this CSV (results/speed.csv)")
    args = parser.parse_args(argv)
    rows = run(args.size, args.rounds, args.repeats, with_compile=not args.no_compile)
    if not args.no_raster:
        rows += raster()
    if args.csv:
        from benchmarks.records import append_speed_rows

        append_speed_rows(args.csv, rows, device_name())
    return 0


if __name__ == "__main__":
    sys.exit(main())
