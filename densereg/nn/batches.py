"""Training batches as a map-style dataset whose item ``t`` is the whole batch of step ``t``.

    python -m densereg.nn.train --preset cpu --out runs/x      (uses it through ``train.TrainingBatches``)

A batch is a pure function of ``(seed, step, rank)``: a resumed or re-sharded training draws exactly the
examples an uninterrupted one would. Subclasses say how one example is made (:meth:`StepBatches.example`):
faces (``densereg.nn.train.TrainingBatches``) and bodies (``densereg.nn.body.BodyBatches``).
"""

from __future__ import annotations

import numpy as np
import torch


class StepBatches(torch.utils.data.Dataset):
    """Item ``t``: the ``cfg.batch_size`` examples of step ``t`` stacked into tensors, key by key."""

    def __init__(self, samples: list, cfg, rank: int = 0):
        if not samples:
            raise ValueError("no training samples")
        self.samples, self.cfg, self.rank = samples, cfg, rank

    def __len__(self) -> int:
        return self.cfg.iterations

    def __getitem__(self, step: int) -> dict[str, torch.Tensor]:
        items = [self.example(step, slot) for slot in range(self.cfg.batch_size)]
        return {k: torch.from_numpy(np.stack([it[k] for it in items])) for k in items[0]}

    def example(self, step: int, slot: int) -> dict[str, np.ndarray]:
        """Example ``slot`` of step ``step`` as arrays (drawn from ``rng([cfg.seed, step, rank, slot])``)."""
        raise NotImplementedError
