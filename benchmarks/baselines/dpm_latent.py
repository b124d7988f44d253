"""Latent positives of the DPM: where a trained model places itself on a known face.

A training face says only where the face is, not which pose component, pyramid level, root position and part
placements explain it; those are the latent values of Felzenszwalb et al.'s latent SVM (PAMI 2010, Sec. 4).
With the current model fixed, each positive takes the best-scoring placement among the windows that overlap its
box enough, and is then trained as a fixed example (:mod:`benchmarks.baselines.dpm_train`); the bounding-box
regression is fitted on the same placements.
"""

from __future__ import annotations

import numpy as np

from benchmarks.baselines.dpm import window_grid
from densereg.geometry.boxes import iou_many as box_iou

PLACEMENT_MARGIN = 2    # root cells scanned around a training face's candidate windows (room for parts)


def best_placement(model, pyr, box, min_iou):
    """The latent values of one positive: ``(score, component, level, y, x, part_y, part_x, window)`` of
    ``model``'s best-scoring window in pyramid ``pyr`` whose box overlaps ``box`` by IoU >= ``min_iou``, or None.

    Only levels whose window size allows that IoU are scanned, and in each only the root positions around
    the box (plus a margin of ``PLACEMENT_MARGIN`` root cells in which parts can move).
    """
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
