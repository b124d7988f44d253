"""Mnemonic Descent Method (Trigeorgis et al., CVPR 2016) in PyTorch: a landmark fitter ``(image, shape) → 68×2``.

    python -m benchmarks.baselines.mdm train --root ROOT --out DIR [--preset cpu|paper] [--iterations N]

Paper Sec. 4.3 of DenseReg initialises MDM with DenseReg's landmarks. MDM is a recurrent cascade: at each of
4 steps it samples a 30×30 patch around every current landmark, runs a small CNN shared by all patches and
steps (conv 3×3×32 → ReLU → max-pool 2 → conv 3×3×32 → ReLU → max-pool 2, features = the second pool
concatenated with the equally sized central crop of the second conv), concatenates the features of all 68
patches with the previous hidden state into ``h = tanh(FC_512([features, h]))`` and adds ``Δx = FC_136(h)``
to the shape. The loss is the mean point-to-point error over the outer-eye-corner distance, summed over the
steps. Those are the published code's settings (``reference/anchors.md`` §2), kept in :class:`MDMConfig`.

Images are normalised as MDM does: a similarity maps the image to a square *frame* in which the initial shape
has the size of the reference (mean) shape, whose bounding-box diagonal is 200 px (MDM's
``compute_reference_shape(diagonal=200)``), centred in the frame. Training draws the initial shape the way the
published code does: the mean shape aligned (translation + scale) to a perturbed ground-truth box, after
mirroring (p = 0.5) and rotating (p = 0.5, θ ~ N(0, 10°)) the image, then distorts colours (brightness, contrast,
saturation, hue) and adds Gaussian noise (σ = 0.1 on [0, 1] pixels, then clipped), RGB input, no further
per-image normalisation (the ``cpu`` preset standardises each frame, see :data:`PRESETS`). Published MDM synthesised boxes from a PCA model of real detector boxes; with no
detector at training time we perturb each box corner by independent Gaussian noise (``box_noise`` × box side),
which gives translation, scale and aspect jitter of the same kind.

Training (:func:`train_mdm`) is resumable: a checkpoint holds weights, Adam state, EMA weights, the step and
the config; batches and augmentation come from ``numpy.random.default_rng([seed, step])``, so a run killed and
restarted ends with exactly the weights of an uninterrupted run (on CPU). :class:`MDMFitter` loads the result.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import math
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from densereg.data import datasets, formats
from densereg.geometry import mirror
from densereg.registry import lookup

N_POINTS = 68
OUTER_EYE = (36, 45)          # 0-based outer eye corners: the loss's normaliser
CHECKPOINT_FORMAT = "benchmarks.baselines.mdm/1"
CHECKPOINT_NAME = "mdm.pt"
LOG_NAME = "mdm_log.csv"
TRAIN_COMMAND = "python -m benchmarks.baselines.mdm train --root ROOT --out DIR"


@dataclass(frozen=True)
class MDMConfig:
    """MDM hyper-parameters; defaults are the published code's (``trigeorgis/mdm``, anchors.md §2).

    Attributes:
        patch_size: side of the square patch sampled around each landmark, in frame pixels.
        steps: recurrent descent steps.
        hidden: size of the recurrent state.
        conv_channels: filters of each of the two 3×3 conv layers.
        reference_diagonal: bounding-box diagonal of the mean shape in the frame (MDM: 200).
        frame_size: side of the normalised frame; holds the face (≈ 0.71 × diagonal wide), the box
            perturbation and half a patch of margin.
        learning_rate: Adam's initial rate (MDM: 1e-3).
        lr_decay: factor applied every ``lr_decay_every`` iterations (staircase; MDM: 0.1 per 15k).
        lr_decay_every: see ``lr_decay``.
        batch_size: images per iteration (MDM: 60).
        iterations: training iterations (MDM: 100k).
        ema_decay: exponential moving average of the weights used by the fitter, with TensorFlow's
            ``min(decay, (1 + n) / (10 + n))`` warm-up (MDM: 0.9999); 0 disables it.
        box_noise: std of each perturbed box corner, as a fraction of the box's width/height.
        mirror_p: probability of a horizontal flip (68-point mirror permutation applied to the labels).
        rotation_p: probability of an in-plane rotation ...
        rotation_sigma: ... of N(0, rotation_sigma) degrees.
        brightness: additive brightness offset ~ U(-b, b) on [0, 1] pixels (MDM: 32/255).
        contrast: contrast factor range (MDM: 0.5-1.5).
        saturation: saturation factor range (MDM: 0.5-1.5).
        hue: hue offset ~ U(-hue, hue), in turns of the colour circle (MDM: 0.2).
        noise: std of the additive Gaussian pixel noise (MDM: 0.1).
        iod_floor: the loss divides by ``max(outer-eye distance, iod_floor × GT box diagonal)``; 0 is MDM's
            loss. On 300-W the eye distance is ≥ 0.2 box diagonals for all but a few faces, but the synthetic
            benchmark has profiles down to 0.02, whose errors would be blown up 10× and rule the gradient.
        standardise: scale each frame to zero mean and unit variance before the network (MDM feeds raw
            [0, 1] pixels); speeds up the short CPU training.
        seed: seeds the weights and, with the step, every batch and augmentation.
        checkpoint_every: iterations between checkpoints (and log writes).
    """

    patch_size: int = 30
    steps: int = 4
    hidden: int = 512
    conv_channels: int = 32
    reference_diagonal: float = 200.0
    frame_size: int = 256
    learning_rate: float = 1e-3
    lr_decay: float = 0.1
    lr_decay_every: int = 15000
    batch_size: int = 60
    iterations: int = 100000
    ema_decay: float = 0.9999
    box_noise: float = 0.07
    mirror_p: float = 0.5
    rotation_p: float = 0.5
    rotation_sigma: float = 10.0
    brightness: float = 32.0 / 255.0
    contrast: tuple = (0.5, 1.5)
    saturation: tuple = (0.5, 1.5)
    hue: float = 0.2
    noise: float = 0.1
    iod_floor: float = 0.0
    standardise: bool = False
    seed: int = 0
    checkpoint_every: int = 1000


# Named overrides of the published defaults. "cpu" must train in about 3 minutes on this 2-core machine on the
# ~3000-image synthetic training split. Measured (torch 2.13 CPU, 2 busy cores): the published network costs
# ~0.6 s per image per iteration (80M parameters, most of the time in the 3→32 conv over 68 patches of 30×30),
# i.e. under 300 image-iterations in 3 minutes, far too few to learn anything. The cpu preset therefore keeps
# the architecture's structure (two conv layers + pools + crop concat, tanh recurrence, 4 steps, same loss and
# augmentation) at half the resolution (diagonal 100, 15×15 patches: the same field of view relative to the
# face) and 16 filters, which costs ~0.02 s per image-iteration (0.27 s per 16-image iteration at load ~2.5;
# 700 iterations ≈ 3 min; on the same machine at load 8-9 it was 3.3 s per iteration). Two further departures
# make so short a run learn: frames are standardised per image, and the loss's eye distance is floored at
# 0.2 box diagonals (the synthetic set's profiles have eye distances down to 0.02 diagonals; see iod_floor).
PRESETS = {
    "paper": {},
    "cpu": dict(patch_size=15, reference_diagonal=100.0, frame_size=128, conv_channels=16, batch_size=16,
                iterations=700, learning_rate=1e-3, lr_decay_every=500, ema_decay=0.99, checkpoint_every=100,
                iod_floor=0.2, standardise=True),
    # Two iterations of a miniature network: for contract tests of the harness, not for accuracy.
    "tiny": dict(patch_size=14, reference_diagonal=60.0, frame_size=80, conv_channels=4, hidden=16, batch_size=2,
                 iterations=2, checkpoint_every=2, iod_floor=0.2, standardise=True),
}

# Config fields that may change when a checkpoint is resumed (they do not alter the steps already taken).
RESUMABLE_CHANGES = ("iterations", "checkpoint_every")


def make_config(preset="paper", **overrides):
    """The config of ``preset`` (a key of :data:`PRESETS`) with ``overrides`` (None values ignored)."""
    values = {**lookup(PRESETS, preset, "MDM preset"), **{k: v for k, v in overrides.items() if v is not None}}
    return MDMConfig(**values)


def _config_to_dict(config):
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()}


def _config_from_dict(values, path):
    names = {f.name for f in fields(MDMConfig)}
    if set(values) != names:
        raise MDMCheckpointError(f"{path}: config keys {sorted(set(values) ^ names)} do not match this MDM "
                                 f"version; rebuild it with: {TRAIN_COMMAND}")
    return MDMConfig(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items()})


class MDMCheckpointError(ValueError):
    """An MDM checkpoint is missing, corrupt or does not match the requested training; names the file."""


# ----------------------------------------------------------------------------------------------------------------
# Shapes and the normalised frame


def mean_shape(shapes, diagonal):
    """Mean of ``(K, 68, 2)`` shapes, each first normalised by its bounding box (centre → 0, diagonal → 1).

    No Procrustes alignment: box normalisation is what aligning to a face box undoes. The result is rescaled
    so its own bounding box has diagonal ``diagonal`` and is centred on the origin.
    """
    shapes = np.asarray(shapes, dtype=np.float64)
    lo, hi = shapes.min(axis=1, keepdims=True), shapes.max(axis=1, keepdims=True)
    normed = (shapes - (lo + hi) / 2) / np.linalg.norm(hi - lo, axis=2, keepdims=True)
    mean = normed.mean(axis=0)
    lo, hi = mean.min(axis=0), mean.max(axis=0)
    return (mean - (lo + hi) / 2) * (diagonal / np.linalg.norm(hi - lo))


def align_to_box(shape, box):
    """``shape`` translated and scaled so its bounding box has the centre and diagonal of ``(x0, y0, x1, y1)``."""
    box = np.asarray(box, dtype=np.float64)
    lo, hi = shape.min(axis=0), shape.max(axis=0)
    ratio = np.linalg.norm(box[2:] - box[:2]) / np.linalg.norm(hi - lo)
    return (shape - (lo + hi) / 2) * ratio + (box[:2] + box[2:]) / 2


def _spread(shape):
    """Frobenius norm of the centred shape: the size MDM normalises (menpo's ``rescale_to_pointcloud``)."""
    return float(np.linalg.norm(shape - shape.mean(axis=0)))


def frame_transform(shape, reference_spread, frame_size):
    """2×3 affine (image → frame) scaling ``shape`` to ``reference_spread`` with its centroid at the centre."""
    spread = _spread(shape)
    if not np.isfinite(spread) or spread <= 0:
        raise ValueError(f"cannot normalise a degenerate or non-finite shape (spread {spread})")
    s, centre = reference_spread / spread, (frame_size - 1) / 2.0
    cx, cy = shape.mean(axis=0)
    return np.array([[s, 0.0, centre - s * cx], [0.0, s, centre - s * cy]])


def apply_affine(affine, points):
    """Apply a 2×3 affine to ``(N, 2)`` points."""
    return points @ affine[:, :2].T + affine[:, 2]


def _compose(outer, inner):
    """The 2×3 affine ``outer ∘ inner``."""
    return np.hstack([outer[:, :2] @ inner[:, :2], (outer[:, :2] @ inner[:, 2] + outer[:, 2])[:, None]])


def _invert(affine):
    linear = np.linalg.inv(affine[:, :2])
    return np.hstack([linear, -(linear @ affine[:, 2])[:, None]])


def warp_to_frame(image, affine, size):
    """Resample ``image`` (H×W×C) into a ``size×size`` frame through the image→frame ``affine`` (bilinear).

    Shrinking by more than 4/3 first area-averages the region the frame covers (bilinear sampling alone would
    alias, e.g. on large real photos); outside the image is 0. Pixel centres are integers on both sides.
    """
    scale = math.sqrt(abs(np.linalg.det(affine[:, :2])))
    if scale < 0.75:
        corners = apply_affine(_invert(affine), np.array([[0, 0], [size, 0], [0, size], [size, size]], float))
        x0, y0 = np.maximum(np.floor(corners.min(axis=0)).astype(int) - 2, 0)
        x1, y1 = np.minimum(np.ceil(corners.max(axis=0)).astype(int) + 3, [image.shape[1], image.shape[0]])
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            w, h = max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale))
            image = cv2.resize(image[y0:y1, x0:x1], (w, h), interpolation=cv2.INTER_AREA)
            fx, fy = w / (x1 - x0), h / (y1 - y0)
            to_small = np.array([[fx, 0.0, (0.5 - x0) * fx - 0.5], [0.0, fy, (0.5 - y0) * fy - 0.5]])
            affine = _compose(affine, _invert(to_small))
    return cv2.warpAffine(image, affine, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=0)


