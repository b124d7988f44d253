"""Fork-safe process pools for data generation and evaluation (``densereg.data.synth``, ``benchmarks.run``).

Forked children inherit the parent's memory (a trained model, a detector) for free, but not its threads: a
child that touches a thread pool the parent had started (OpenCV's, OpenMP's) can wait forever on a lock or
condition variable whose owner thread does not exist in the child. We saw exactly that: ``cv2.setNumThreads``
called in a forked worker hung in ``pthread_cond_destroy``. So the parent drops OpenCV and torch to one thread
*before* forking (children then never enter those pools: one worker per core is the parallelism) and restores
its settings afterwards.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import sys


@contextlib.contextmanager
def fork_pool(processes: int):
    """A ``fork`` ``multiprocessing.Pool`` whose workers run OpenCV and torch single-threaded."""
    import cv2

    torch = sys.modules.get("torch")   # only when already imported: do not pay torch's import for nothing
    cv_threads = cv2.getNumThreads()
    torch_threads = torch.get_num_threads() if torch is not None else None
    cv2.setNumThreads(1)
    if torch is not None:
        torch.set_num_threads(1)
    try:
        with multiprocessing.get_context("fork").Pool(processes) as pool:
            yield pool
    finally:
        cv2.setNumThreads(cv_threads)
        if torch is not None:
            torch.set_num_threads(torch_threads)
