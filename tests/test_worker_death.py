"""A worker process that dies (segfault, OOM kill, ``os._exit`` in native code) never hangs a benchmark run.

The runs go through ``python -m benchmarks.run`` in a subprocess with a timeout, so a hang fails the test
instead of stalling the suite. The plug-in initialiser kills its own process on the images named in
``$KILL_ON`` (comma separated; ``*`` for every image).
"""

import faulthandler
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from benchmarks import records
from densereg.data import datasets as ds
from densereg.data.workers import WorkerDied, WorkersKeptDying, supervised_imap

REPO = Path(__file__).resolve().parents[1]

PLUGIN = textwrap.dedent("""
    import os
    import signal

    import numpy as np

    def killer(image, box, name):
        targets = os.environ.get("KILL_ON", "").split(",")
        if "*" in targets or name in targets:
            if os.environ.get("KILL_HOW") == "exit":
                os._exit(1)                          # as native code calling exit() would
            os.kill(os.getpid(), signal.SIGKILL)     # as a segfault or the OOM killer would
        x0, y0, x1, y1 = box
        return np.tile([(x0 + x1) / 2, (y0 + y1) / 2], (68, 1))
    killer.needs_name = True
""")


@pytest.fixture
def plugin_dir(tmp_path):
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "deadly_plugin.py").write_text(PLUGIN)
    return folder


def run_cli(root, results, plugin_dir, kill_on, how="kill", workers=2, timeout=int(os.environ.get("DEATH_TIMEOUT", 60))):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_dir), str(REPO)]),
           "KILL_ON": kill_on, "KILL_HOW": how}
    argv = [sys.executable, "-m", "benchmarks.run", "300w", "--init", "deadly_plugin:killer", "--root", str(root),
            "--results", str(results), "--workers", str(workers), "--no-progress"]
    try:
        return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"benchmarks.run hung: no exit within {timeout} s after a worker died")


def test_a_worker_killed_on_one_image_scores_it_and_the_run_goes_on(tiny_synth, tmp_path, plugin_dir):
    names = [s.name for s in ds.load_dataset("300w", tiny_synth, "test")]
    victim = names[1]
    results = tmp_path / "results"
    proc = run_cli(tiny_synth, results, plugin_dir, victim)
    assert proc.returncode == 0, proc.stderr
    rows, _ = records.read_csv(results / "300w.csv")
    assert len(rows) == 1 and rows[0]["n"] == str(len(names)) and rows[0]["misses"] == "1"
    errors = records.read_csv(results / rows[0]["errors"])[0]
    assert [r["name"] for r in errors] == names     # sample order kept
    by_name = {r["name"]: r for r in errors}
    assert by_name[victim]["status"] == "worker-died" and by_name[victim]["error"] == "inf"
    assert "killed by SIGKILL" in by_name[victim]["message"]
    assert all(r["status"] == "ok" for r in errors if r["name"] != victim)
    assert f"{victim}: worker-died" in proc.stdout    # listed among the failures the run prints


def test_workers_that_keep_dying_stop_the_run_with_the_images_named(tiny_synth, tmp_path, plugin_dir, alarm,
                                                                    monkeypatch, capsys):
    """In this process (the alarm guards against a hang): fast, and the parent is pytest itself."""
    from benchmarks import run

    monkeypatch.syspath_prepend(str(plugin_dir))
    monkeypatch.setenv("KILL_ON", "*")
    results = tmp_path / "results"
    assert run.main(["300w", "--init", "deadly_plugin:killer", "--root", str(tiny_synth), "--results",
                     str(results), "--workers", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err
    names = [s.name for s in ds.load_dataset("300w", tiny_synth, "test")]
    assert "worker processes died on 3 images in a row" in err and "killed by SIGKILL" in err
    assert sum(name in err for name in names) >= 3
    assert "--workers 1" in err
    assert not (results / "300w.csv").exists()      # no row for a run that did not finish
    assert multiprocessing.active_children() == []


# ------------------------------------------------------------------------------------------------------------
# The supervisor itself, in this process (an alarm turns a hang into a failure)


@pytest.fixture
def alarm():
    def on_alarm(signum, frame):
        raise TimeoutError("hung: no answer within 20 s")
    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def _die_on(targets, how):
    def task(index):
        if index in targets:
            if how == "exit":
                os._exit(3)
            faulthandler.disable()   # pytest's handler would print this deliberate crash's traceback
            os.kill(os.getpid(), signal.SIGSEGV if how == "segv" else signal.SIGKILL)
        return index * index
    return task


@pytest.mark.parametrize("how, cause", [("kill", "killed by SIGKILL"), ("segv", "killed by SIGSEGV"),
                                        ("exit", "exit code 3")])
def test_a_dead_worker_is_blamed_on_its_task_and_replaced(alarm, how, cause):
    out = dict(supervised_imap(_die_on({2, 5}, how), 8, 2))
    assert sorted(out) == list(range(8))
    for index in (2, 5):
        assert isinstance(out[index], WorkerDied) and out[index].index == index and out[index].cause == cause
    assert {i: v for i, v in out.items() if i not in (2, 5)} == {i: i * i for i in range(8) if i not in (2, 5)}


def test_deaths_in_a_row_stop_with_the_tasks_named_and_no_worker_left(alarm):
    with pytest.raises(WorkersKeptDying) as exc:
        list(supervised_imap(_die_on(set(range(3, 20)), "kill"), 20, 2, max_deaths_in_a_row=3))
    assert len(exc.value.deaths) == 3 and all(i >= 3 for i, _ in exc.value.deaths)
    assert "died on 3 tasks in a row" in str(exc.value) and isinstance(exc.value, OSError)
    assert multiprocessing.active_children() == []


def test_a_task_exception_reaches_the_caller_and_the_workers_stop(alarm):
    def task(index):
        if index == 4:
            raise ValueError("bad sample 4")
        return index

    with pytest.raises(ValueError, match="bad sample 4"):
        list(supervised_imap(task, 10, 3))
    assert multiprocessing.active_children() == []


class _NeedsTwoArguments(Exception):
    def __init__(self, path, what):
        super().__init__(f"{path}: {what}")


def test_an_exception_that_cannot_be_unpickled_still_reaches_the_caller(alarm):
    def task(index):
        raise _NeedsTwoArguments("x.pts", "bad")

    with pytest.raises(RuntimeError, match="_NeedsTwoArguments: x.pts: bad"):
        list(supervised_imap(task, 2, 2))
