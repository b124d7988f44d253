"""Training configuration: ``TrainConfig`` (the paper's hyper-parameters), named presets, and the CLI flags.

A config is *resolved* once (:func:`make_config`): a preset's overrides, then the caller's, then the values
derived from them (``template`` from ``source``, ``K = 1`` for plain regression). The resolved dict is what a
checkpoint records, so a trained network says exactly how it was made and which template its UV refers to.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass

from densereg.registry import lookup


@dataclass
class TrainConfig:
    """Hyper-parameters; the defaults are the paper's (Sec. 4.1), presets override a few."""

    preset: str | None = None             # the PRESETS key this config started from (a label; set by make_config)
    task: str = "densereg"                # a key of densereg.nn.tasks.TASKS: "densereg", "deeplab" (Table 1), "body"
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
    template: str | None = None           # the template the UV refers to; None: "builtin" (synthetic) / "bfm" (real)
    seed: int = 0
    checkpoint_every: int = 1000
    log_every: int = 10
    loader_workers: int = 2
    threads: int = 0                      # CPU threads for torch; 0 = cores not used by loader workers
    amp: bool = True                      # bf16 autocast, CUDA only
    augment: str = "none"                 # photometric augmentation (densereg.nn.augment): none | transfer

    def resolved(self) -> dict:
        """The config as a plain dict (what checkpoints and ``config.json`` record).

        Fields of :data:`LATER_FIELDS` are left out while at their default, so the networks trained before they
        existed keep the identity they were cached under (``benchmarks.baselines.artefacts``).
        """
        values = dataclasses.asdict(self)
        for name, default in LATER_FIELDS.items():
            if values[name] == default:
                del values[name]
        return values

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """A config from a recorded dict; unknown keys are ignored, missing ones take their defaults."""
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in values.items() if k in fields}
        if "scales" in values:
            values["scales"] = tuple(values["scales"])
        cfg = cls(**values)
        if cfg.template is None:     # recorded before the field existed: the source's template
            cfg.template = DATASET_TEMPLATES.get(cfg.dataset) or SOURCE_TEMPLATES.get(cfg.source)
        return cfg


# Fields added after trained networks were cached, with the default that leaves them out of ``resolved()``.
LATER_FIELDS = {"augment": "none"}

# Named sets of overrides. ``cpu``: chosen by measurement on the 2-core machine (see README, "Training").
PRESETS: dict[str, dict] = {
    "paper": {},
    "cpu": dict(backbone="resnet18", width=32, output_stride=8, batch_size=8, iterations=1000,
                optimizer="adam", base_lr=2e-3, weight_decay=1e-5, warmup_iters=50, crop=128,
                image_scale=0.5, scales=(0.75, 1.0, 1.25), source="synthetic", checkpoint_every=200,
                loader_workers=1),
    # transfer: the cpu network trained for synthetic-to-real transfer, on the realistic style
    # (python -m densereg.data.synth --style realistic --out data/realistic; then --root data/realistic): the
    # photometric augmentation of densereg.nn.augment, scales widened to 0.5-2 (faces of every size), and 6x the
    # cpu preset's steps (about 2 h on 2 CPU cores).
    "transfer": dict(backbone="resnet18", width=32, output_stride=8, batch_size=8, iterations=6000,
                     optimizer="adam", base_lr=2e-3, weight_decay=1e-5, warmup_iters=100, crop=128,
                     image_scale=0.5, scales=(0.5, 0.7, 1.0, 1.4, 2.0), source="synthetic", checkpoint_every=500,
                     loader_workers=1, augment="transfer"),
    "tiny": dict(backbone="resnet18", width=8, output_stride=8, batch_size=2, iterations=4, optimizer="adam",
                 base_lr=1e-3, warmup_iters=1, crop=48, image_scale=0.25, scales=(1.0,), source="synthetic",
                 checkpoint_every=2, log_every=1, loader_workers=0),
}

# Presets of the DenseReg network alone, with no DPM / MDM counterpart, so not offered by the harness's --preset
# (evaluate their checkpoints with --checkpoint, e.g. python -m benchmarks.run sim2real --checkpoint FILE).
NETWORK_ONLY_PRESETS = ("transfer",)

