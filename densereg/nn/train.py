"""Training DenseReg (paper Sec. 4.1): one flat loop, resumable, CPU by default, DDP + bf16 on GPUs.

    python -m densereg.nn.train --preset cpu --source synthetic --out runs/synthetic/densereg-cpu
    python -m densereg.nn.train --task deeplab --preset cpu --source synthetic --out runs/synthetic/deeplab-cpu
    torchrun --nproc_per_node 4 -m densereg.nn.train --preset paper --source real --out runs/real/densereg

Targets are rasterised on the fly from each image's 3D fitting (``densereg.data.groundtruth``), so the training
set is anything with fittings: 300W-LP on real data, the synthetic benchmark's ``300W_LP/SYNTH`` otherwise.
The same loop, data, schedule and presets train the DeepLab-v2 segmentation baseline of Table 1
(``--task deeplab``), whose targets are the template's part labels carried through the same GT UV field.

Determinism: every random choice of step ``t`` (which images, scale, crop) comes from
``np.random.default_rng([seed, t, rank, slot])``. Killing the process and re-running the same command resumes
from the last checkpoint and ends with the same weights as an uninterrupted run (on CPU).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from densereg.data import datasets, formats, groundtruth
from densereg.geometry import rasterize, templates
from densereg.nn.deeplab import DeepLabV2
from densereg.nn.model import DenseRegNet


@dataclass
class TrainConfig:
    """Hyper-parameters; the defaults are the paper's (Sec. 4.1), presets override a few."""

    task: str = "densereg"                # a key of TASKS: "densereg" or the "deeplab" baseline (Table 1)
    backbone: str = "resnet101"           # DeepLab-v2 trunk
    output_stride: int = 8                # dilated res4/res5
    width: int = 64                       # 64 = torchvision-compatible shapes
    K: int = 10                           # d = 0.1, the paper's main setting
    variant: str = "q+r"                  # quantised regression
    depth: bool = False                   # Sec. 4.5 depth head
    iterations: int = 20000
    batch_size: int = 10
    optimizer: str = "sgd"                # the paper's Caffe solver: SGD with momentum
    base_lr: float = 1e-3
    lr_power: float = 0.9                 # "poly" policy: lr = base * (1 - t/T)^power
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_iters: int = 200               # "a lower learning rate for a warm start for a few iterations"
    warmup_factor: float = 0.1
    scales: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5)
    crop: int = 321
    image_scale: float = 1.0              # rescale every image first (the paper: largest side 800 px)
    init_weights: str | None = None       # torchvision-named trunk weights (ImageNet/COCO); paper: COCO
    freeze_bn: bool = False
    source: str = "real"                  # "real" ($DENSEREG_DATA) or "synthetic"
    root: str | None = None               # explicit data root (overrides the source's default location)
    dataset: str = "300w-lp"
    split: str = "train"
    seed: int = 0
    checkpoint_every: int = 1000
    log_every: int = 10
    loader_workers: int = 2
    threads: int = 0                      # CPU threads for torch; 0 = cores not used by loader workers
    amp: bool = True                      # bf16 autocast, CUDA only

    def resolved(self) -> dict:
        return dataclasses.asdict(self)


# Named sets of overrides. ``cpu``: chosen by measurement on the 2-core machine (see README, "Training").
PRESETS: dict[str, dict] = {
    "paper": {},
    "cpu": dict(backbone="resnet18", width=32, output_stride=8, batch_size=8, iterations=1000,
                optimizer="adam", base_lr=2e-3, weight_decay=1e-5, warmup_iters=50, crop=128,
                image_scale=0.5, scales=(0.75, 1.0, 1.25), source="synthetic", checkpoint_every=200,
                loader_workers=1),
    "tiny": dict(backbone="resnet18", width=8, output_stride=8, batch_size=2, iterations=4, optimizer="adam",
                 base_lr=1e-3, warmup_iters=1, crop=48, image_scale=0.25, scales=(1.0,), source="synthetic",
                 checkpoint_every=2, log_every=1, loader_workers=0),
}

