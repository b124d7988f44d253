"""Our deformable part model (DPM) face detector: HOG pyramid, pose components, parts, latent SVM.

    python -m benchmarks.baselines.dpm --root ROOT --model PATH [--dataset 300w] [--split test] [--limit N]

(evaluates a trained detector; ``python -m benchmarks.baselines.dpm_train`` trains one.)

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
  root position is found with the generalised distance transform (:mod:`benchmarks.baselines.distance_transform`).
* **Latent SVM** training lives in :mod:`benchmarks.baselines.dpm_train` (which imports this module, never the
  reverse); settings and presets in :mod:`benchmarks.baselines.dpm_config`.
* **Bounding-box prediction**: per component, a ridge regression from the part positions in the detected window
  to the landmark box, so detections are comparable with the boxes the rest of the harness uses.

Not reproduced, for speed on a CPU: no upsampled octave (faces smaller than about ``root width × sbin`` pixels,
~48 px with the defaults, are missed), no part sharing between mirrored components, fewer pyramid levels in the
``cpu`` preset. The smallest detectable face and every setting are stored in the saved model.
"""


from __future__ import annotations

import argparse
import io
import json
import time
import zipfile
from collections import defaultdict
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from benchmarks.baselines.distance_transform import distance_transform_2d
from benchmarks.baselines.dpm_config import DPMConfig
from benchmarks.baselines.hog import FEATURE_DIM, PART_MARGIN, FeaturePyramid, correlate
from densereg.data.datasets import DATASETS, load_dataset
from densereg.data.formats import atomic_write_bytes
from densereg.geometry.boxes import iou_many as box_iou, nms

FORMAT_VERSION = 1      # bump when the saved file's layout changes
MIN_QUADRATIC_DEFORMATION = 0.01  # lower bound on dx², dy² weights (keeps the distance transform well posed)


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
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        atomic_write_bytes(path, buffer.getvalue())
        return path

    @classmethod
    def load(cls, path):
        """Read a model written by :meth:`save`; errors name the file and what is wrong."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no DPM model here; train one with "
                                    f"`python -m benchmarks.baselines.dpm_train --root ROOT --out {path}`")
        try:
            with np.load(path, allow_pickle=False) as data:
                version = int(data["format_version"])
                if version != FORMAT_VERSION:
                    raise ValueError(f"{path}: DPM model format {version}, this code reads {FORMAT_VERSION}; "
                                     f"retrain with `python -m benchmarks.baselines.dpm_train`")
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
# Evaluation


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


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.baselines.dpm",
                                     description="detection recall (IoU >= 0.5) and time per image of a trained DPM")
    parser.add_argument("--root", required=True, help="data root (real or synthetic layout)")
    parser.add_argument("--model", required=True, help="model written by benchmarks.baselines.dpm_train (.npz)")
    parser.add_argument("--dataset", default="300w", choices=sorted(DATASETS))
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args(argv)
    stats = evaluate(DPMDetector.load(args.model), load_dataset(args.dataset, args.root, args.split),
                     limit=args.limit)
    print(json.dumps({"dataset": args.dataset, "split": args.split, "model": args.model, **stats}))


if __name__ == "__main__":
    main()
