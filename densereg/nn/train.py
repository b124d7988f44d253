"""Training DenseReg (paper Sec. 4.1): one flat loop, resumable, CPU by default, DDP + bf16 on GPUs.

    python -m densereg.nn.train --preset cpu --source synthetic --out runs/synthetic/densereg-cpu
    python -m densereg.nn.train --task deeplab --preset cpu --source synthetic --out runs/synthetic/deeplab-cpu
    python -m densereg.nn.train --task body --preset cpu --source synthetic --out runs/synthetic/body-cpu
    torchrun --nproc_per_node 4 -m densereg.nn.train --preset paper --source real --out runs/real/densereg

Targets are rasterised on the fly from each image's 3D fitting (``densereg.data.groundtruth``), so the training
set is anything with fittings: 300W-LP on real data, the synthetic benchmark's ``300W_LP/SYNTH`` otherwise.
The same loop, data, schedule and presets train the DeepLab-v2 segmentation baseline of Table 1
(``--task deeplab``), whose targets are the template's part labels carried through the same GT UV field.
The body task (``--task body``, ``densereg.nn.body``) brings its own samples and batches through
``densereg.nn.tasks.TASK_DATA``; the loop is the same.

Resuming: re-running the same command into the same ``--out`` resumes from ``last.pt``; a run whose config
(any training field: seed, learning rate, iterations, ...) or training data (``densereg.data.fingerprint``)
differs from the checkpoint's is refused with the differences listed (``--fresh`` discards the old run). The
final checkpoint also holds the PCA shape model of the training landmarks (``densereg.nn.checkpoint``).

Determinism: every random choice of step ``t`` (which images, scale, crop) comes from
``np.random.default_rng([seed, t, rank, slot])``. Killing the process and re-running the same command resumes
from the last checkpoint and ends with the same weights as an uninterrupted run (on CPU).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from densereg.data import datasets, formats, groundtruth
from densereg.data.fingerprint import fingerprint
from densereg.geometry.shape_model import ShapeModel
from densereg.nn.augment import augment
from densereg.nn.batches import StepBatches
from densereg.nn.checkpoint import load_model, read_checkpoint, save_checkpoint, shape_model_state  # noqa: F401
from densereg.nn.config import ARCH_FIELDS, LATER_FIELDS, config_differences, PRESETS, TrainConfig, add_config_flags, make_config  # noqa: F401
from densereg.nn.tasks import TASK_DATA, TASKS, build_model  # noqa: F401


# ------------------------------------------------------------------------------------------------ data


class TrainingBatches(StepBatches):
    """Item ``t`` is the whole batch of step ``t`` (images, dense targets), a pure function of (seed, t, rank)."""

    def __init__(self, samples: list[datasets.Sample], cfg: TrainConfig, rank: int = 0):
        super().__init__(samples, cfg, rank)
        self.targets = groundtruth.target_maker(cfg.dataset, samples)   # 3D fittings, or TPS for ears

    def example(self, step: int, slot: int) -> dict[str, np.ndarray]:
        """One augmented training example: random image, random scale, random crop around the face.

        ``parts`` is the template part label of every pixel (int64; 0 = "other", which includes the
        background and the crop padding; ``valid`` says which pixels are padding).
        """
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, step, self.rank, slot])
        sample = self.samples[rng.integers(len(self.samples))]
        scale = cfg.image_scale * float(rng.choice(cfg.scales))
        image = sample.image()
        h, w = image.shape[:2]
        sh, sw = max(1, round(h * scale)), max(1, round(w * scale))
        image = cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        # Render the targets directly at the scaled size (exact, no resampling of UV across silhouettes).
        gt = self.targets(sample, (h, w), (sh, sw))
        # A crop of crop×crop whose central 60% holds the face centre (padding outside the image is ignored).
        c = cfg.crop
        centre = (sample.box[:2] + sample.box[2:]) / 2 * np.array([sw / w, sh / h])
        x0 = int(np.floor(centre[0] - c * rng.uniform(0.2, 0.8)))
        y0 = int(np.floor(centre[1] - c * rng.uniform(0.2, 0.8)))
        img_c = np.zeros((c, c, 3), np.uint8)
        u = np.full((c, c), np.nan, np.float32)
        v = np.full((c, c), np.nan, np.float32)
        depth = np.full((c, c), np.nan, np.float32)
        parts = np.zeros((c, c), np.int64)
        valid = np.zeros((c, c), bool)
        ys, xs = slice(max(y0, 0), min(y0 + c, sh)), slice(max(x0, 0), min(x0 + c, sw))
        yd = slice(ys.start - y0, ys.stop - y0)
        xd = slice(xs.start - x0, xs.stop - x0)
        img_c[yd, xd] = image[ys, xs]
        u[yd, xd], v[yd, xd], depth[yd, xd] = gt.u[ys, xs], gt.v[ys, xs], gt.depth[ys, xs]
        parts[yd, xd] = gt.parts[ys, xs]
        valid[yd, xd] = True
        img_c = augment(cfg.augment, img_c, valid, rng)   # photometric only ("none": untouched, no draws)
        return {"image": img_c.transpose(2, 0, 1).copy(), "u": u, "v": v, "mask": np.isfinite(u),
                "depth": depth, "parts": parts, "valid": valid}


def training_samples(cfg: TrainConfig) -> list[datasets.Sample]:
    """The samples with fittings that train the network (the active source's 300W-LP-style split), or those
    the task's own entry of ``TASK_DATA`` gives (the body task)."""
    if cfg.task in TASK_DATA:
        return TASK_DATA[cfg.task][0](cfg)
    if cfg.root is not None:
        root = Path(cfg.root)
    elif cfg.source == "synthetic":
        from densereg.data.synth import EXTRA_SETS, ensure_synthetic

        root = ensure_synthetic(extras=[cfg.dataset] if cfg.dataset in EXTRA_SETS else [])
    else:
        root = datasets.data_root("real")
    return datasets.load_dataset(cfg.dataset, root, cfg.split)


# ------------------------------------------------------------------------------------------------ checkpoints


def _state(model, optimizer, step: int, cfg: TrainConfig, data_fingerprint: str, shape_model=None,
           reference=None) -> dict:
    """Everything needed to resume and to use the model (see ``densereg.nn.checkpoint``); ``reference``: the
    template landmarks made from the training data (the reference ear), stored when there are some."""
    state = {"model": _unwrap(model).state_dict(), "optimizer": optimizer.state_dict(), "step": step,
             "torch_rng": torch.get_rng_state(), "config": cfg.resolved(), "data_fingerprint": data_fingerprint,
             "shape_model": None if shape_model is None else shape_model_state(shape_model)}
    if reference is not None:
        state["template_landmarks"] = torch.from_numpy(np.asarray(reference, np.float64).copy())
    return state


def fit_shape_model(samples: list[datasets.Sample]) -> ShapeModel | None:
    """The PCA shape model of the training landmarks (Sec. 4.3 refinement); None if some sample has none."""
    shapes = [s.landmarks for s in samples]
    if len(shapes) < 2 or any(s is None for s in shapes) or len({np.shape(s) for s in shapes}) != 1:
        return None
    return ShapeModel.fit(np.stack(shapes))


def _resume_state(last: Path, cfg: TrainConfig, data_fingerprint: str) -> dict:
    """The checkpoint to resume from, refused when it was trained with another config or other data."""
    afresh = (f"to start afresh, rerun with --fresh (discards {last.parent}) or delete {last.parent}; "
              "to keep it, train into another --out folder")
    try:
        state = read_checkpoint(last, {**LATER_FIELDS, **cfg.resolved()})   # LATER_FIELDS compared too
    except ValueError as exc:
        raise ValueError(f"cannot resume: {exc}; {afresh}") from None
    saved = state.get("data_fingerprint")
    if saved and saved != data_fingerprint:
        raise ValueError(f"cannot resume: {last}: checkpoint trained on other data (fingerprint {saved[:12]} vs "
                         f"{data_fingerprint[:12]} now); {afresh}")
    return state


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


# ------------------------------------------------------------------------------------------------ the loop


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Warm start at ``warmup_factor × base_lr``, then poly decay from ``base_lr`` to 0 at ``iterations``."""
    if step < cfg.warmup_iters:
        return cfg.base_lr * cfg.warmup_factor
    return cfg.base_lr * (1 - step / cfg.iterations) ** cfg.lr_power


def train(cfg: TrainConfig, out_dir: str | os.PathLike, progress: bool = True,
          stop_after: int | None = None, fresh: bool = False) -> Path:
    """Train (or resume) into ``out_dir``; returns the final checkpoint ``out_dir/last.pt``.

    A checkpoint already in ``out_dir`` is resumed only when it was made with the same training config and
    data (else ``ValueError`` saying what differs); ``fresh`` discards it and starts again. ``stop_after`` ends
    the run early after that many steps of this invocation (tests use it to simulate a kill); a later call
    resumes. The last checkpoint also carries the PCA shape model of the training landmarks.

    Raises:
        ValueError: no training samples, samples without fittings, or a checkpoint that cannot be resumed.
    """
    out = Path(out_dir)
    samples = training_samples(cfg)
    batches = TASK_DATA[cfg.task][1] if cfg.task in TASK_DATA else TrainingBatches
    data = batches(samples, cfg)                  # checks the samples before anything is written
    data_fp = fingerprint(samples)
    # the reference landmarks the targets are drawn against (the ear template); tasks without one give None
    reference = getattr(getattr(data, "targets", None), "reference", None)
    out.mkdir(parents=True, exist_ok=True)
    distributed = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    rank, world = 0, 1
    if distributed:
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        # One OpenMP thread per free core: oversubscribed OpenMP threads spin and were measured 8x slower.
        torch.set_num_threads(cfg.threads or max(1, (os.cpu_count() or 1) - cfg.loader_workers))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.manual_seed(cfg.seed)

    model = build_model(cfg).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        optimizer = torch.optim.SGD(params, lr=cfg.base_lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "adam":
        optimizer = torch.optim.AdamW(params, lr=cfg.base_lr, weight_decay=cfg.weight_decay)
    else:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}; valid: sgd, adam")

    last = out / "last.pt"
    start = 0
    if fresh:
        for stale in (last, out / "log.csv"):
            stale.unlink(missing_ok=True)
    if last.exists():
        state = _resume_state(last, cfg, data_fp)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        start = int(state["step"])
        if rank == 0 and progress:
            print(f"[train] resuming {last} at step {start}/{cfg.iterations}", file=sys.stderr)
    if rank == 0:
        _write_json(out / "config.json", cfg.resolved())
    if start >= cfg.iterations:
        return last
    if distributed:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.index is not None else None)

    data.rank = rank
    steps = range(start, cfg.iterations if stop_after is None else min(cfg.iterations, start + stop_after))
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(data, list(steps)), batch_size=None, shuffle=False,
        num_workers=cfg.loader_workers, prefetch_factor=2 if cfg.loader_workers else None,
        persistent_workers=False, pin_memory=device.type == "cuda")
    log = _Log(out / "log.csv", start) if rank == 0 else None
    from tqdm import tqdm

    bar = tqdm(total=cfg.iterations, initial=start, desc="train", disable=not progress or rank != 0,
               file=sys.stderr, dynamic_ncols=True)
    use_amp = cfg.amp and device.type == "cuda"
    model.train()
    tick, seen = time.perf_counter(), 0
    step = start
    for step, batch in zip(steps, loader):
        lr = learning_rate(cfg, step)
        for g in optimizer.param_groups:
            g["lr"] = lr
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            outputs = model(batch["image"])
        outputs = {k: v.float() for k, v in outputs.items()}
        terms = _unwrap(model).losses(outputs, batch)
        bad = [k for k, v in terms.items() if not torch.isfinite(v)]
        assert not bad, f"step {step}: non-finite loss terms {bad}"
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        optimizer.step()
        seen += cfg.batch_size * world
        done = step + 1
        if rank == 0:
            if done % cfg.log_every == 0 or done == cfg.iterations:
                rate = seen / max(time.perf_counter() - tick, 1e-9)
                values = {k: float(v.detach()) for k, v in terms.items()}
                log.write(done, lr, values, rate)
                bar.set_postfix({k: f"{v:.3f}" for k, v in values.items()} | {"img/s": f"{rate:.1f}"})
                tick, seen = time.perf_counter(), 0
            if done % cfg.checkpoint_every == 0 or done == cfg.iterations:
                final = done == cfg.iterations and cfg.task == "densereg"
                save_checkpoint(last, _state(model, optimizer, done, cfg, data_fp,
                                             fit_shape_model(samples) if final else None, reference))
        bar.update()
    bar.close()
    if rank == 0 and (step + 1) % cfg.checkpoint_every and step + 1 != cfg.iterations:
        save_checkpoint(last, _state(model, optimizer, step + 1, cfg, data_fp,   # stop_after: keep the progress
                                     reference=reference))
    if distributed:
        torch.distributed.destroy_process_group()
    return last


class _Log:
    """CSV log of the loss terms; on resume, rows past the checkpoint's step are dropped."""

    def __init__(self, path: Path, start: int):
        self.path, self.fields = path, None
        if path.exists():
            rows = list(csv.DictReader(path.open()))
            kept = [r for r in rows if int(r["step"]) <= start]
            if rows:
                self.fields = list(rows[0].keys())
                self._rewrite(kept)

    def _rewrite(self, rows):
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, self.fields)
        writer.writeheader()
        writer.writerows(rows)
        formats.atomic_write_bytes(self.path, text.getvalue().encode())

    def write(self, step: int, lr: float, terms: dict, rate: float) -> None:
        row = {"step": step, "lr": f"{lr:.6g}", **{k: f"{v:.6g}" for k, v in terms.items()},
               "images_per_s": f"{rate:.2f}"}
        new = self.fields is None
        if new:
            self.fields = list(row)
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, self.fields)
            if new:
                writer.writeheader()
            writer.writerow(row)


def _write_json(path: Path, data: dict) -> None:
    formats.atomic_write_bytes(path, json.dumps(data, indent=2, default=str).encode())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m densereg.nn.train", description="Train DenseReg.")
    parser.add_argument("--preset", default="paper", choices=list(PRESETS))
    parser.add_argument("--out", type=Path, required=True, help="run folder (checkpoint, log, config)")
    parser.add_argument("--fresh", action="store_true",
                        help="discard a checkpoint already in --out and start again (default: resume it)")
    add_config_flags(parser)
    args = vars(parser.parse_args(argv))
    preset, out, fresh = args.pop("preset"), args.pop("out"), args.pop("fresh")
    cfg = make_config(preset, **args)
    try:
        path = train(cfg, out, fresh=fresh)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"checkpoint: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
