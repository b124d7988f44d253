"""Latent-SVM training of our DPM: positives and latent relabelling, hard-negative mining, the SVM solver.

    python -m benchmarks.baselines.dpm_train --root ROOT --out PATH [--preset cpu] [--dataset 300w] [--split train]
        [--set KEY=VALUE ...]

:func:`train_dpm` trains the detector of :mod:`benchmarks.baselines.dpm` (Felzenszwalb et al., PAMI 2010,
Sec. 4-5) and saves it; ``python -m benchmarks.baselines.dpm --model PATH`` evaluates it.
:class:`Trainer` holds one training run: the positives (training faces, mirrored when ``mirror``), their split
into pose components, caches of hard negatives, and the :class:`~benchmarks.baselines.dpm.DPMDetector` being trained. Its
steps are the ones ``train_dpm`` schedules: root filters on warped positives against random negatives,
hard-negative mining (windows with IoU < ``neg_iou`` to every annotated face), part initialisation on the root
filter's highest-energy sub-windows, latent relabelling of each positive with its best component and part
placement among windows with IoU >= ``pos_iou`` to its box, and the bounding-box regression. With latent values
fixed each component is one linear problem, solved by scikit-learn's ``LinearSVC`` (liblinear's dual coordinate
descent, Hsieh et al., ICML 2008).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.svm import LinearSVC

from benchmarks.baselines.dpm import Component, DPMDetector
from benchmarks.baselines.dpm_config import PRESETS, config_preset, parse_overrides
from benchmarks.baselines.dpm_latent import best_placement
from benchmarks.baselines.hog import FEATURE_DIM, warp_features
from densereg.data.datasets import DATASETS, load_dataset
from densereg.data.formats import read_image
from densereg.geometry.boxes import iou_many as box_iou, nms

def _train_svm(positives, negatives, config, seed):
    """``(w, bias)`` of the hinge-loss SVM ``min ½(|w|² + b'²) + C Σ max(0, 1 − y_i (w·x_i + b))`` on two
    float32 feature matrices (positives labelled +1).

    The DPM's bias is the weight ``b'`` of a constant feature ``bias_feature`` (``b = b' · bias_feature``), so
    it is regularised, lightly; liblinear's intercept (``intercept_scaling``) is exactly that. liblinear solves
    the dual by coordinate descent (Hsieh et al., ICML 2008) and stops when an epoch's projected-gradient spread
    falls below ``svm_tol`` or after ``svm_epochs`` epochs; hitting the epoch limit is expected on the small
    presets, so its ConvergenceWarning is silenced.
    """
    x = np.concatenate([positives, negatives]).astype(np.float64)
    y = np.concatenate([np.ones(len(positives)), -np.ones(len(negatives))])
    svm = LinearSVC(loss="hinge", C=config.svm_c, fit_intercept=True, intercept_scaling=config.bias_feature,
                    dual=True, tol=config.svm_tol, max_iter=config.svm_epochs, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        svm.fit(x, y)
    return svm.coef_[0].astype(np.float64), float(svm.intercept_[0])


# Landmark count -> the point whose horizontal offset says which way the object faces: the nose tip of the
# 68-point faces; the helix root of the 55-point ears (left and right ears are mirror images).
FACING_POINT = {68: 30, 55: 0}


def _yaw_proxy(landmarks, box):
    """The facing point's (:data:`FACING_POINT`) x offset from the box centre in box widths; 0 without one."""
    if landmarks is None or len(landmarks) not in FACING_POINT:
        return 0.0
    k = FACING_POINT[len(landmarks)]
    return float((landmarks[k, 0] - (box[0] + box[2]) / 2) / max(box[2] - box[0], 1e-6))


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
                found = best_placement(self.model, pyr, box, min_iou)
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


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.baselines.dpm_train",
                                     description="train the DPM face detector on a dataset's training split")
    parser.add_argument("--root", required=True, help="data root (real or synthetic layout)")
    parser.add_argument("--out", required=True, help="output model path (.npz)")
    parser.add_argument("--dataset", default="300w", choices=sorted(DATASETS))
    parser.add_argument("--split", default="train")
    parser.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one DPMConfig field (repeatable), e.g. --set interval=4")
    args = parser.parse_args(argv)
    config = config_preset(args.preset, **parse_overrides(args.set))
    train_dpm(load_dataset(args.dataset, args.root, args.split), args.out, config)


if __name__ == "__main__":
    main()
