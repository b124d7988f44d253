"""Latent-SVM training of our DPM: positives and latent relabelling, hard-negative mining, the SVM solver.

The machinery behind :func:`benchmarks.baselines.dpm.train_dpm` (Felzenszwalb et al., PAMI 2010, Sec. 4-5).
:class:`Trainer` holds one training run: the positives (training faces, mirrored when ``mirror``), their split
into pose components, caches of hard negatives, and the :class:`~benchmarks.baselines.dpm.DPMDetector` being trained. Its
steps are the ones ``train_dpm`` schedules: root filters on warped positives against random negatives,
hard-negative mining (windows with IoU < ``neg_iou`` to every annotated face), part initialisation on the root
filter's highest-energy sub-windows, latent relabelling of each positive with its best component and part
placement among windows with IoU >= ``pos_iou`` to its box, and the bounding-box regression. With latent values
fixed each component is one linear problem, solved by our own dual coordinate descent SVM (Hsieh et al., ICML
2008).
"""

from __future__ import annotations

import math
import sys
import time
from collections import defaultdict
from pathlib import Path

import numba
import numpy as np

from benchmarks.baselines.dpm import Component, DPMDetector, window_grid
from densereg.geometry.boxes import iou_many as box_iou, nms
from benchmarks.baselines.hog import FEATURE_DIM, warp_features
from densereg.data.formats import read_image

PLACEMENT_MARGIN = 2    # root cells scanned around a training face's candidate windows (room for parts)


@numba.njit(cache=True)
def _dual_cd_svm(x, y, c, bias_feature, max_epochs, tol, seed):
    """Hinge-loss linear SVM ``min ½|w|² + c Σ max(0, 1 − y_i (w·x_i + b))`` by dual coordinate descent.

    The bias is the weight of a constant feature ``bias_feature``. Stops when the projected-gradient spread of
    an epoch falls below ``tol`` (Hsieh et al., ICML 2008, without shrinking).
    """
    n, d = x.shape
    state = seed
    alpha = np.zeros(n)
    w = np.zeros(d)
    wb = 0.0
    qii = np.empty(n)
    for i in range(n):
        s = bias_feature * bias_feature
        for j in range(d):
            s += x[i, j] * x[i, j]
        qii[i] = s
    order = np.arange(n)
    for _ in range(max_epochs):
        for i in range(n - 1, 0, -1):   # Fisher-Yates with a 63-bit LCG (numba's np.random is slow to load)
            state = (state * 6364136223846793005 + 1442695040888963407) & 0x7FFFFFFFFFFFFFFF
            j = state % (i + 1)
            order[i], order[j] = order[j], order[i]
        pg_max, pg_min = -np.inf, np.inf
        for i in order:
            s = wb * bias_feature
            for j in range(d):
                s += w[j] * x[i, j]
            g = y[i] * s - 1.0
            pg = g
            if alpha[i] == 0.0:
                pg = min(g, 0.0)
            elif alpha[i] == c:
                pg = max(g, 0.0)
            pg_max, pg_min = max(pg_max, pg), min(pg_min, pg)
            if pg != 0.0:
                new = min(max(alpha[i] - g / qii[i], 0.0), c)
                delta = (new - alpha[i]) * y[i]
                alpha[i] = new
                for j in range(d):
                    w[j] += delta * x[i, j]
                wb += delta * bias_feature
        if pg_max - pg_min < tol:
            break
    return w, wb * bias_feature


def _train_svm(positives, negatives, config, seed):
    """``(w, bias)`` separating two float32 feature matrices."""
    x = np.ascontiguousarray(np.concatenate([positives, negatives]), dtype=np.float32)
    y = np.concatenate([np.ones(len(positives)), -np.ones(len(negatives))])
    return _dual_cd_svm(x, y, config.svm_c, config.bias_feature, config.svm_epochs, config.svm_tol, seed)



def _yaw_proxy(landmarks, box):
    """Nose-tip (0-based point 30) x offset from the box centre in box widths; 0 without 68 landmarks."""
    if landmarks is None or len(landmarks) != 68:
        return 0.0
    return float((landmarks[30, 0] - (box[0] + box[2]) / 2) / max(box[2] - box[0], 1e-6))


def _flip_box(box, width):
    return np.array([width - 1 - box[2], box[1], width - 1 - box[0], box[3]], dtype=np.float64)


def _load(image_path, flip):
    image = read_image(image_path)
    return np.ascontiguousarray(image[:, ::-1]) if flip else image


