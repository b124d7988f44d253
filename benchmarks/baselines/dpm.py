"""Our deformable part model (DPM) face detector: HOG pyramid, pose components, parts, latent SVM.

    python -m benchmarks.baselines.dpm train --root ROOT --out PATH [--preset cpu] [--dataset 300w] [--split train]
    python -m benchmarks.baselines.dpm eval --root ROOT --model PATH [--split test] [--limit N]

Why: the paper initialises its fitters from Mathias et al.'s DPM face detector, whose model cannot be had here,
so this module implements the method itself (Felzenszwalb, Girshick, McAllester & Ramanan, PAMI 2010) and trains
it on the active training split. Every result it produces is labelled "DPM (ours)".

The model, as in Felzenszwalb et al.:

* **Features** (:mod:`benchmarks.baselines.hog`): 31-dimensional HOG on 8×8 cells (18 contrast-sensitive + 9
  contrast-insensitive orientations + 4 gradient-energy features, each cell normalised by its 4 surrounding 2×2
  blocks and truncated at 0.2), plus a 32nd channel that is 1 in the padding outside the image, so filters can
  learn what "off the image" costs. A pyramid holds ``interval`` levels per octave; parts read the level one
  octave below the root (2× resolution).
* **Components by pose**: training faces are sorted by a yaw proxy (nose-tip x relative to the landmark box
  centre) and split into equal groups (left profile, frontal, right profile for 3); each component's root
  filter takes the group's median aspect ratio. Mirrored training faces are added (``mirror``).
* **Parts**: initialised on the highest-energy sub-windows of the 2×-interpolated root filter, each with an
  anchor and a quadratic deformation cost ``d · (dx, dx², dy, dy²)``; the best placement of every part for every
  root position is found with the Felzenszwalb-Huttenlocher generalised distance transform (rows, then columns).
* **Latent SVM** (:mod:`benchmarks.baselines.dpm_train`): root filters are first trained on warped positives against
  random negatives, then on hard negatives mined from the training images (windows with IoU < ``neg_iou`` to
  every annotated face); parts are added, each positive is relabelled with its best component and part placement
  among windows with IoU >= ``pos_iou`` to its box, and root + parts + deformation + bias are retrained as one
  linear model per component (with latent values fixed, the mixture's joint SVM separates into one problem per
  component). Deformation quadratic weights are held >= 0.01 as in the original. Our own dual coordinate descent
  SVM (Hsieh et al., ICML 2008) solves each problem.
* **Bounding-box prediction**: per component, a ridge regression from the part positions in the detected window
  to the landmark box, so detections are comparable with the boxes the rest of the harness uses.

Not reproduced, for speed on a CPU: no upsampled octave (faces smaller than about ``root width × sbin`` pixels,
~48 px with the defaults, are missed), no part sharing between mirrored components, fewer pyramid levels in the
``cpu`` preset. The smallest detectable face and every setting are stored in the saved model.
"""


from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import zipfile
from collections import defaultdict
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numba
import numpy as np

from benchmarks.baselines.hog import FEATURE_DIM, PART_MARGIN, FeaturePyramid, correlate
from densereg.data.datasets import DATASETS, load_dataset
from densereg.geometry.boxes import iou_many as box_iou, nms

FORMAT_VERSION = 1      # bump when the saved file's layout changes
MIN_QUADRATIC_DEFORMATION = 0.01  # lower bound on dx², dy² weights (keeps the distance transform well posed)


# ----------------------------------------------------------------------------------------------------------------
# Configuration


