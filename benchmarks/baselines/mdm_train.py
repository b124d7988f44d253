"""Training of the MDM fitter: augmented GT-normalised crops, the resumable loop, its checkpoints and log.

    python -m benchmarks.baselines.mdm_train --root ROOT --out DIR [--preset cpu|paper] [--iterations N]

Training draws the initial shape the way the published code does: the mean shape aligned (translation + scale)
to a perturbed ground-truth box, after mirroring (p = 0.5) and rotating (p = 0.5, θ ~ N(0, 10°)) the image, then
distorts colours (brightness, contrast, saturation, hue) and adds Gaussian noise (σ = 0.1 on [0, 1] pixels,
then clipped), RGB input, no further per-image normalisation (the ``cpu`` preset standardises each frame, see
:data:`benchmarks.baselines.mdm.PRESETS`). Published MDM synthesised boxes from a PCA model of real detector
boxes; with no detector at training time we perturb each box corner by independent Gaussian noise
(``box_noise`` × box side), which gives translation, scale and aspect jitter of the same kind. With
``blend_p`` > 0 (the ``cpu`` preset) that share of the starts is moved a uniform fraction of the way to the
(rotated, mirrored) ground truth plus per-point noise, so MDM also learns to refine starts that are already
face-shaped, as DenseReg's landmarks are.

:func:`train_mdm` is resumable: a checkpoint holds weights, Adam state, EMA weights, the step and the config;
batches and augmentation come from ``numpy.random.default_rng([seed, step])``, so a run killed and restarted
ends with exactly the weights of an uninterrupted run (on CPU). The fitter
(:class:`benchmarks.baselines.mdm.MDMFitter`) loads the result.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import math
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from benchmarks.baselines.mdm import (CHECKPOINT_FORMAT, CHECKPOINT_NAME, LOG_NAME, N_POINTS, PRESETS,
                                      RESUMABLE_CHANGES, MDMCheckpointError, MDMNet, _config_to_dict,
                                      load_checkpoint, make_config, mdm_loss)
from benchmarks.baselines.mdm_frame import (align_to_box, apply_affine, compose, frame_transform, mean_shape,
                                            shape_spread, warp_to_frame)
from densereg.data import datasets
from densereg.data.formats import atomic_write_bytes
from densereg.nn.checkpoint import save_checkpoint
from densereg.geometry import mirror


# ----------------------------------------------------------------------------------------------------------------
# Training data: GT-normalised crops, augmented per step


def _fingerprint(samples):
    digest = hashlib.sha1()
    for sample in samples:
        digest.update(sample.name.encode())
        digest.update(np.ascontiguousarray(sample.landmarks, dtype=np.float64).tobytes())
    return digest.hexdigest()


def _prepare_crops(samples, mean, config, progress):
    """Each training image cut to a square crop, 1.25 frames wide, in which its GT has the reference size.

    Doing this once keeps only small uint8 crops in memory (real 300-W photos are large) and leaves the
    per-step augmentation a mild resampling of each crop.
    """
    size = int(round(config.frame_size * 1.25))
    reference = shape_spread(mean)
    crops = np.empty((len(samples), size, size, 3), np.uint8)
    shapes = np.empty((len(samples), len(mean), 2))
    iterator = samples
    if progress:
        from tqdm import tqdm
        iterator = tqdm(samples, desc="MDM: preparing crops", unit="img", file=sys.stderr)
    for i, sample in enumerate(iterator):
        affine = frame_transform(sample.landmarks, reference, size)
        crops[i] = warp_to_frame(sample.image(), affine, size)
        shapes[i] = apply_affine(affine, sample.landmarks)
    return crops, shapes


def _distort_colour(frame, rng, config):
    """MDM's colour distortion on a float RGB frame in [0, 1], then noise and clipping.

    ``distort_color`` has two op orders chosen by a preprocessing thread id, but the training script calls it
    with the default id 0, so every published sample took order 0: brightness, saturation, hue, contrast.
    """
    delta, sat, hue, con = (rng.uniform(-config.brightness, config.brightness), rng.uniform(*config.saturation),
                            rng.uniform(-config.hue, config.hue), rng.uniform(*config.contrast))
    noise = rng.standard_normal(frame.shape).astype(np.float32) * config.noise

    def brightness(x):
        return x + delta

    def contrast(x):
        mean = x.mean(axis=(0, 1), keepdims=True)
        return (x - mean) * con + mean

    def sat_hue(x):   # saturation and hue act in HSV; cv2's float HSV has H in degrees
        hsv = cv2.cvtColor(np.clip(x, 0, 1), cv2.COLOR_RGB2HSV)
        hsv[..., 1] = np.clip(hsv[..., 1] * sat, 0, 1)
        hsv[..., 0] = (hsv[..., 0] + 360.0 * hue) % 360.0
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)

    for op in (brightness, sat_hue, contrast):
        frame = op(frame)
    return np.clip(frame + noise, 0.0, 1.0)


def augmented_sample(crop, gt, mean, config, rng):
    """One training example drawn as published: mirror, rotate, perturbed box → initial shape, colour.

    Args:
        crop: ``S×S×3`` uint8 GT-normalised crop; gt: its ``(68, 2)`` landmarks; mean: the mean shape.
        rng: the step's generator (every random number is drawn whatever the branch, in a fixed order).

    Returns:
        ``(frame (F, F, 3) float32 in [0, 1], gt (68, 2), initial (68, 2))`` in frame pixels.
    """
    flip, rotate = rng.random() < config.mirror_p, rng.random() < config.rotation_p
    theta = math.radians(rng.normal(0.0, config.rotation_sigma)) if rotate else 0.0
    corner_noise = np.clip(rng.standard_normal(4), -3, 3) * config.box_noise
    blend, weight = rng.random() < config.blend_p, rng.random()
    point_noise = np.clip(rng.standard_normal((len(gt), 2)), -3, 3) * config.point_noise
    size = crop.shape[0]
    if flip:
        crop, gt = crop[:, ::-1], mirror.mirror_landmarks(gt, size)
    c = (size - 1) / 2.0
    cos, sin = math.cos(theta), math.sin(theta)
    rotation = np.array([[cos, -sin, c - cos * c + sin * c], [sin, cos, c - sin * c - cos * c]])
    gt_rotated = apply_affine(rotation, gt)
    box = datasets.landmarks_box(gt_rotated)
    wh = np.tile(box[2:] - box[:2], 2)
    initial = align_to_box(mean, box + corner_noise * wh)
    if blend:   # a start between the box's mean shape and a noisy ground truth (see MDMConfig.blend_p)
        noisy = gt_rotated + point_noise * np.linalg.norm(box[2:] - box[:2])
        initial = weight * initial + (1.0 - weight) * noisy
    to_frame = frame_transform(initial, shape_spread(mean), config.frame_size)
    affine = compose(to_frame, rotation)
    frame = warp_to_frame(np.ascontiguousarray(crop), affine, config.frame_size).astype(np.float32) / 255.0
    frame = _distort_colour(frame, rng, config)
    return frame, apply_affine(affine, gt), apply_affine(to_frame, initial)


def _batch(crops, shapes, mean, config, step):
    """The batch of ``step``: indices and augmentation from ``default_rng([seed, step])`` only."""
    rng = np.random.default_rng([config.seed, step])
    index = rng.integers(len(crops), size=config.batch_size)
    frames, gts, inits = zip(*(augmented_sample(crops[i], shapes[i], mean, config, rng) for i in index))
    as_tensor = lambda a: torch.from_numpy(np.stack(a).astype(np.float32))  # noqa: E731
    return as_tensor(frames).permute(0, 3, 1, 2).contiguous(), as_tensor(gts), as_tensor(inits)


# ----------------------------------------------------------------------------------------------------------------
# Training


def _read_log(path, before_step):
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [row for row in csv.DictReader(f) if int(row["step"]) < before_step]


def _write_log(path, rows):
    if not rows:
        return
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(path, text.getvalue().encode())


def train_threads():
    """Torch threads of an MDM training: ``$DENSEREG_MDM_THREADS``, default 1. One suits the ``cpu`` preset (its
    15×15 patch layers are too small to share) and makes runs repeatable; the published network on a many-core
    machine wants more (the thread count is not part of the artefact's key)."""
    value = os.environ.get("DENSEREG_MDM_THREADS", "1")
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"DENSEREG_MDM_THREADS must be a positive integer, got {value!r}")
    return int(value)