class Trainer:
    """State of one training run: the data, the model being trained, caches of hard negatives, timings."""

    def __init__(self, samples, config, progress):
        self.config, self.progress = config, progress
        self.rng = np.random.default_rng(config.seed)
        self.start, self.start_cpu = time.perf_counter(), time.process_time()
        self.boxes_of = defaultdict(list)   # image path → every annotated box (negatives avoid all of them)
        for s in samples:
            self.boxes_of[Path(s.image_path)].append(np.asarray(s.box, dtype=np.float64))
        chosen = self.rng.permutation(len(samples))[:config.max_positives]
        self.positives = []   # (image path, mirrored, box in the unmirrored image, yaw proxy of the used copy)
        for i in sorted(chosen):
            s = samples[i]
            box = np.asarray(s.box, dtype=np.float64)
            yaw = _yaw_proxy(s.landmarks, box)
            self.positives.append((Path(s.image_path), False, box, yaw))
            if config.mirror:
                self.positives.append((Path(s.image_path), True, box, -yaw))
        self.images = sorted(self.boxes_of)
        self.negatives = {}
        self.info = {"n_positives": len(self.positives), "n_images": len(self.images)}

    def log(self, message):
        if self.progress:
            wall, cpu = time.perf_counter() - self.start, time.process_time() - self.start_cpu
            print(f"[dpm {wall:6.1f}s wall {cpu:6.1f}s cpu] {message}", file=sys.stderr, flush=True)

    def gt_boxes(self, path, flip, width):
        boxes = self.boxes_of[path]
        return np.array([_flip_box(b, width) if flip else b for b in boxes]).reshape(-1, 4)

    def box(self, i, image):
        """Positive ``i``'s box in ``image`` (its mirrored copy when the positive is mirrored)."""
        path, flip, box, _ = self.positives[i]
        return _flip_box(box, image.shape[1]) if flip else box

    # -- phase 1: components and warped root filters ------------------------------------------------------------

    def init_components(self):
        cfg = self.config
        yaw = np.array([p[3] for p in self.positives])
        order = np.argsort(yaw, kind="stable")
        groups = np.array_split(order, cfg.n_components)
        self.assignment = np.empty(len(self.positives), np.int64)
        components = []
        for c, members in enumerate(groups):
            self.assignment[members] = c
            aspect = np.median([(self.positives[i][2][3] - self.positives[i][2][1])
                                / max(self.positives[i][2][2] - self.positives[i][2][0], 1e-6) for i in members])
            rw = max(3, int(round(math.sqrt(cfg.root_area / aspect))))
            rh = max(3, int(round(cfg.root_area / rw)))
            components.append(Component(root=np.zeros((rh, rw, FEATURE_DIM), np.float32)))
        self.model = DPMDetector(components, cfg, self.info)
        sizes = [f"{c.root.shape[0]}x{c.root.shape[1]}" for c in components]
        self.log(f"{len(self.positives)} positives in {cfg.n_components} components, root filters {sizes}")

    def warped_positives(self):
        feats = defaultdict(list)
        by_image = defaultdict(list)
        for i, (path, flip, box, _) in enumerate(self.positives):
            by_image[(path, flip)].append(i)
        for (path, flip), members in by_image.items():
            image = _load(path, flip)
            for i in members:
                c = self.assignment[i]
                rh, rw = self.model.components[c].root.shape[:2]
                feats[c].append(warp_features(image, self.box(i, image), rh, rw, self.config.sbin))
        return {c: np.array(v, np.float32) for c, v in feats.items()}

    def random_negatives(self):
        cfg = self.config
        feats = defaultdict(list)
        per_image = max(1, int(math.ceil(cfg.random_negatives * 1.0 / max(len(self.images), 1))))
        for path in self.rng.permutation(self.images):
            if all(len(feats[c]) >= cfg.random_negatives for c in range(cfg.n_components)):
                break
            image = _load(path, False)
            h, w = image.shape[:2]
            gts = self.gt_boxes(path, False, w)
            for c, comp in enumerate(self.model.components):
                rh, rw = comp.root.shape[:2]
                min_w, max_w = rw * cfg.sbin, min(w, h * rw / rh)
                for _ in range(per_image * 4):
                    if len(feats[c]) >= cfg.random_negatives or max_w <= min_w:
                        break
                    bw = math.exp(self.rng.uniform(math.log(min_w), math.log(max_w)))
                    bh = bw * rh / rw
                    x0, y0 = self.rng.uniform(0, w - bw), self.rng.uniform(0, h - bh)
                    box = np.array([x0, y0, x0 + bw, y0 + bh])
                    if gts.size and box_iou(box, gts).max() >= cfg.neg_iou:
                        continue
                    feats[c].append(warp_features(image, box, rh, rw, cfg.sbin))
        return {c: np.array(feats[c], np.float32).reshape(len(feats[c]), -1) for c in range(cfg.n_components)}

    # -- SVM on fixed latent values -----------------------------------------------------------------------------

    def train(self, positives, what):
        for c, comp in enumerate(self.model.components):
            pos = positives.get(c, np.zeros((0, comp.weights().size), np.float32))
            neg = self.negatives.get(c, np.zeros((0, comp.weights().size), np.float32))
            if len(pos) == 0 or len(neg) == 0:
                self.log(f"  component {c}: {len(pos)} positives, {len(neg)} negatives; kept as is")
                continue
            w, b = _train_svm(pos, neg, self.config, self.config.seed + c)
            comp.set_weights(w, b)
            margin_pos = float(np.mean(pos @ comp.weights() + comp.bias >= 1 - 1e-3))
            self.log(f"  {what} component {c}: {len(pos)} pos, {len(neg)} neg; "
                     f"{margin_pos:.0%} positives beyond the margin")

    def add_negatives(self, new):
        for c, feats in new.items():
            if not len(feats):
                continue
            old = self.negatives.get(c)
            merged = feats if old is None or len(old) == 0 else np.concatenate([old, feats])
            if len(merged) > self.config.neg_cache:   # keep the hardest under the current model
                comp = self.model.components[c]
                scores = merged @ comp.weights() + comp.bias
                merged = merged[np.argsort(-scores, kind="stable")[:self.config.neg_cache]]
            self.negatives[c] = merged

    # -- hard negatives -----------------------------------------------------------------------------------------

    def mine(self):
        cfg = self.config
        model = self.model
        new = defaultdict(list)
        chosen = self.rng.permutation(len(self.images))[:cfg.neg_images_per_round]
        for idx in chosen:
            path = self.images[idx]
            image = _load(path, False)
            gts = self.gt_boxes(path, False, image.shape[1])
            pyr = model.pyramid(image)
            found = {key: np.concatenate(v) for key, v in model._candidates(pyr, -1.0).items()}
            if not found:
                continue
            ok = np.ones(len(found["box"]), bool)
            for g in gts:
                ok &= box_iou(g, found["box"]) < cfg.neg_iou
            for c in range(len(model.components)):
                sel = np.nonzero(ok & (found["component"] == c))[0]
                if not sel.size:
                    continue
                sel = sel[np.argsort(-found["score"][sel], kind="stable")[:50 * cfg.neg_per_image]]
                for j in sel[nms(found["box"][sel], found["score"][sel], 0.5, cfg.neg_per_image)]:
                    new[c].append(model._placement_features(pyr, found["level"][j], c, found["y"][j],
                                                            found["x"][j], found["part_y"][j], found["part_x"][j]))
        self.add_negatives({c: np.array(v, np.float32) for c, v in new.items()})
        n_found = sum(len(v) for v in new.values())
        sizes = {c: len(v) for c, v in self.negatives.items()}
        self.log(f"  mined {n_found} hard negatives from {len(chosen)} images; cache sizes {sizes}")

    # -- latent positives ---------------------------------------------------------------------------------------

    def best_placement(self, pyr, box, min_iou):
        """``(score, component, level, y, x, part_y, part_x, window)`` of the best window with IoU >= min_iou.

        Only levels whose window size allows that IoU are scanned, and in each only the root positions around
        the box (plus a margin of ``PLACEMENT_MARGIN`` root cells in which parts can move).
        """
        model = self.model
        best = None
        bw, bh = box[2] - box[0], box[3] - box[1]
        for k in range(0, pyr.max_level((1, 1)) + 1):
            sy, sx = pyr.steps(k)
            ids = []
            for c, comp in enumerate(model.components):
                ww, wh = comp.root.shape[1] * sx, comp.root.shape[0] * sy
                inter = min(ww, bw) * min(wh, bh)   # the IoU of two centred boxes bounds every placement's
                if inter / (ww * wh + bw * bh - inter) >= min_iou:
                    ids.append(c)
            if not ids:
                continue
            rows, cols = pyr.root_map(k).shape[:2]
            ok = np.zeros((rows, cols), bool)
            for c in ids:
                rh, rw = model.components[c].root.shape[:2]
                if rows >= rh and cols >= rw:
                    grid = window_grid(pyr, k, 0, 0, rows - rh + 1, cols - rw + 1, rh, rw)
                    ok[:rows - rh + 1, :cols - rw + 1] |= box_iou(box, grid) >= min_iou
            ys, xs = np.nonzero(ok)
            if not ys.size:
                continue
            region = (max(ys.min() - PLACEMENT_MARGIN, 0), ys.max() + 1 + PLACEMENT_MARGIN,
                      max(xs.min() - PLACEMENT_MARGIN, 0), xs.max() + 1 + PLACEMENT_MARGIN)
            for c, (score, part_y, part_x) in model.score_level(pyr, k, ids, region).items():
                rh, rw = model.components[c].root.shape[:2]
                windows = window_grid(pyr, k, region[0], region[2], *score.shape, rh, rw)
                masked = np.where(box_iou(box, windows) >= min_iou, score, -np.inf)
                j = np.unravel_index(np.argmax(masked), masked.shape)
                if np.isfinite(masked[j]) and (best is None or masked[j] > best[0]):
                    best = (float(masked[j]), c, k, region[0] + j[0], region[2] + j[1], part_y[:, j[0], j[1]],
                            part_x[:, j[0], j[1]], windows[j])
        return best

    def relabel(self, indices, min_iou):
        """Best placement of each chosen positive: features per component and the placements themselves."""
        feats = defaultdict(list)
        placements = []
        by_image = defaultdict(list)
        for i in indices:
            by_image[(self.positives[i][0], self.positives[i][1])].append(i)
        for (path, flip), members in by_image.items():
            image = _load(path, flip)
            pyr = self.model.pyramid(image)
            for i in members:
                box = self.box(i, image)
                found = self.best_placement(pyr, box, min_iou)
                if found is None:
                    continue
                _, c, k, y, x, part_y, part_x, window = found
                feats[c].append(self.model._placement_features(pyr, k, c, y, x, part_y, part_x))
                inputs = self.model._regression_inputs(pyr, k, c, window[None], part_y[None], part_x[None])[0]
                placements.append((box, c, inputs, window))
        counts = {c: len(v) for c, v in sorted(feats.items())}
        self.log(f"  relabelled {len(placements)}/{len(indices)} positives (IoU >= {min_iou}); per component "
                 f"{counts}")
        return {c: np.array(v, np.float32) for c, v in feats.items()}, placements

    # -- parts --------------------------------------------------------------------------------------------------

    def add_parts(self):
        """Initialise parts on the highest-energy sub-windows of each 2×-interpolated root filter."""
        cfg = self.config
        side = max(2, int(round(math.sqrt(0.8 * 4 * cfg.root_area / cfg.n_parts))))
        for comp in self.model.components:
            fine = np.repeat(np.repeat(comp.root, 2, axis=0), 2, axis=1)
            energy = (np.maximum(fine, 0) ** 2).sum(axis=2)
            ph, pw = min(side, fine.shape[0]), min(side, fine.shape[1])
            parts, anchors = [], []
            for _ in range(cfg.n_parts):
                sums = np.lib.stride_tricks.sliding_window_view(energy, (ph, pw)).sum(axis=(2, 3))
                ay, ax = np.unravel_index(np.argmax(sums), sums.shape)
                parts.append(fine[ay:ay + ph, ax:ax + pw].copy())
                anchors.append((ay + 1, ax + 1))   # +1: the HOG border offset between root and part maps
                energy[ay:ay + ph, ax:ax + pw] = 0.0
            comp.parts = np.array(parts, np.float32)
            comp.anchors = np.array(anchors, np.int64)
            comp.deformation = np.tile([0.0, 0.1, 0.0, 0.1], (cfg.n_parts, 1))
            comp.bbox_reg = np.zeros((1 + 2 * cfg.n_parts, 4))
        self.negatives = {}   # the feature vectors changed length; mine afresh
        self.log(f"added {cfg.n_parts} parts of {side}x{side} cells per component")

    # -- bounding-box prediction --------------------------------------------------------------------------------

    def fit_box_regression(self, placements):
        """Ridge regression per component from part geometry to the landmark box (window-relative)."""
        per_comp = defaultdict(list)
        for box, c, inputs, window in placements:
            w, h = window[2] - window[0], window[3] - window[1]
            per_comp[c].append((inputs, (box - window) / np.array([w, h, w, h])))
        for c, comp in enumerate(self.model.components):
            rows = per_comp.get(c, [])
            dim = 1 + 2 * comp.n_parts
            if not rows:
                comp.bbox_reg = np.zeros((dim, 4))
                continue
            a = np.array([r[0] for r in rows])
            t = np.array([r[1] for r in rows])
            if len(rows) < 3 * dim:   # too few for the part terms: learn only the mean offset
                comp.bbox_reg = np.zeros((dim, 4))
                comp.bbox_reg[0] = t.mean(axis=0)
                continue
            reg = 1e-3 * len(rows) * np.eye(dim)
            reg[0, 0] = 0.0                 # the intercept is not shrunk
            comp.bbox_reg = np.linalg.solve(a.T @ a + reg, a.T @ t)
        self.log(f"box regression fitted on {len(placements)} placements")