# Fields whose values define the network; a checkpoint made with other values cannot be loaded.
ARCH_FIELDS = ("task", "backbone", "output_stride", "width", "K", "variant", "depth")
# Checkpoints written before a field existed hold its value implicitly.
_ARCH_DEFAULTS = {"task": "densereg"}


def make_config(preset: str = "paper", **overrides) -> TrainConfig:
    """The paper's config with a preset's and then the caller's overrides applied."""
    if preset not in PRESETS:
        raise KeyError(f"unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
    values = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
    cfg = TrainConfig(**values)
    if cfg.variant == "regression":
        cfg.K = 1
    return cfg


def _build_densereg(cfg: TrainConfig) -> DenseRegNet:
    return DenseRegNet(backbone=cfg.backbone, output_stride=cfg.output_stride, K=cfg.K, variant=cfg.variant,
                       depth=cfg.depth, width=cfg.width, pretrained=cfg.init_weights, freeze_bn=cfg.freeze_bn)


def _build_deeplab(cfg: TrainConfig) -> DeepLabV2:
    # K, variant and depth do not apply: the baseline predicts the 8 template parts directly.
    return DeepLabV2(backbone=cfg.backbone, output_stride=cfg.output_stride, width=cfg.width,
                     pretrained=cfg.init_weights, freeze_bn=cfg.freeze_bn)


# What the loop can train: each network returns a dict of named losses from ``losses(outputs, batch)``.
TASKS = {"densereg": _build_densereg, "deeplab": _build_deeplab}


def build_model(cfg: TrainConfig) -> DenseRegNet | DeepLabV2:
    """The network ``cfg.task`` names, built from ``cfg``'s architecture fields."""
    if cfg.task not in TASKS:
        raise KeyError(f"unknown task {cfg.task!r}; valid: {', '.join(TASKS)}")
    return TASKS[cfg.task](cfg)


# ------------------------------------------------------------------------------------------------ data


class TrainingBatches(torch.utils.data.Dataset):
    """Item ``t`` is the whole batch of step ``t`` (images, dense targets), a pure function of (seed, t, rank)."""

    def __init__(self, samples: list[datasets.Sample], cfg: TrainConfig, rank: int = 0):
        if not samples:
            raise ValueError("no training samples")
        missing = [s.image_path for s in samples if "fitting" not in s.extras]
        if missing:
            raise ValueError(f"{missing[0]} (and {len(missing) - 1} more) have no 3D fitting: real 300W images "
                             "cannot train DenseReg's dense branches; use 300W-LP fittings or --source synthetic")
        self.samples, self.cfg, self.rank = samples, cfg, rank

    def __len__(self) -> int:
        return self.cfg.iterations

    def __getitem__(self, step: int) -> dict[str, torch.Tensor]:
        items = [self.example(step, slot) for slot in range(self.cfg.batch_size)]
        return {k: torch.from_numpy(np.stack([it[k] for it in items])) for k in items[0]}

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
        fitting = formats.read_fitting(sample.extras["fitting"])
        template = templates.template_for(fitting.model)
        verts = groundtruth.posed_vertices(fitting, template, h)
        verts[:, :2] = (verts[:, :2] + 0.5) * np.array([sw / w, sh / h]) - 0.5
        gt = rasterize.render_gt(template, verts, sh, sw)
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
        return {"image": img_c.transpose(2, 0, 1).copy(), "u": u, "v": v, "mask": np.isfinite(u),
                "depth": depth, "parts": parts, "valid": valid}


def training_samples(cfg: TrainConfig) -> list[datasets.Sample]:
    """The samples with fittings that train the network (the active source's 300W-LP-style split)."""
    if cfg.root is not None:
        root = Path(cfg.root)
    elif cfg.source == "synthetic":
        from densereg.data.synth import ensure_synthetic

        root = ensure_synthetic()
    else:
        root = datasets.data_root("real")
    return datasets.load_dataset(cfg.dataset, root, cfg.split)


# ------------------------------------------------------------------------------------------------ checkpoints


def save_checkpoint(path: Path, model, optimizer, step: int, cfg: TrainConfig) -> None:
    """Atomic save of everything needed to resume (weights, optimizer, step, RNG, resolved config)."""
    state = {"model": _unwrap(model).state_dict(), "optimizer": optimizer.state_dict(), "step": step,
             "torch_rng": torch.get_rng_state(), "config": cfg.resolved(), "format": "densereg-checkpoint-1"}
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)


