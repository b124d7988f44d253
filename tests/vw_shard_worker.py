"""Run by tests/test_tracking.py under ``torchrun`` (and alone): Table 3's evaluation of the videos under ROOT
with stand-in methods, rows to RESULTS; the per-video progress in PROGRESS."""

import sys
from pathlib import Path

import numpy as np

from benchmarks.context import RunContext
from benchmarks.experiments import tracking
from densereg.data import shards


def stand_in_methods():
    """Deterministic stand-ins for DenseReg and MDM that depend on each frame's pixels."""
    base = np.stack([np.linspace(0.3, 0.7, 68), 0.5 + 0.1 * np.sin(np.arange(68))], 1)

    def detect(images, boxes):
        return [base * im.shape[1::-1] + im.mean() / 50 for im in images]

    def refine(images, shapes):
        return np.asarray(shapes) + np.array([im.std() / 40 for im in images])[:, None, None]

    def from_box(box):
        return base * (np.asarray(box[2:]) - box[:2]) + box[:2]

    return tracking.Methods(detect, refine, from_box)


def main(root, results, progress):
    videos = tracking.load_videos("synthetic", root)
    rows = list(tracking.ROWS)
    chunks = tracking.evaluate_sharded(videos, stand_in_methods(), rows, progress, batch_size=2, progress=False)
    if chunks is not None:
        ctx = RunContext(source="synthetic", root=Path(root), dataset="300vw", runs_dir=Path(root) / "runs",
                         preset="cpu")
        tracking.record_rows(chunks, rows, ctx, Path(results), "cpu: test")
    print(f"rank {shards.current().rank} done: {'wrote the rows' if chunks is not None else 'evaluated its videos'}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