def train_mdm(samples, out_dir, config=None, progress=True):
    """Train MDM on ``samples`` (annotated 68-point faces), resuming from ``out_dir/mdm.pt`` when present.

    Writes ``out_dir/mdm.pt`` (atomically, every ``checkpoint_every`` iterations and at the end) and
    ``out_dir/mdm_log.csv`` (per iteration: total loss, NME after each step, learning rate, seconds).
    Re-running after an interruption continues from the last checkpoint with identical results; re-running a
    finished training returns at once; a larger ``iterations`` continues it.

    Returns:
        the checkpoint path.

    Raises:
        MDMCheckpointError: the existing checkpoint is corrupt, or was trained with another config or data.
        ValueError: a sample without 68 landmarks.
    """
    config = config or make_config("paper")
    out_dir = Path(out_dir)
    path, log_path = out_dir / CHECKPOINT_NAME, out_dir / LOG_NAME
    n_points = N_POINTS if not samples or samples[0].landmarks is None else len(samples[0].landmarks)
    bad = [s.name for s in samples if s.landmarks is None or np.shape(s.landmarks) != (n_points, 2)]
    if bad or not samples:
        raise ValueError(f"MDM needs annotated {n_points}-point training samples; {len(bad)} of {len(samples)} are not "
                         f"(e.g. {bad[:3]})")
    fingerprint = _fingerprint(samples)
    mean = mean_shape([s.landmarks for s in samples], config.reference_diagonal)

    torch.manual_seed(config.seed)
    model = MDMNet(config, n_points=n_points)
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()} if config.ema_decay > 0 else None
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    start = 0
    if path.exists():
        state = load_checkpoint(path)
        stored, wanted = _config_to_dict(state["config"]), _config_to_dict(config)
        changed = sorted(k for k in wanted if stored[k] != wanted[k] and k not in RESUMABLE_CHANGES)
        if changed:
            settings = ", ".join(f"{k}={stored[k]}" for k in changed)
            raise MDMCheckpointError(f"{path}: trained with other settings ({settings}); use another --out or "
                                     "delete it")
        if state["data"]["fingerprint"] != fingerprint:
            raise MDMCheckpointError(f"{path}: trained on other data ({state['data']['n_samples']} samples); "
                                     "use another --out or delete it")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        ema, start = state["ema"], state["step"]
        torch.set_rng_state(state["rng"]["torch"])
        mean = state["mean_shape"].numpy()
    if start >= config.iterations:
        return path

    def save(step):
        state = {"config": _config_to_dict(config), "step": step,
                 "mean_shape": torch.from_numpy(mean), "model": model.state_dict(), "ema": ema,
                 "optimizer": optimizer.state_dict(), "rng": {"torch": torch.get_rng_state()},
                 "data": {"fingerprint": fingerprint, "n_samples": len(samples)}}
        save_checkpoint(path, state, kind=CHECKPOINT_FORMAT)
        _write_log(log_path, log)

    log = _read_log(log_path, start)
    crops, shapes = _prepare_crops(samples, mean, config, progress)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=config.iterations, initial=start, desc="MDM: training", unit="it", file=sys.stderr)
    model.train()
    threads = torch.get_num_threads()
    # A fixed thread count (TRAIN_THREADS) makes the weights the same whichever way the harness trains them
    # (alone, or beside DenseReg's training in ./reproduce.sh): two runs on one thread gave identical weights.
    torch.set_num_threads(train_threads())
    try:
        _train_steps(model, optimizer, ema, log, crops, shapes, mean, config, start, bar, save)
    finally:
        torch.set_num_threads(threads)
    if bar is not None:
        bar.close()
    return path