def read_checkpoint(path: str | os.PathLike, expect: dict | None = None) -> dict:
    """Load a checkpoint (``weights_only=True``), checking it is whole and matches ``expect``'s arch fields.

    Raises:
        ValueError: naming the file and what is wrong (truncated/corrupt, not ours, architecture mismatch).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for damaged files
        raise ValueError(f"{path}: unreadable checkpoint (truncated or corrupt?): {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != "densereg-checkpoint-1":
        raise ValueError(f"{path}: not a densereg checkpoint")
    if expect:
        saved = {**_ARCH_DEFAULTS, **state["config"]}
        diff = {k: (saved.get(k), expect[k]) for k in ARCH_FIELDS if k in expect and saved.get(k) != expect[k]}
        if diff:
            desc = ", ".join(f"{k}: checkpoint {a!r} vs requested {b!r}" for k, (a, b) in diff.items())
            raise ValueError(f"{path}: checkpoint made with another network ({desc})")
    return state


def load_model(path: str | os.PathLike, expect: dict | None = None
               ) -> tuple[DenseRegNet | DeepLabV2, TrainConfig]:
    """A trained model (DenseReg or DeepLab-v2, as its config's ``task`` says) in eval mode and its config."""
    state = read_checkpoint(path, expect)
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in state["config"].items() if k in fields}
    values["scales"] = tuple(values.get("scales", ()))
    cfg = TrainConfig(**{**values, "init_weights": None})
    model = build_model(cfg)
    try:
        model.load_state_dict(state["model"], strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not fit the network its config describes: {exc}") from exc
    return model.eval(), cfg


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


# ------------------------------------------------------------------------------------------------ the loop


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Warm start at ``warmup_factor × base_lr``, then poly decay from ``base_lr`` to 0 at ``iterations``."""
    if step < cfg.warmup_iters:
        return cfg.base_lr * cfg.warmup_factor
    return cfg.base_lr * (1 - step / cfg.iterations) ** cfg.lr_power


def train(cfg: TrainConfig, out_dir: str | os.PathLike, progress: bool = True,
          stop_after: int | None = None) -> Path:
    """Train (or resume) into ``out_dir``; returns the final checkpoint ``out_dir/last.pt``.

    ``stop_after`` ends the run early after that many steps of this invocation (tests use it to simulate a
    kill); a later call resumes.
    """
    out = Path(out_dir)
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
    if last.exists():
        state = read_checkpoint(last, cfg.resolved())
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

    data = TrainingBatches(training_samples(cfg), cfg, rank)
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
                save_checkpoint(last, model, optimizer, done, cfg)
        bar.update()
    bar.close()
    if rank == 0 and (step + 1) % cfg.checkpoint_every and step + 1 != cfg.iterations:
        save_checkpoint(last, model, optimizer, step + 1, cfg)   # stop_after: keep the progress
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
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, self.fields)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.path)

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
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m densereg.nn.train", description="Train DenseReg.")
    parser.add_argument("--preset", default="paper", choices=list(PRESETS))
    parser.add_argument("--out", type=Path, required=True, help="run folder (checkpoint, log, config)")
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            parser.add_argument(flag, type=lambda s: s.lower() in ("1", "true", "yes"), default=None)
        elif f.name == "scales":
            parser.add_argument(flag, type=lambda s: tuple(float(x) for x in s.split(",")), default=None)
        else:
            kind = {"int": int, "float": float}.get(str(f.type), str)
            parser.add_argument(flag, type=kind, default=None)
    args = vars(parser.parse_args(argv))
    preset, out = args.pop("preset"), args.pop("out")
    cfg = make_config(preset, **args)
    path = train(cfg, out)
    print(f"checkpoint: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
