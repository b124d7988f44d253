"""Evaluation under ``torchrun``: each rank takes a shard of the samples, every rank gets them back in order.

    torchrun --standalone --nproc_per_node 2 -m benchmarks.run 300w --init densereg --fitter none --source synthetic

Training scales out with ``torchrun`` (``densereg.nn.train``); evaluation does the same here. Sample ``i`` goes
to rank ``i mod world`` (a strided shard, so slow and fast images mix across ranks); each rank evaluates its
shard, seeded by the sample's global index as a single process seeds it, and :func:`gather_in_order` puts the
results back in sample order on every rank. Only rank 0 writes (:func:`is_writer`), so the rows and per-image
files are what one process writes. Evaluation results are Python objects, so they travel over a ``gloo`` group
of their own whatever backend the model uses. Outside ``torchrun`` (no ``WORLD_SIZE`` > 1) nothing changes.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Shard:
    """This process's place: ``rank`` of ``world`` processes (0 of 1 outside ``torchrun``)."""

    rank: int = 0
    world: int = 1

    def indices(self, n: int) -> list[int]:
        """The global sample indices this rank evaluates: ``rank, rank + world, ...`` below ``n``."""
        return list(range(self.rank, n, self.world))


_GROUP = None


def current() -> Shard:
    """The shard of this process; joins the ``torchrun`` group (gloo) on first use when ``WORLD_SIZE`` > 1."""
    global _GROUP
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Shard()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    if _GROUP is None:
        _GROUP = dist.new_group(backend="gloo")
    return Shard(dist.get_rank(), dist.get_world_size())


def balanced(sizes: list[int], shard: Shard) -> list[int]:
    """The items this rank takes when items are indivisible (a video is tracked frame after frame): largest
    first, each to the rank with the least work so far (ties to the lowest rank); deterministic, so every rank
    computes the same assignment. Returns the indices of ``sizes`` owned by ``shard.rank``, in index order.
    """
    load = [0] * shard.world
    owner = [0] * len(sizes)
    for i in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        r = min(range(shard.world), key=lambda r: (load[r], r))
        owner[i], load[r] = r, load[r] + sizes[i]
    return [i for i in range(len(sizes)) if owner[i] == shard.rank]


def barrier(shard: Shard, hours: float = 24.0) -> None:
    """Wait until every rank is here (no-op outside ``torchrun``). The timeout is long because ranks that
    evaluate different videos may finish hours apart on the full 300-VW test set; a rank that dies ends the
    ``torchrun`` job anyway."""
    if shard.world <= 1:
        return
    import datetime

    import torch.distributed as dist

    dist.monitored_barrier(group=_GROUP, timeout=datetime.timedelta(hours=hours))


def is_writer(shard: Shard | None = None) -> bool:
    """Whether this process writes results (rank 0, or the only process)."""
    return (shard or current()).rank == 0


def gather_in_order(shard: Shard, indices: list[int], results: list, n: int) -> list:
    """All ``n`` results in global index order, on every rank, from each rank's ``(indices, results)``.

    Raises:
        RuntimeError: the shards do not cover ``0..n-1`` exactly once (a rank evaluated another split).
    """
    if shard.world <= 1:
        return list(results)
    import torch.distributed as dist

    parts = [None] * shard.world
    dist.all_gather_object(parts, (list(indices), list(results)), group=_GROUP)
    merged: list = [None] * n
    seen = 0
    for idx, res in parts:
        for i, r in zip(idx, res):
            if merged[i] is not None:
                raise RuntimeError(f"sample {i} was evaluated by two ranks")
            merged[i] = r
            seen += 1
    if seen != n:
        raise RuntimeError(f"the ranks returned {seen} results for {n} samples")
    return merged


@contextlib.contextmanager
def rank_zero_first(shard: Shard):
    """Rank 0 runs the block first (it builds and caches any artefact); the others run it after, from the cache.

    Without it every rank would train the same artefact at once into the same file.
    """
    if shard.world <= 1:
        yield
        return
    import torch.distributed as dist

    if shard.rank != 0:
        dist.barrier(group=_GROUP)
    yield
    if shard.rank == 0:
        dist.barrier(group=_GROUP)