@dataclass
class DPMConfig:
    """Every setting of training and detection. Defaults follow Felzenszwalb et al. where they apply.

    Attributes:
        interval: pyramid levels per octave (Felzenszwalb et al. use 10).
        sbin: HOG cell size in pixels at the root level (parts use sbin/2-pixel cells, i.e. 2× resolution).
        n_components: pose components (faces sorted by yaw proxy, split into equal groups).
        mirror: add left-right mirrored copies of the training faces.
        root_area: root filter area in cells; its shape follows each component's median aspect ratio.
        n_parts: parts per component.
        svm_c: hinge-loss weight C of each component's SVM (``½|w|² + C Σ hinge``).
        svm_epochs: maximum passes of dual coordinate descent.
        svm_tol: stop when the spread of the projected gradient over an epoch is below this (liblinear's test).
        bias_feature: constant appended to every feature vector; its weight is the component bias.
        max_positives: at most this many training faces (before mirroring) are used.
        random_negatives: warped random negative windows per component for the first root training.
        neg_images_per_round: training images scanned in each hard-negative mining round.
        neg_per_image: hard negatives kept per image and component in one round.
        neg_cache: most negative feature vectors kept per component (hardest first).
        root_mining_rounds: hard-negative rounds with the root-only model.
        latent_iterations: relabel-positives-then-retrain iterations once parts are added.
        part_mining_rounds: hard-negative rounds within each latent iteration.
        bbox_samples: training faces used to fit the bounding-box regression.
        pos_iou: a latent positive placement must overlap its box by at least this IoU.
        neg_iou: a negative window overlaps every annotated face by less than this IoU.
        nms_iou: detections overlapping a better one by more than this IoU are suppressed.
        detect_threshold: default score threshold of ``DPMDetector.detect``.
        seed: random seed of every sampling step.
    """

    interval: int = 10
    sbin: int = 8
    n_components: int = 3
    mirror: bool = True
    root_area: int = 36  # 6×6 cells on a frontal face: a 48-pixel face at the finest root level
    n_parts: int = 8
    svm_c: float = 0.01
    svm_epochs: int = 100
    svm_tol: float = 0.05
    bias_feature: float = 10.0  # as in Felzenszwalb et al.'s code, so the bias is only lightly regularised
    max_positives: int = 4000
    random_negatives: int = 4000
    neg_images_per_round: int = 600
    neg_per_image: int = 10
    neg_cache: int = 10000
    root_mining_rounds: int = 2
    latent_iterations: int = 2
    part_mining_rounds: int = 2
    bbox_samples: int = 1500
    pos_iou: float = 0.7
    neg_iou: float = 0.3
    nms_iou: float = 0.3
    detect_threshold: float = -0.8
    seed: int = 0


# Named overrides of DPMConfig. "paper" keeps Felzenszwalb et al.'s scale (10 levels per octave, 8 parts, every
# face, two mining rounds per stage). "cpu" fits the two-core budget: its cost is bounded by max_positives and
# neg_images_per_round, not by the size of the split (about 65 s CPU on 256×256 synthetic images, 2.5 min wall
# on the shared machine), and it detects in about 0.1 s per 256×256 image.
PRESETS = {
    "paper": {},
    "cpu": {"interval": 5, "n_parts": 6, "max_positives": 500, "random_negatives": 1500,
            "neg_images_per_round": 100, "neg_cache": 4000, "root_mining_rounds": 1, "latent_iterations": 1,
            "part_mining_rounds": 1, "bbox_samples": 200, "svm_epochs": 60},
    # Seconds-long training on a handful of images: for contract tests of the harness, not for accuracy.
    "tiny": {"interval": 2, "n_parts": 2, "max_positives": 40, "random_negatives": 100, "neg_images_per_round": 4,
             "neg_cache": 200, "root_mining_rounds": 1, "latent_iterations": 1, "part_mining_rounds": 1,
             "bbox_samples": 20, "svm_epochs": 10},
}


def config_preset(name, **overrides):
    """The :class:`DPMConfig` of preset ``name`` (a key of :data:`PRESETS`) with ``overrides`` applied."""
    if name not in PRESETS:
        raise KeyError(f"unknown DPM preset {name!r}; valid: {', '.join(sorted(PRESETS))}")
    return DPMConfig(**{**PRESETS[name], **overrides})


# ----------------------------------------------------------------------------------------------------------------
# Generalised distance transform (Felzenszwalb & Huttenlocher 2012)