def _train_steps(model, optimizer, ema, log, crops, shapes, mean, config, start, bar, save):
    """The iterations ``start..config.iterations`` of :func:`train_mdm` (checkpointed through ``save``)."""
    for step in range(start, config.iterations):
        tick = time.perf_counter()
        lr = config.learning_rate * config.lr_decay ** (step // config.lr_decay_every)
        for group in optimizer.param_groups:
            group["lr"] = lr
        frames, target, initial = _batch(crops, shapes, mean, config, step)
        losses = mdm_loss(model(frames, initial), target, config.iod_floor)
        if not torch.isfinite(losses["loss"]):
            raise FloatingPointError(f"MDM loss is {losses['loss'].item()} at iteration {step}; lower the "
                                     "learning rate (the last good checkpoint is kept)")
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        optimizer.step()
        if ema is not None:   # TensorFlow's ExponentialMovingAverage with num_updates
            decay = min(config.ema_decay, (1.0 + step) / (10.0 + step))
            with torch.no_grad():
                for name, value in model.state_dict().items():
                    ema[name].mul_(decay).add_(value, alpha=1.0 - decay)
        row = {"step": step, "loss": f"{losses['loss'].item():.6f}"}
        row.update({f"nme_step{i + 1}": f"{e:.6f}" for i, e in enumerate(losses["step_errors"].tolist())})
        row.update({"lr": f"{lr:.3g}", "seconds": f"{time.perf_counter() - tick:.3f}"})
        log.append(row)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=row["loss"], nme=row[f"nme_step{config.steps}"])
        if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.iterations:
            save(step + 1)


# ----------------------------------------------------------------------------------------------------------------
# Command line


def main(argv=None):
    """Train MDM on a dataset split and write ``OUT/mdm.pt`` (resumes when it exists)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.baselines.mdm_train",
                                     description="train (or resume training) MDM; writes OUT/mdm.pt")
    parser.add_argument("--root", type=Path, required=True, help="data root in the 300-W layout")
    parser.add_argument("--out", type=Path, required=True, help="output folder for mdm.pt and mdm_log.csv")
    parser.add_argument("--dataset", default="300w", choices=sorted(datasets.DATASETS))
    parser.add_argument("--split", default="train")
    parser.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    parser.add_argument("--iterations", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    config = make_config(args.preset, iterations=args.iterations, seed=args.seed)
    samples = [s for s in datasets.load_dataset(args.dataset, args.root, args.split) if s.landmarks is not None]
    tick = time.perf_counter()
    path = train_mdm(samples, args.out, config, progress=not args.quiet)
    print(f"MDM ({args.preset} preset, {len(samples)} {args.dataset}/{args.split} faces): {path} "
          f"({time.perf_counter() - tick:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