def extract_patches(frames, points, size):
    """Bilinear ``size×size`` patches centred on each point (zeros outside the frame).

    Args:
        frames: ``(B, C, H, W)`` tensor.
        points: ``(B, N, 2)`` ``(x, y)`` pixel positions; patch pixel ``(r, c)`` samples
            ``(x + c − (size−1)/2, y + r − (size−1)/2)``. No gradient flows to the positions (as in MDM).
        size: patch side.

    Returns:
        ``(B, N, C, size, size)`` tensor.
    """
    b, c, h, w = frames.shape
    n = points.shape[1]
    offsets = torch.arange(size, dtype=frames.dtype) - (size - 1) / 2
    xs = points.detach()[:, :, None, None, 0] + offsets[None, None, None, :]       # (B, N, 1, S)
    ys = points.detach()[:, :, None, None, 1] + offsets[None, None, :, None]       # (B, N, S, 1)
    grid = torch.stack(torch.broadcast_tensors(2 * xs / (w - 1) - 1, 2 * ys / (h - 1) - 1), dim=-1)
    sampled = F.grid_sample(frames, grid.reshape(b, n * size, size, 2), mode="bilinear", padding_mode="zeros",
                            align_corners=True)                                     # (B, C, N*S, S)
    return sampled.reshape(b, c, n, size, size).permute(0, 2, 1, 3, 4)