@numba.njit(cache=True)
def _dt1d(src, a, b, dst, arg):
    """``dst[p] = max_q src[q] - a·(q-p)² - b·(q-p)`` and its argmax, by the lower envelope of parabolas."""
    n = src.shape[0]
    v = np.empty(n, np.int64)
    z = np.empty(n + 1)
    k = 0
    v[0] = 0
    z[0] = -np.inf
    z[1] = np.inf
    for q in range(1, n):
        fq = -src[q] + a * q * q + b * q
        while True:
            r = v[k]
            s = (fq - (-src[r] + a * r * r + b * r)) / (2.0 * a * (q - r))
            if s <= z[k]:
                k -= 1
            else:
                break
        k += 1
        v[k] = q
        z[k] = s
        z[k + 1] = np.inf
    k = 0
    for p in range(n):
        while z[k + 1] < p:
            k += 1
        q = v[k]
        d = q - p
        dst[p] = src[q] - a * d * d - b * d
        arg[p] = q


@numba.njit(cache=True)
def _dt2d(values, ax, bx, ay, by, y0, ny, x0, nx, step):
    """2-D transform (rows, then columns), evaluated only at rows ``y0 + step·i`` and columns ``x0 + step·j``."""
    h, w = values.shape
    rows = np.empty((h, w))
    argx = np.empty((h, w), np.int64)
    for y in range(h):
        _dt1d(values[y], ax, bx, rows[y], argx[y])
    out = np.empty((ny, nx))
    iy = np.empty((ny, nx), np.int64)
    ix = np.empty((ny, nx), np.int64)
    col = np.empty(h)
    buf = np.empty(h)
    ibuf = np.empty(h, np.int64)
    for j in range(nx):
        x = x0 + step * j
        for y in range(h):
            col[y] = rows[y, x]
        _dt1d(col, ay, by, buf, ibuf)
        for i in range(ny):
            y = y0 + step * i
            out[i, j] = buf[y]
            iy[i, j] = ibuf[y]
            ix[i, j] = argx[ibuf[y], x]
    return out, iy, ix


def distance_transform_1d(values, a, b):
    """``out[p] = max_q values[q] - a·(q-p)² - b·(q-p)`` (``a > 0``) and the maximising ``q``, in linear time."""
    if a <= 0:
        raise ValueError(f"quadratic deformation weight must be positive, got {a}")
    src = np.ascontiguousarray(values, dtype=np.float64)
    dst, arg = np.empty_like(src), np.empty(src.shape, np.int64)
    _dt1d(src, float(a), float(b), dst, arg)
    return dst, arg


def distance_transform_2d(values, deformation, origin=(0, 0), shape=None, step=1):
    """Best part score for every anchor position under a quadratic deformation cost.

    Args:
        values: ``(H, W)`` part filter responses.
        deformation: ``(4,)`` cost weights of ``(dx, dx², dy, dy²)``, displacement = part position − anchor.
        origin, shape, step: evaluate only at anchors ``origin + step·(i, j)`` for ``(i, j)`` in ``shape``
            (default: every position). Roots are scanned at half the part resolution, hence ``step = 2``.

    Returns:
        ``(out, iy, ix)``: ``out[p] = max_q values[q] − deformation · (dx, dx², dy, dy²)`` with
        ``q − p = (dy, dx)``, and the row/column of the maximising ``q``.
    """
    bx, ax, by, ay = (float(v) for v in deformation)
    if ax <= 0 or ay <= 0:
        raise ValueError(f"quadratic deformation weights must be positive, got {deformation}")
    values = np.ascontiguousarray(values, dtype=np.float64)
    ny, nx = values.shape if shape is None else shape
    if origin[0] + step * (ny - 1) >= values.shape[0] or origin[1] + step * (nx - 1) >= values.shape[1]:
        raise ValueError(f"anchors {origin} + {step}·{(ny, nx)} fall outside the {values.shape} response map")
    return _dt2d(values, ax, bx, ay, by, int(origin[0]), int(ny), int(origin[1]), int(nx), int(step))


# ----------------------------------------------------------------------------------------------------------------
# Boxes


