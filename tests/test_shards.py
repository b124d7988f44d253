"""Evaluation sharded under torchrun (2 ranks, gloo, CPU) writes what one process writes."""

import csv
import os
import subprocess
import sys

import pytest

from densereg.data.shards import Shard, gather_in_order
from tests.test_run import REPO, make_300w_tree, plugin  # noqa: F401 - the plug-in fixture


def test_strided_shards_cover_every_sample_once():
    n = 11
    taken = sorted(i for r in range(3) for i in Shard(r, 3).indices(n))
    assert taken == list(range(n))
    assert Shard(1, 3).indices(n) == [1, 4, 7, 10]
    assert gather_in_order(Shard(), [0, 1], ["a", "b"], 2) == ["a", "b"]


def _run(args, env, cwd):
    proc = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _strip(path, drop):
    """A CSV's rows without the columns that differ between any two runs (timing, date, device)."""
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if k not in drop} for row in csv.DictReader(f)]


@pytest.mark.slow
def test_torchrun_two_ranks_write_the_single_process_rows_and_errors(tmp_path, plugin):  # noqa: F811
    """A seeded random fitter (``noisy_fitter``) and a failing initialiser on some images: the errors, statuses and
    the row are identical whether one process or two torchrun ranks evaluate the set."""
    root = make_300w_tree(tmp_path / "data", per_folder=4)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "plugins"), str(REPO)]),
           "OMP_NUM_THREADS": "1", "DENSEREG_DATA": str(root)}
    args = ["300w", "--init", f"{plugin}:flaky", "--fitter", f"{plugin}:noisy_fitter", "--root", str(root),
            "--no-progress"]
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    _run([sys.executable, "-m", "benchmarks.run", *args, "--results", str(single)], env, tmp_path)
    proc = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                 "-m", "benchmarks.run", *args, "--results", str(sharded)], env, tmp_path)
    errors = sorted((single / "errors").glob("*.csv"))
    assert [p.name for p in errors] == [p.name for p in sorted((sharded / "errors").glob("*.csv"))]
    one, two = _strip(errors[0], {"seconds"}), _strip(sharded / "errors" / errors[0].name, {"seconds"})
    assert len(one) == 8 and one == two
    assert {r["status"] for r in one} >= {"ok", "miss", "init-error"}
    drop = {"seconds_per_image", "date", "commit", "device"}
    assert _strip(single / "300w.csv", drop) == _strip(sharded / "300w.csv", drop)
    assert proc.stdout.count("row appended to") == 1           # rank 0 alone writes and reports
