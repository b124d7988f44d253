"""Mnemonic Descent Method (Trigeorgis et al., CVPR 2016) in PyTorch: a landmark fitter ``(image, shape) → 68×2``.

(trained by ``python -m benchmarks.baselines.mdm_train --root ROOT --out DIR [--preset cpu|paper]``)

DenseReg (Sec. 4.3) refines its landmarks with MDM, a recurrent cascade: at each of 4 steps it samples a 30×30
patch around every current landmark, runs a small CNN shared by all patches and steps (conv 3×3×32 → ReLU →
max-pool 2 → conv 3×3×32 → ReLU → max-pool 2; features = the second pool beside the equally sized central crop
of the second conv), feeds the 68 patches' features and the previous state to ``h = tanh(FC_512([f, h]))``
and adds ``Δx = FC_136(h)`` to the shape. The loss is the mean point-to-point error over the outer-eye-corner
distance, summed over the steps. The ``paper`` preset is the authors' code (``trigeorgis/mdm`` @ ae82d89,
``reference/anchors.md`` §2); where ours or a preset departs from it:

==========================  ============================================  ======================================
item                        published code                                ours (preset): reason
==========================  ============================================  ======================================
training data               LFPW-train + AFW + HELEN-train (3148 faces)   the dataset's train split (synthetic
                                                                          default: 3148 rendered faces)
patch / frame               30×30, reference-shape box diagonal 200       paper: same. cpu: 15×15 at diagonal
                                                                          100 (same field of view, 1/4 pixels)
conv filters                32, 32                                        cpu: 16 (CPU time)
frame of a training image   rescaled so the **GT** has the reference      the **start** has it, as at test time
                            size; the start lands near it                 (train and test frames then agree)
frame border                crop to box +30 %, random-noise padding       zeros outside the image
mean shape                  Procrustes mean (menpofit), diagonal 200      mean of box-normalised shapes: what
                                                                          aligning to a box inverts
training starts             mean shape aligned to a box drawn from a      GT box, each corner + N(0, 0.07 side):
                            PCA model of real detector boxes / GT box     no detector at training time. cpu:
                                                                          half the starts blended towards a
                                                                          noisy GT (``blend_p``), see below
colour                      order 0 of ``distort_color`` (thread id 0)    same order
input pixels                RGB in [0, 1]                                 cpu: each frame standardised (a short
                                                                          run learns faster)
loss normaliser             outer-eye distance                            cpu: floored at 0.2 box diagonals
                                                                          (synthetic profiles reach 0.02; their
                                                                          errors ×10 would rule the gradient)
schedule                    Adam 1e-3, ×0.1 per 15k, batch 60, 100k       cpu: see :data:`PRESETS`
EMA of the weights          0.9999 (TF warm-up), used at evaluation       cpu: 0.99 (0.9999 over a few thousand
                                                                          steps is mostly the initial weights)
patch sampling              custom TF op (author's TF fork)               bilinear ``grid_sample``, no gradient
                                                                          to the positions
evaluation                  prediction averaged with the mirrored         ``MDMFitter(mirror=True)``; off in
                            image's (``mdm_eval.py``)                     the harness (one pass, as fitted)
==========================  ============================================  ======================================

Why the cpu preset blends its starts: the published starts are all a mean shape in a box, so the first step
learns "mean shape → this face", and given DenseReg's landmarks (already face-shaped, partly right) it moves
them little or back. Measured on 200 synthetic test faces, 1400 iterations ×0.1 at 1000, box starts only vs
blended: the first step takes DenseReg's mean error 0.109 → 0.107 vs → 0.093, and AUC@0.1 ends 0.45 vs 0.51
from DenseReg's landmarks and 0.49 vs 0.54 from a jittered GT box (the blend helps from boxes too).

Images are normalised in :mod:`benchmarks.baselines.mdm_frame`. Training, augmentation and the resumable
checkpoints are in :mod:`benchmarks.baselines.mdm_train`; :class:`MDMFitter` loads the result
(:func:`load_checkpoint`: ``weights_only``, layout and config checked). MDM alone is checked by
:mod:`benchmarks.experiments.mdm_alone`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.baselines.mdm_frame import (align_to_box, apply_affine, extract_patches, frame_transform, invert,
                                            shape_spread, warp_to_frame)
from densereg.data.workers import single_threaded
from densereg.geometry import mirror
from densereg.nn.checkpoint import read_checkpoint
from densereg.registry import lookup

N_POINTS = 68                 # faces; a model of other landmarks (ears: 55) takes its count from its mean shape
OUTER_EYE = (36, 45)          # 0-based outer eye corners: the loss's normaliser (68 points)
CHECKPOINT_FORMAT = "benchmarks.baselines.mdm/1"
CHECKPOINT_NAME = "mdm.pt"
LOG_NAME = "mdm_log.csv"
TRAIN_COMMAND = "python -m benchmarks.baselines.mdm_train --root ROOT --out DIR"


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
        blend_p: probability that a training start is not the box's mean shape alone but ``w × it + (1 − w) ×
            (GT + point noise)``, ``w ~ U(0, 1)``: starts of every quality between a box and the answer, as an
            initialiser such as DenseReg gives (0: the published box starts only).
        point_noise: std of the independent per-point noise of those blended starts, as a fraction of the GT
            box diagonal (clipped at 3σ).
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
    blend_p: float = 0.0
    point_noise: float = 0.0
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


# Named overrides of the published defaults. "cpu" trains in about 6 minutes of one core on the ~3000-image
# synthetic training split. The published network costs ~0.6 s per image-iteration on this CPU (80M parameters,
# mostly the 3→32 conv over 68 patches of 30×30), so cpu keeps its structure at half the resolution (diagonal
# 100, 15×15 patches: the same field of view) with 16 filters: ~0.24 s per 16-image iteration on one thread
# (under load ~2.5), 1400 iterations ≈ 6 min: 22k image-steps, 0.4 % of the published 6M. Adam 1e-3 (2e-3
# stalled on a plateau in one of two runs), batch 16 (batch 8 at equal images learnt no faster), no decay within
# the 1400 iterations (×0.1 at 2000, for a longer resumed run): decaying at 1000 ended 0.02 AUC lower on both
# seeds tried. Training NME per 200 iterations (seed 0): 0.25, 0.16, 0.13, 0.11, 0.106, 0.095, 0.090. Held-out
# AUC@0.1 (first 200 synthetic test faces, seeds 0/1) at 1400 iterations: 0.57/0.56 from a jittered GT box,
# 0.52/0.52 from DenseReg's landmarks (DenseReg alone 0.34); twice the budget (2800, ×0.1 at 2000) reaches
# 0.63 / 0.56, so cpu is budget-bound. Standardised frames, ``iod_floor``, ``blend_p``: the module docstring.
PRESETS = {
    "paper": {},
    "cpu": dict(patch_size=15, reference_diagonal=100.0, frame_size=128, conv_channels=16, batch_size=16,
                iterations=1400, learning_rate=1e-3, lr_decay_every=2000, ema_decay=0.99, checkpoint_every=100,
                iod_floor=0.2, standardise=True, blend_p=0.5, point_noise=0.03),
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
    if target.shape[1] == N_POINTS:
        iod = torch.linalg.vector_norm(target[:, OUTER_EYE[0]] - target[:, OUTER_EYE[1]], dim=-1)
    else:   # other landmarks (ears): the GT box's average edge, the ears protocol's normaliser (paper Sec. 4.7)
        iod = (target.amax(dim=1) - target.amin(dim=1)).mean(dim=-1)
    if iod_floor > 0:
        diagonal = torch.linalg.vector_norm(target.amax(dim=1) - target.amin(dim=1), dim=-1)
        iod = torch.maximum(iod, iod_floor * diagonal)
    errors = torch.stack([(torch.linalg.vector_norm(e - target, dim=-1).mean(dim=1) / iod).mean()
                          for e in estimates])
    return {"loss": errors.sum(), "step_errors": errors.detach()}


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints (written by benchmarks.baselines.mdm_train)


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
        state = read_checkpoint(path, kind=CHECKPOINT_FORMAT)
    except ValueError as e:  # the one checkpoint reader names the file and says what is wrong
        raise MDMCheckpointError(f"{e}; delete it and rebuild with: {TRAIN_COMMAND}") from e
    required = {"format", "config", "mean_shape", "model", "ema", "optimizer", "step", "data", "rng"}
    if not required <= set(state):
        raise MDMCheckpointError(f"{path}: not a {CHECKPOINT_FORMAT} checkpoint; rebuild with: {TRAIN_COMMAND}")
    state["config"] = _config_from_dict(state["config"], path)
    return state


# ----------------------------------------------------------------------------------------------------------------
# The fitter


SINGLE_THREAD_MAX_BATCH = 8   # fits of at most this many images run torch on one thread (see MDMFitter._fit)


class MDMFitter:
    """A trained MDM as a harness fitter: ``fitter(image, shape) → (68, 2)``.

    Attributes:
        config: the training config; mean: the mean shape (frame units, centred on 0);
        mirror: also fit the mirrored image and average (what ``mdm_eval.py`` reports); off by default.
    """

    def __init__(self, model, config, mean, mirror=False):
        self.model, self.config, self.mean, self.mirror = model.eval(), config, mean, mirror
        self._reference = shape_spread(mean)

    @classmethod
    def load(cls, path, mirror=False):
        """Load ``path`` (written by :func:`train_mdm`), using the EMA weights when it has them."""
        state = load_checkpoint(path)
        model = MDMNet(state["config"], n_points=len(state["mean_shape"]))
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
        shapes = np.asarray(shapes, dtype=np.float64).reshape(len(images), len(self.mean), 2)
        result = np.full(shapes.shape, np.nan)
        valid = [i for i in range(len(images)) if np.isfinite(shapes[i]).all() and shape_spread(shapes[i]) > 0]
        if not valid:
            return result
        result[valid] = self._fit(images, shapes, valid)[-1]
        if self.mirror:
            flipped = [np.ascontiguousarray(im[:, ::-1]) for im in images]
            mirrored = np.stack([mirror.mirror_landmarks(s, im.shape[1]) for s, im in zip(shapes, images)])
            back = self._fit(flipped, mirrored, valid)[-1]
            back = np.stack([mirror.mirror_landmarks(b, images[i].shape[1]) for b, i in zip(back, valid)])
            result[valid] = (result[valid] + back) / 2
        return result

    def fit_steps(self, images, shapes):
        """The estimate after every descent step (no mirroring): ``(steps, B, 68, 2)`` in image pixels.

        What :mod:`benchmarks.experiments.mdm_alone` scores to check that each step lowers the error.
        """
        shapes = np.asarray(shapes, dtype=np.float64).reshape(len(images), len(self.mean), 2)
        return self._fit(images, shapes, list(range(len(images))))

    def _fit(self, images, shapes, valid):
        """``(steps, len(valid), 68, 2)``: every step's estimate for the ``valid`` images, in image pixels.

        A few images (the harness fits one at a time) run with torch on one thread: MDM's convolutions are on
        15×15 patches, far too small to share between threads, and on the 2-core machine two threads made a
        one-image fit ~20× slower in CPU time (thread hand-offs; ``benchmarks/experiments/fit_speed.py``). It is
        also what the harness's forked workers always did (``densereg.data.workers``), so a fit in the main
        process now gives the workers' numbers exactly.
        """
        if len(valid) <= SINGLE_THREAD_MAX_BATCH:
            with single_threaded():
                return self._fit_frames(images, shapes, valid)
        return self._fit_frames(images, shapes, valid)

    def _fit_frames(self, images, shapes, valid):
        size = self.config.frame_size
        affines = [frame_transform(shapes[i], self._reference, size) for i in valid]
        frames = np.stack([warp_to_frame(images[i], a, size) for i, a in zip(valid, affines)])
        initial = np.stack([apply_affine(a, shapes[i]) for i, a in zip(valid, affines)])
        with torch.inference_mode():
            frames_t = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div_(255.0)
            steps = self.model(frames_t, torch.from_numpy(initial).float())
        return np.stack([[apply_affine(invert(a), f) for a, f in zip(affines, step.double().numpy())]
                         for step in steps])

    def __call__(self, image, shape):
        """Fit one image from ``shape`` (68×2, image pixels) and return the fitted 68×2 shape."""
        return self.fit_batch([image], np.asarray(shape)[None])[0]