def window_grid(pyr, k, y0_pad, x0_pad, rows, cols, rh, rw):
    """Image boxes ``(rows, cols, 4)`` of root windows whose padded top-left cells start at the given offsets."""
    sy, sx = pyr.steps(k)
    ys = (np.arange(rows) + y0_pad - pyr.pad[0] + 1) * sy
    xs = (np.arange(cols) + x0_pad - pyr.pad[1] + 1) * sx
    out = np.empty((rows, cols, 4))
    out[..., 0], out[..., 1] = xs[None, :], ys[:, None]
    out[..., 2], out[..., 3] = xs[None, :] + rw * sx, ys[:, None] + rh * sy
    return out


# ----------------------------------------------------------------------------------------------------------------
# The model


@dataclass
class Component:
    """One pose component: root filter, parts with anchors and deformation costs, bias, box regression.

    Attributes:
        root: ``(rh, rw, 32)`` root filter.
        bias: added to every score.
        parts: ``(P, ph, pw, 32)`` part filters at 2× resolution (P = 0 for a root-only model).
        anchors: ``(P, 2)`` int ``(ay, ax)``: the part's rest position in part cells relative to twice the root
            position (plus the HOG offset of 1).
        deformation: ``(P, 4)`` weights of the cost ``(dx, dx², dy, dy²)`` of a part's displacement.
        bbox_reg: ``(2P+1, 4)`` ridge regression from ``[1, part centres relative to the window]`` to the landmark
            box's edges relative to the window (in window widths/heights).
    """

    root: np.ndarray
    bias: float = 0.0
    parts: np.ndarray = field(default_factory=lambda: np.zeros((0, 1, 1, FEATURE_DIM), np.float32))
    anchors: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))
    deformation: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    bbox_reg: np.ndarray = field(default_factory=lambda: np.zeros((1, 4)))

    @property
    def n_parts(self):
        return self.parts.shape[0]

    def weights(self):
        """The linear weight vector matching :meth:`DPMDetector._placement_features` (bias excluded)."""
        return np.concatenate([self.root.ravel(), self.parts.ravel(), self.deformation.ravel()]).astype(np.float32)

    def set_weights(self, w, bias):
        """Inverse of :meth:`weights`; quadratic deformation weights are clipped to stay positive."""
        n_root, n_parts = self.root.size, self.parts.size
        self.root = w[:n_root].reshape(self.root.shape).astype(np.float32)
        self.parts = w[n_root:n_root + n_parts].reshape(self.parts.shape).astype(np.float32)
        deformation = w[n_root + n_parts:].reshape(self.deformation.shape).astype(np.float64)
        deformation[:, 1] = np.maximum(deformation[:, 1], MIN_QUADRATIC_DEFORMATION)
        deformation[:, 3] = np.maximum(deformation[:, 3], MIN_QUADRATIC_DEFORMATION)
        self.deformation, self.bias = deformation, float(bias)


