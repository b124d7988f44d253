"""Fork-safe, supervised worker processes for data generation and evaluation (``densereg.data.synth``, ``benchmarks.run``).

Forked children inherit the parent's memory (a trained model, a detector) for free, but not its threads: a
child that touches a thread pool the parent had started (OpenCV's, OpenMP's) can wait forever on a lock or
condition variable whose owner thread does not exist in the child. We saw exactly that: ``cv2.setNumThreads``
called in a forked worker hung in ``pthread_cond_destroy``. So the parent drops OpenCV and torch to one thread
*before* forking (children then never enter those pools: one worker per core is the parallelism) and restores
its settings afterwards.

A worker can also die outright: a segfault in native code (OpenCV, dlib, numba), the kernel's out-of-memory
killer, an ``exit()`` deep in a library. ``multiprocessing.Pool`` then replaces the process but loses its task,
and ``imap`` waits for that task forever. :func:`supervised_imap` runs each task on a process it watches, so a
death is seen at once, blamed on the one task that process held, and the process replaced.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import signal
import sys
import time
from multiprocessing.connection import wait


@contextlib.contextmanager
def single_threaded():
    """OpenCV and (when already imported) torch set to one thread inside the block, restored after it."""
    import cv2

    torch = sys.modules.get("torch")   # only when already imported: do not pay torch's import for nothing
    cv_threads = cv2.getNumThreads()
    torch_threads = torch.get_num_threads() if torch is not None else None
    cv2.setNumThreads(1)
    if torch is not None:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(cv_threads)
        if torch is not None:
            torch.set_num_threads(torch_threads)


# ----------------------------------------------------------------------------------------------------------------
# Supervised workers: a task whose process dies is reported, not waited for


class WorkerDied:
    """Stands in for the result of a task whose worker process died while running it.

    Attributes:
        index: the task.
        cause: ``"killed by SIGKILL"``, ``"exit code 1"``, ...
        seconds: time from handing the task out to noticing the death.
    """

    def __init__(self, index, cause, seconds):
        self.index, self.cause, self.seconds = index, cause, seconds

    def __repr__(self):
        return f"WorkerDied(task {self.index}: {self.cause})"


class WorkersKeptDying(ChildProcessError):
    """Worker processes died on several tasks in a row: something kills every worker, not one bad input.

    Attributes:
        deaths: ``(index, cause)`` of each task in the row.
    """

    def __init__(self, deaths, message=None):
        self.deaths = list(deaths)
        super().__init__(message or f"worker processes died on {len(self.deaths)} tasks in a row: "
                         + ", ".join(f"task {i} ({cause})" for i, cause in self.deaths))


def death_cause(exitcode):
    """Words for a dead process's ``exitcode`` (negative: the signal that killed it)."""
    if exitcode is not None and exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"


def _portable(exc):
    """``exc`` if it survives a pickle round trip (exceptions with extra required arguments do not), else a
    ``RuntimeError`` carrying its type and text."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 -- any failure means "send its text instead"
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def _serve(func, conn, parent):
    """A worker's loop: run the task indices it is sent, send back ``(index, ok, value)``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C is the parent's to handle: it stops the workers
    while True:
        while not conn.poll(1.0):
            if os.getppid() != parent:      # the parent is gone (killed): do not linger as an orphan
                os._exit(0)
        index = conn.recv()
        if index is None:
            return
        try:
            reply = (index, True, func(index))
        except BaseException as e:  # noqa: BLE001 -- the parent re-raises it
            reply = (index, False, _portable(e))
        try:
            conn.send(reply)
        except Exception as e:  # an unpicklable result or exception: send its text
            conn.send((index, False, RuntimeError(f"task {index}: cannot send its outcome back: {e!r}")))


class _Worker:
    def __init__(self, context, func):
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(func, child, os.getpid()), daemon=True)
        self.process.start()
        child.close()   # the parent keeps one end: the child's death then reads as EOF here
        self.task = self.started = None

    def give(self, index):
        self.task, self.started = index, time.perf_counter()
        with contextlib.suppress(OSError):   # it just died: the parent sees it as a death holding this task
            self.conn.send(index)

    def stop(self, kill=False):
        with contextlib.suppress(OSError):
            if kill:
                self.process.kill()
            else:
                self.conn.send(None)
        self.process.join(timeout=None if kill else 5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


def supervised_imap(func, n_tasks, processes, max_deaths_in_a_row=3):
    """Run ``func(index)`` for ``index in range(n_tasks)`` on ``processes`` forked workers, watching each one.

    ``func`` is inherited by the workers (fork), so it may be any callable, closures included; its results and
    exceptions travel back by pickle. A worker that dies while running a task yields a :class:`WorkerDied`
    for that task and is replaced by a fresh fork of this process; the other tasks go on.

    Yields:
        ``(index, result)`` in completion order, ``result`` being ``func(index)`` or a :class:`WorkerDied`.

    Raises:
        the exception ``func`` raised for a task (the workers are stopped first).
        WorkersKeptDying: workers died on ``max_deaths_in_a_row`` tasks with no task finishing in between.
    """
    context = multiprocessing.get_context("fork")
    pending = iter(range(n_tasks))
    deaths = []           # (index, cause) of the deaths since the last task that finished
    with single_threaded():
        workers = [_Worker(context, func) for _ in range(min(processes, n_tasks))]
        try:
            for worker in workers:
                worker.give(next(pending))
            while any(w.task is not None for w in workers):
                busy = [w for w in workers if w.task is not None]
                ready = set(wait([w.conn for w in busy] + [w.process.sentinel for w in busy]))
                for slot, worker in enumerate(workers):
                    if worker.task is None or not ready & {worker.conn, worker.process.sentinel}:
                        continue
                    try:
                        index, ok, value = worker.conn.recv()
                    except (EOFError, OSError):   # died holding its task
                        worker.process.join()
                        index, cause = worker.task, death_cause(worker.process.exitcode)
                        worker.conn.close()
                        deaths.append((index, cause))
                        if len(deaths) >= max_deaths_in_a_row:
                            raise WorkersKeptDying(deaths)
                        yield index, WorkerDied(index, cause, time.perf_counter() - worker.started)
                        worker = workers[slot] = _Worker(context, func)
                    else:
                        if not ok:
                            raise value
                        deaths.clear()
                        yield index, value
                        worker.task = None
                        if not worker.process.is_alive():   # it finished its task, then ended: no task lost
                            worker.stop()
                            worker = workers[slot] = _Worker(context, func)
                    next_index = next(pending, None)
                    if next_index is not None:
                        worker.give(next_index)
                    else:
                        worker.task = None
        finally:
            interrupted = any(w.task is not None for w in workers)
            for worker in workers:
                if not worker.conn.closed:
                    worker.stop(kill=interrupted)