# Per-task values layered over a preset (a preset name means the same budget for every task). The body task
# (densereg.nn.body) trains on the 128-px synthetic people on the ``cpu`` trunk. Measured: at scale 1 (crops of
# 112, 700 steps) limbs 3-5 px wide were lost at output stride 8 (patch accuracy 0.54, arms and lower legs
# missing in Fig. 10); images enlarged 1.5x (crops of 144, 700 steps) gave 0.59 but took 25 min niced on the
# shared machine (4.5 img/s at load 6-13). The ``cpu`` body preset keeps the 1.5x images with crops of 128 and
# 500 steps of 8, sized to train in about 15 minutes there.
TASK_PRESETS: dict[str, dict[str, dict]] = {
    "body": {"paper": dict(dataset="synthetic-body", template="procedural-body"),
             "cpu": dict(dataset="synthetic-body", template="procedural-body", image_scale=1.5, crop=128,
                         scales=(0.8, 1.0, 1.2), iterations=500),
             "tiny": dict(dataset="synthetic-body", template="procedural-body", image_scale=0.5, crop=64)},
}

# Fields whose values define the network; a checkpoint made with other values cannot be loaded into it.
ARCH_FIELDS = ("task", "backbone", "output_stride", "width", "K", "variant", "depth")

# Fields that change neither the network nor the trained weights (bookkeeping, speed): a resumed run may
# differ in them. Every other field is part of what was trained and must match to resume.
RUN_FIELDS = ("preset", "checkpoint_every", "log_every", "loader_workers", "threads", "root")

# The template each data source's fittings belong to.
SOURCE_TEMPLATES = {"synthetic": "builtin", "real": "bfm"}
# Datasets whose UV space is made from their own training landmarks (the reference ear of
# ``densereg.geometry.ear``, stored in the checkpoint), whatever the source.
DATASET_TEMPLATES = {"ears": "ear"}


def make_config(preset: str = "paper", **overrides) -> TrainConfig:
    """The paper's config with a preset's, the task's (``TASK_PRESETS``) and then the caller's overrides applied
    (None values ignored).

    Derived values are filled in: ``preset`` (the name, a label), ``template`` from ``source`` when not
    given, and ``K = 1`` for the plain ``"regression"`` variant.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    values = lookup(PRESETS, preset, "preset")
    values = {**values, **TASK_PRESETS.get(given.get("task", values.get("task", "densereg")), {}).get(preset, {}),
              **given}
    cfg = TrainConfig(**{**values, "preset": preset})
    if cfg.variant == "regression":
        cfg.K = 1
    if cfg.template is None:
        cfg.template = DATASET_TEMPLATES.get(cfg.dataset) or lookup(SOURCE_TEMPLATES, cfg.source, "data source")
    return cfg


def config_differences(saved: dict, wanted: dict, fields=None) -> dict:
    """``{field: (saved value, wanted value)}`` for the fields (default: all training fields) that differ.

    Fields absent from ``saved`` (checkpoints older than the field) compare as the field's default.
    """
    defaults = dataclasses.asdict(TrainConfig())   # every field, LATER_FIELDS included
    if saved.get("template") is None:      # recorded before the field existed: the source's template
        saved = {**saved, "template": SOURCE_TEMPLATES.get(saved.get("source", defaults["source"]))}
    if fields is None:
        fields = [k for k in defaults if k not in RUN_FIELDS]
    diff = {}
    for k in fields:
        if k not in wanted:
            continue
        a, b = saved.get(k, defaults.get(k)), wanted[k]
        if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
            a, b = (tuple(a) if a is not None else None), (tuple(b) if b is not None else None)
        if a != b:
            diff[k] = (a, b)
    return diff


def parse_bool(text: str) -> bool:
    """``true/yes/1/on`` → True, ``false/no/0/off`` → False; anything else is an error (argparse-friendly)."""
    word = text.strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false, yes/no, 1/0, on/off), got {text!r}")


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One ``--field-name`` flag per ``TrainConfig`` field (default None: keep the preset's value)."""
    for f in dataclasses.fields(TrainConfig):
        if f.name == "preset":        # the caller's own --preset chooses it
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            parser.add_argument(flag, type=parse_bool, default=None, metavar="BOOL")
        elif f.name == "scales":
            parser.add_argument(flag, type=lambda s: tuple(float(x) for x in s.split(",")), default=None)
        else:
            kind = {"int": int, "float": float}.get(str(f.type), str)
            parser.add_argument(flag, type=kind, default=None)