class DPMDetector:
    """A trained mixture of deformable part models; ``detect(image)`` gives scored face boxes.

    Args:
        components: list of :class:`Component`.
        config: the :class:`DPMConfig` it was trained with.
        info: training provenance (timings, counts), saved with the model.
    """

    def __init__(self, components, config, info=None):
        self.components, self.config, self.info = components, config, dict(info or {})

    # -- geometry -----------------------------------------------------------------------------------------------

    @property
    def pad(self):
        """Root-level padding (cells) of every map: half the largest root filter, so faces may cross the border."""
        return (max((c.root.shape[0] + 1) // 2 for c in self.components),
                max((c.root.shape[1] + 1) // 2 for c in self.components))

    @property
    def min_face_size(self):
        """Smallest detectable window (pixels): the smallest root filter at the finest root level."""
        return min(min(c.root.shape[:2]) for c in self.components) * self.config.sbin

    def pyramid(self, image):
        """The :class:`FeaturePyramid` of ``image`` this model scans."""
        return FeaturePyramid(image, self.config.interval, self.config.sbin, self.pad)

    def _root_dims(self):
        return (min(c.root.shape[0] for c in self.components), min(c.root.shape[1] for c in self.components))

    # -- scoring ------------------------------------------------------------------------------------------------

    def score_level(self, pyr, k, component_ids=None, region=None):
        """Scores of root positions of level ``k``: ``{c: (score (Ny, Nx), part_y, part_x (P, Ny, Nx))}``.

        ``score = root response + Σ_parts max over placements (part response − deformation cost) + bias``; the
        part positions are the maximisers, in ``pyr.part_map(k)`` cells.

        Args:
            region: ``(y0, y1, x0, x1)``: score only root positions from ``(y0, x0)`` (padded root-map cells; at
                least up to ``(y1, x1)``, exclusive); ``score[i, j]`` is then position ``(y0 + i, x0 + j)``. Parts
                move within the matching part-map window only (used around known faces during training).
        """
        ids = list(range(len(self.components)) if component_ids is None else component_ids)
        root_map = pyr.root_map(k)
        with_parts = [c for c in ids if self.components[c].n_parts]
        part_map = pyr.part_map(k) if with_parts else None
        y0 = x0 = 0
        if region is not None:
            y0, y1, x0, x1 = region
            rh = max(self.components[c].root.shape[0] for c in ids)
            rw = max(self.components[c].root.shape[1] for c in ids)
            root_map = root_map[y0:y1 + rh - 1, x0:x1 + rw - 1]
            if with_parts:   # keeps "root cell y ↔ part cell 2y + anchor + margin" within the crops
                part_map = part_map[2 * y0:2 * y0 + 2 * root_map.shape[0] + 2 * PART_MARGIN,
                                    2 * x0:2 * x0 + 2 * root_map.shape[1] + 2 * PART_MARGIN]
        responses = {}
        if with_parts:
            filters = np.concatenate([self.components[c].parts for c in with_parts])
            stacked = correlate(part_map, filters)
            start = 0
            for c in with_parts:
                responses[c] = stacked[start:start + self.components[c].n_parts]
                start += self.components[c].n_parts
        out = {}
        for c in ids:
            comp = self.components[c]
            response = correlate(root_map, comp.root[None])[0]
            if response.size == 0:
                continue
            score = response.astype(np.float64) + comp.bias
            ny, nx = score.shape
            part_y = np.zeros((comp.n_parts, ny, nx), np.int64)
            part_x = np.zeros((comp.n_parts, ny, nx), np.int64)
            for p in range(comp.n_parts):
                best, part_y[p], part_x[p] = distance_transform_2d(
                    responses[c][p], comp.deformation[p], comp.anchors[p] + PART_MARGIN, (ny, nx), 2)
                score += best
            out[c] = (score, part_y + 2 * y0, part_x + 2 * x0)
        return out

    def _placement_features(self, pyr, k, c, y, x, part_y, part_x):
        """The latent feature vector of one placement; ``weights() · φ + bias`` equals its score."""
        comp = self.components[c]
        rh, rw = comp.root.shape[:2]
        pieces = [pyr.root_map(k)[y:y + rh, x:x + rw].ravel()]
        if comp.n_parts:
            part_map = pyr.part_map(k)
            ph, pw = comp.parts.shape[1:3]
            deform = np.empty((comp.n_parts, 4), np.float32)
            for p in range(comp.n_parts):
                pieces.append(part_map[part_y[p]:part_y[p] + ph, part_x[p]:part_x[p] + pw].ravel())
                dy = part_y[p] - (2 * y + comp.anchors[p, 0] + PART_MARGIN)
                dx = part_x[p] - (2 * x + comp.anchors[p, 1] + PART_MARGIN)
                deform[p] = (-dx, -dx * dx, -dy, -dy * dy)
            pieces.append(deform.ravel())
        return np.concatenate(pieces).astype(np.float32)

    def _regression_inputs(self, pyr, k, c, windows, part_y, part_x):
        """``(N, 2P+1)`` inputs of the box regression: 1 and each part centre relative to its window."""
        comp = self.components[c]
        inputs = np.ones((len(windows), 1 + 2 * comp.n_parts))
        if comp.n_parts:
            sy, sx = pyr.steps(k - pyr.interval)
            ph, pw = comp.parts.shape[1:3]
            off_y, off_x = 2 * pyr.pad[0] + PART_MARGIN, 2 * pyr.pad[1] + PART_MARGIN
            cy = (part_y - off_y + 1 + ph / 2) * sy   # (N, P) image coordinates of the part centres
            cx = (part_x - off_x + 1 + pw / 2) * sx
            w = (windows[:, 2] - windows[:, 0])[:, None]
            h = (windows[:, 3] - windows[:, 1])[:, None]
            inputs[:, 1::2] = (cx - (windows[:, 0:1] + windows[:, 2:3]) / 2) / w
            inputs[:, 2::2] = (cy - (windows[:, 1:2] + windows[:, 3:4]) / 2) / h
        return inputs

    def _candidates(self, pyr, threshold, levels=None):
        """Every window scoring above ``threshold``: dict of arrays (box, score, component, level, y, x, parts)."""
        found = defaultdict(list)
        if levels is None:
            levels = range(0, pyr.max_level(self._root_dims()) + 1)
        for k in levels:
            for c, (score, part_y, part_x) in self.score_level(pyr, k).items():
                ys, xs = np.nonzero(score > threshold)
                if not ys.size:
                    continue
                rh, rw = self.components[c].root.shape[:2]
                grid = window_grid(pyr, k, 0, 0, *score.shape, rh, rw)
                found["box"].append(grid[ys, xs])
                found["score"].append(score[ys, xs])
                found["component"].append(np.full(ys.size, c))
                found["level"].append(np.full(ys.size, k))
                found["y"].append(ys)
                found["x"].append(xs)
                found["part_y"].append(part_y[:, ys, xs].T)
                found["part_x"].append(part_x[:, ys, xs].T)
        return found

    def predict_boxes(self, pyr, k, c, windows, part_y, part_x):
        """Landmark boxes predicted from root windows ``(N, 4)`` and their part positions ``(N, P)``."""
        t = self._regression_inputs(pyr, k, c, windows, part_y, part_x) @ self.components[c].bbox_reg
        w = windows[:, 2] - windows[:, 0]
        h = windows[:, 3] - windows[:, 1]
        return windows + t * np.stack([w, h, w, h], axis=1)

    def detect(self, image, threshold=None, max_detections=50, min_size=None):
        """Face boxes in ``image``, best first.

        Args:
            image: ``H×W×3`` uint8 RGB.
            threshold: minimum score (default ``config.detect_threshold``).
            max_detections: keep at most this many after non-maximum suppression.
            min_size: skip pyramid levels whose windows are all narrower than this many pixels (saves most of
                the time on large images whose faces are known to be large); default: scan every level.

        Returns:
            list of ``(box (4,) float64 (x0, y0, x1, y1) in the landmark-box convention, score)`` sorted by score.
        """
        threshold = self.config.detect_threshold if threshold is None else threshold
        pyr = self.pyramid(image)
        levels = range(0, pyr.max_level(self._root_dims()) + 1)
        if min_size is not None:
            widest = max(c.root.shape[1] for c in self.components)
            levels = [k for k in levels if widest * pyr.steps(k)[1] >= min_size]
        found = self._candidates(pyr, threshold, levels)
        if not found:
            return []
        boxes, scores = [], []
        for i in range(len(found["box"])):
            c, k = int(found["component"][i][0]), int(found["level"][i][0])
            boxes.append(self.predict_boxes(pyr, k, c, found["box"][i], found["part_y"][i], found["part_x"][i]))
            scores.append(found["score"][i])
        boxes, scores = np.concatenate(boxes), np.concatenate(scores)
        top = np.argsort(-scores, kind="stable")[:5000]  # bounds NMS cost on cluttered images
        keep = top[nms(boxes[top], scores[top], self.config.nms_iou, max_detections)]
        return [(boxes[i].copy(), float(scores[i])) for i in keep]

    # -- persistence --------------------------------------------------------------------------------------------

    def save(self, path):
        """Write the model as ``.npz`` (plain arrays + JSON strings; no pickle) atomically."""
        path = Path(path)
        arrays = {"format_version": np.array(FORMAT_VERSION), "config": np.array(json.dumps(asdict(self.config))),
                  "info": np.array(json.dumps(self.info)), "n_components": np.array(len(self.components))}
        for i, comp in enumerate(self.components):
            for name in ("root", "parts", "anchors", "deformation", "bbox_reg"):
                arrays[f"c{i}_{name}"] = getattr(comp, name)
            arrays[f"c{i}_bias"] = np.array(comp.bias)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path):
        """Read a model written by :meth:`save`; errors name the file and what is wrong."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no DPM model here; train one with "
                                    f"`python -m benchmarks.baselines.dpm train --root ROOT --out {path}`")
        try:
            with np.load(path, allow_pickle=False) as data:
                version = int(data["format_version"])
                if version != FORMAT_VERSION:
                    raise ValueError(f"{path}: DPM model format {version}, this code reads {FORMAT_VERSION}; "
                                     f"retrain with `python -m benchmarks.baselines.dpm train`")
                known = {f.name for f in fields(DPMConfig)}
                config = DPMConfig(**{k: v for k, v in json.loads(str(data["config"])).items() if k in known})
                components = [Component(root=data[f"c{i}_root"], bias=float(data[f"c{i}_bias"]),
                                         parts=data[f"c{i}_parts"], anchors=data[f"c{i}_anchors"],
                                         deformation=data[f"c{i}_deformation"], bbox_reg=data[f"c{i}_bbox_reg"])
                              for i in range(int(data["n_components"]))]
                info = json.loads(str(data["info"]))
        except KeyError as e:
            raise ValueError(f"{path}: not a DPM model file (missing array {e})") from None
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            if str(path) in str(e):
                raise
            raise ValueError(f"{path}: unreadable DPM model ({e})") from None
        return cls(components, config, info)




# ----------------------------------------------------------------------------------------------------------------
# Training


def train_dpm(samples, out_path, config=None, progress=True):
    """Train the DPM face detector on annotated faces and save it.

    Args:
        samples: :class:`densereg.data.datasets.Sample` list (the training split); each sample's ``box`` is a positive
            and every window overlapping no annotated box of its image (IoU < ``neg_iou``) may be a negative.
        out_path: where the ``.npz`` model goes (written atomically).
        config: :class:`DPMConfig` (default: the ``cpu`` preset).
        progress: log each phase with elapsed time to stderr.

    Returns:
        ``out_path`` as a Path.
    """
    config = config or config_preset("cpu")
    if len(samples) < 2 * config.n_components:
        raise ValueError(f"DPM training needs at least {2 * config.n_components} faces, got {len(samples)}")
    from benchmarks.baselines.dpm_train import Trainer   # here, not at the top: latent_svm builds on this module's model

    trainer = Trainer(samples, config, progress)
    phases = {}

    t = time.perf_counter()
    trainer.init_components()
    positives = trainer.warped_positives()
    trainer.add_negatives(trainer.random_negatives())
    trainer.train(positives, "root (warped)")
    for _ in range(config.root_mining_rounds):
        trainer.mine()
        trainer.train(positives, "root (hard negatives)")
    phases["root_s"] = time.perf_counter() - t

    t = time.perf_counter()
    trainer.add_parts()
    all_positives = np.arange(len(trainer.positives))
    for _ in range(config.latent_iterations):
        positives, _ = trainer.relabel(all_positives, config.pos_iou)
        if not trainer.negatives:
            trainer.mine()
        for _ in range(config.part_mining_rounds):
            trainer.train(positives, "parts")
            trainer.mine()
        trainer.train(positives, "parts")
    phases["parts_s"] = time.perf_counter() - t

    t = time.perf_counter()
    chosen = trainer.rng.permutation(len(trainer.positives))[:config.bbox_samples]
    _, placements = trainer.relabel(chosen, 0.5)   # the detector's own best windows around each face
    trainer.fit_box_regression(placements)
    phases["bbox_s"] = time.perf_counter() - t

    trainer.info.update(phases)
    trainer.info["train_s"] = time.perf_counter() - trainer.start
    trainer.info["train_cpu_s"] = time.process_time() - trainer.start_cpu
    trainer.info["min_face_size"] = trainer.model.min_face_size
    trainer.model.info = dict(trainer.info)
    path = trainer.model.save(out_path)
    trainer.log(f"saved {path} (training took {trainer.info['train_s']:.1f} s)")
    return Path(path)


# ----------------------------------------------------------------------------------------------------------------
# Command line


def evaluate(detector, samples, iou=0.5, limit=None):
    """Detection quality and speed on annotated faces.

    Returns:
        dict: ``recall_top1`` (the best detection overlaps the face's box by IoU >= ``iou``), ``recall_any`` (some
        detection does), ``mean_iou_top1`` (0 for an image without detections), wall and CPU seconds per image.
    """
    samples = samples[:limit] if limit else samples
    top1 = anyhit = 0
    ious, wall, cpu = [], 0.0, 0.0
    for s in samples:
        image = s.image()
        t, c = time.perf_counter(), time.process_time()
        found = detector.detect(image)
        wall, cpu = wall + time.perf_counter() - t, cpu + time.process_time() - c
        overlaps = box_iou(np.asarray(s.box, dtype=np.float64), np.array([b for b, _ in found]).reshape(-1, 4))
        ious.append(float(overlaps[0]) if found else 0.0)
        top1 += bool(found) and overlaps[0] >= iou
        anyhit += bool(found) and overlaps.max() >= iou
    n = max(len(samples), 1)
    return {"n": len(samples), "recall_top1": top1 / n, "recall_any": anyhit / n,
            "mean_iou_top1": float(np.mean(ious)) if ious else 0.0, "s_per_image": wall / n,
            "cpu_s_per_image": cpu / n}


def _parse_overrides(items):
    """``["interval=4", "mirror=false"]`` → typed DPMConfig overrides; unknown keys exit with the valid ones."""
    types = {f.name: f.type for f in fields(DPMConfig)}
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in types:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE with KEY one of {', '.join(sorted(types))}")
        kind = types[key] if isinstance(types[key], str) else types[key].__name__
        if kind == "bool":
            if value.lower() not in ("true", "false", "1", "0"):
                raise SystemExit(f"--set {item!r}: {key} takes true or false")
            out[key] = value.lower() in ("true", "1")
        else:
            try:
                out[key] = {"int": int, "float": float}[kind](value)
            except ValueError:
                raise SystemExit(f"--set {item!r}: {key} takes a {kind}") from None
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.baselines.dpm", description=__doc__.split("\n\n")[2])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train the detector on a dataset's training split")
    train.add_argument("--root", required=True, help="data root (real or synthetic layout)")
    train.add_argument("--out", required=True, help="output model path (.npz)")
    train.add_argument("--dataset", default="300w", choices=sorted(DATASETS))
    train.add_argument("--split", default="train")
    train.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override one DPMConfig field (repeatable), e.g. --set interval=4")
    ev = sub.add_parser("eval", help="detection recall (IoU >= 0.5) and time per image")
    ev.add_argument("--root", required=True)
    ev.add_argument("--model", required=True)
    ev.add_argument("--dataset", default="300w", choices=sorted(DATASETS))
    ev.add_argument("--split", default="test")
    ev.add_argument("--limit", type=int, default=None)
    args = parser.parse_args(argv)

    overrides = _parse_overrides(args.set) if args.command == "train" else {}
    if args.command == "train":
        try:
            config = config_preset(args.preset, **overrides)
        except KeyError as e:
            parser.error(str(e))
    samples = load_dataset(args.dataset, args.root, args.split)
    if args.command == "train":
        train_dpm(samples, args.out, config)
    else:
        stats = evaluate(DPMDetector.load(args.model), samples, limit=args.limit)
        print(json.dumps({"dataset": args.dataset, "split": args.split, "model": args.model, **stats}))


if __name__ == "__main__":
    main()