# ----------------------------------------------------------------------------------------------------------------
# The network and its loss


class MDMNet(nn.Module):
    """The MDM recurrent convolutional regressor (see the module docstring)."""

    def __init__(self, config, n_points=N_POINTS, in_channels=3):
        super().__init__()
        self.patch_size, self.steps, self.n_points = config.patch_size, config.steps, n_points
        self.standardise = config.standardise
        if config.patch_size < 10:
            raise ValueError(f"patch_size must be at least 10 for two conv+pool layers, got {config.patch_size}")
        ch = config.conv_channels
        self.conv1 = nn.Conv2d(in_channels, ch, 3)     # VALID padding, as published
        self.conv2 = nn.Conv2d(ch, ch, 3)
        pooled = ((config.patch_size - 2) // 2 - 2) // 2
        self.feature_size = 2 * ch * pooled * pooled
        self.rnn = nn.Linear(n_points * self.feature_size + config.hidden, config.hidden)
        self.predict = nn.Linear(config.hidden, 2 * n_points)
        # MDM's (Inception-slim) initialisation: truncated N(0, 0.01²) weights, zero biases. It matters: with
        # PyTorch's fan-in defaults the conv features are ~100× larger, and Adam's first steps on the 10⁴-10⁵
        # inputs of the recurrent layer saturate its tanh at once (the network then learns only a mean update).
        for layer in (self.conv1, self.conv2, self.rnn, self.predict):
            nn.init.trunc_normal_(layer.weight, std=0.01, a=-0.02, b=0.02)
            nn.init.zeros_(layer.bias)

    def patch_features(self, patches):
        """``(P, C, S, S)`` patches → ``(P, feature_size)``: pool_2 with the central crop of conv_2 beside it."""
        conv2 = F.relu(self.conv2(F.max_pool2d(F.relu(self.conv1(patches)), 2)))
        pool2 = F.max_pool2d(conv2, 2)
        k, start = pool2.shape[-1], (conv2.shape[-1] - pool2.shape[-1]) // 2
        crop = conv2[..., start:start + k, start:start + k]
        return torch.cat([crop, pool2], dim=1).flatten(1)

    def forward(self, frames, initial):
        """Run the descent steps.

        Args:
            frames: ``(B, 3, H, W)`` normalised frames, RGB in [0, 1] (standardised here if configured).
            initial: ``(B, 68, 2)`` initial shapes in frame pixels.

        Returns:
            list of ``steps`` tensors ``(B, 68, 2)``: the estimate after each step.
        """
        b = frames.shape[0]
        if self.standardise:
            frames = (frames - frames.mean(dim=(1, 2, 3), keepdim=True)) / (
                frames.std(dim=(1, 2, 3), keepdim=True) + 1e-6)
        shape = initial
        hidden = frames.new_zeros(b, self.rnn.out_features)
        estimates = []
        for _ in range(self.steps):
            patches = extract_patches(frames, shape, self.patch_size)
            features = self.patch_features(patches.flatten(0, 1)).reshape(b, -1)
            hidden = torch.tanh(self.rnn(torch.cat([features, hidden], dim=1)))
            shape = shape + self.predict(hidden).reshape(b, self.n_points, 2)
            estimates.append(shape)
        return estimates


def mdm_loss(estimates, target, iod_floor=0.0):
    """MDM's loss: Σ over steps of the batch mean of (mean point-to-point error / outer-eye-corner distance).

    ``iod_floor`` > 0 bounds the normaliser below by that fraction of the GT bounding-box diagonal.

    Returns:
        dict with ``loss`` (scalar, to minimise) and ``step_errors`` (``(steps,)``, detached batch-mean NMEs).
    """
    iod = torch.linalg.vector_norm(target[:, OUTER_EYE[0]] - target[:, OUTER_EYE[1]], dim=-1)
    if iod_floor > 0:
        diagonal = torch.linalg.vector_norm(target.amax(dim=1) - target.amin(dim=1), dim=-1)
        iod = torch.maximum(iod, iod_floor * diagonal)
    errors = torch.stack([(torch.linalg.vector_norm(e - target, dim=-1).mean(dim=1) / iod).mean()
                          for e in estimates])
    return {"loss": errors.sum(), "step_errors": errors.detach()}


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
    reference = _spread(mean)
    crops = np.empty((len(samples), size, size, 3), np.uint8)
    shapes = np.empty((len(samples), N_POINTS, 2))
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
    """MDM's colour distortion on a float RGB frame in [0, 1]: one of its two op orders, noise, clip."""
    order = rng.integers(2)
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

    ops = (brightness, sat_hue, contrast) if order == 0 else (brightness, contrast, sat_hue)
    for op in ops:
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
    to_frame = frame_transform(initial, _spread(mean), config.frame_size)
    affine = _compose(to_frame, rotation)
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
# Checkpoints


def _atomic_write(path, write):
    """Call ``write(file)`` on a temporary file beside ``path``, then ``os.replace`` it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path):
    """Read an MDM checkpoint with ``weights_only=True`` and check its layout.

    Raises:
        MDMCheckpointError: missing, unreadable or not an MDM checkpoint; the message names the file and the
            command that rebuilds it.
    """
    path = Path(path)
    if not path.is_file():
        raise MDMCheckpointError(f"{path}: no MDM checkpoint here; build it with: {TRAIN_COMMAND}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for truncated or foreign files
        raise MDMCheckpointError(f"{path}: corrupt or unreadable MDM checkpoint ({type(e).__name__}: {e}); "
                                 f"delete it and rebuild with: {TRAIN_COMMAND}") from e
    required = {"format", "config", "mean_shape", "model", "ema", "optimizer", "step", "data", "rng"}
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT or not required <= set(state):
        raise MDMCheckpointError(f"{path}: not a {CHECKPOINT_FORMAT} checkpoint; rebuild with: {TRAIN_COMMAND}")
    state["config"] = _config_from_dict(state["config"], path)
    return state


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
    _atomic_write(path, lambda f: f.write(text.getvalue().encode()))


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
    bad = [s.name for s in samples if s.landmarks is None or np.shape(s.landmarks) != (N_POINTS, 2)]
    if bad or not samples:
        raise ValueError(f"MDM needs annotated 68-point training samples; {len(bad)} of {len(samples)} are not "
                         f"(e.g. {bad[:3]})")
    fingerprint = _fingerprint(samples)
    mean = mean_shape([s.landmarks for s in samples], config.reference_diagonal)

    torch.manual_seed(config.seed)
    model = MDMNet(config)
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
        state = {"format": CHECKPOINT_FORMAT, "config": _config_to_dict(config), "step": step,
                 "mean_shape": torch.from_numpy(mean), "model": model.state_dict(), "ema": ema,
                 "optimizer": optimizer.state_dict(), "rng": {"torch": torch.get_rng_state()},
                 "data": {"fingerprint": fingerprint, "n_samples": len(samples)}}
        _atomic_write(path, lambda f: torch.save(state, f))
        _write_log(log_path, log)

    log = _read_log(log_path, start)
    crops, shapes = _prepare_crops(samples, mean, config, progress)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=config.iterations, initial=start, desc="MDM: training", unit="it", file=sys.stderr)
    model.train()
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
    if bar is not None:
        bar.close()
    return path


# ----------------------------------------------------------------------------------------------------------------
# The fitter


class MDMFitter:
    """A trained MDM as a harness fitter: ``fitter(image, shape) → (68, 2)``.

    Attributes:
        config: the training config; mean: the mean shape (frame units, centred on 0);
        mirror: also fit the mirrored image and average (what ``mdm_eval.py`` reports); off by default.
    """

    def __init__(self, model, config, mean, mirror=False):
        self.model, self.config, self.mean, self.mirror = model.eval(), config, mean, mirror
        self._reference = _spread(mean)

    @classmethod
    def load(cls, path, mirror=False):
        """Load ``path`` (written by :func:`train_mdm`), using the EMA weights when it has them."""
        state = load_checkpoint(path)
        model = MDMNet(state["config"])
        try:
            model.load_state_dict(state["ema"] if state["ema"] is not None else state["model"])
        except RuntimeError as e:
            raise MDMCheckpointError(f"{path}: weights do not fit the network of its config ({e}); rebuild "
                                     f"with: {TRAIN_COMMAND}") from e
        return cls(model, state["config"], state["mean_shape"].numpy(), mirror=mirror)

    def initial_shape(self, box):
        """The mean shape aligned to a face box ``(x0, y0, x1, y1)``, as MDM initialises from a detection."""
        return align_to_box(self.mean, box)

    def fit_batch(self, images, shapes):
        """Fit each ``(image, initial shape)`` pair; a non-finite initial shape (a miss) gives NaNs.

        Args:
            images: sequence of ``H×W×3`` uint8 RGB images.
            shapes: ``(B, 68, 2)`` initial shapes in image pixels.

        Returns:
            ``(B, 68, 2)`` float64 fitted shapes.
        """
        shapes = np.asarray(shapes, dtype=np.float64).reshape(len(images), N_POINTS, 2)
        result = np.full(shapes.shape, np.nan)
        valid = [i for i in range(len(images)) if np.isfinite(shapes[i]).all() and _spread(shapes[i]) > 0]
        if not valid:
            return result
        result[valid] = self._fit(images, shapes, valid)
        if self.mirror:
            flipped = [np.ascontiguousarray(im[:, ::-1]) for im in images]
            mirrored = np.stack([mirror.mirror_landmarks(s, im.shape[1]) for s, im in zip(shapes, images)])
            back = self._fit(flipped, mirrored, valid)
            back = np.stack([mirror.mirror_landmarks(b, images[i].shape[1]) for b, i in zip(back, valid)])
            result[valid] = (result[valid] + back) / 2
        return result

    def _fit(self, images, shapes, valid):
        size = self.config.frame_size
        affines = [frame_transform(shapes[i], self._reference, size) for i in valid]
        frames = np.stack([warp_to_frame(images[i], a, size) for i, a in zip(valid, affines)])
        initial = np.stack([apply_affine(a, shapes[i]) for i, a in zip(valid, affines)])
        with torch.inference_mode():
            frames_t = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div_(255.0)
            fitted = self.model(frames_t, torch.from_numpy(initial).float())[-1].double().numpy()
        return np.stack([apply_affine(_invert(a), f) for a, f in zip(affines, fitted)])

    def __call__(self, image, shape):
        """Fit one image from ``shape`` (68×2, image pixels) and return the fitted 68×2 shape."""
        return self.fit_batch([image], np.asarray(shape)[None])[0]


# ----------------------------------------------------------------------------------------------------------------
# Command line


def main(argv=None):
    """``train``: train MDM on a dataset split and write ``OUT/mdm.pt`` (resumes when it exists)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.baselines.mdm", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train (or resume training) MDM; writes OUT/mdm.pt")
    train.add_argument("--root", type=Path, required=True, help="data root in the 300-W layout")
    train.add_argument("--out", type=Path, required=True, help="output folder for mdm.pt and mdm_log.csv")
    train.add_argument("--dataset", default="300w", choices=sorted(datasets.DATASETS))
    train.add_argument("--split", default="train")
    train.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    train.add_argument("--iterations", type=int)
    train.add_argument("--seed", type=int)
    train.add_argument("--quiet", action="store_true", help="no progress bars")
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
