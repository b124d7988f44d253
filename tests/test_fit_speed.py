"""The fitters' speed changes leave their answers as they were: MDM on one thread = the harness workers' MDM."""

import numpy as np
import torch

from benchmarks.baselines import mdm, mdm_frame
from tests.test_mdm import TINY, face68

CPU = TINY   # a small MDM: what is tested is the threading, not the network's size


def _fitter(seed=0):
    torch.manual_seed(seed)
    model = mdm.MDMNet(CPU)
    with torch.no_grad():                       # non-trivial updates at every step
        for p in model.parameters():
            p.normal_(0, 0.02)
    rng = np.random.default_rng(seed)
    return mdm.MDMFitter(model, CPU, mdm_frame.mean_shape([face68(rng) for _ in range(3)], CPU.reference_diagonal))


def test_mdm_fit_runs_single_threaded_and_restores_the_threads(monkeypatch):
    fitter = _fitter()
    seen = []
    forward = fitter.model.forward

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return forward(*args, **kwargs)

    monkeypatch.setattr(fitter.model, "forward", spy)
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (160, 200, 3), dtype=np.uint8)
    shape = face68(rng, centre=(100.0, 80.0), size=90.0)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        fitted = fitter(image, shape)
        assert seen == [1] and torch.get_num_threads() == 2
        torch.set_num_threads(1)                # what a forked harness worker runs with
        worker = fitter(image, shape)
    finally:
        torch.set_num_threads(before)
    assert np.isfinite(fitted).all() and np.abs(fitted - shape).max() > 0.1
    assert np.array_equal(fitted, worker)


def test_large_batches_keep_the_callers_threads(monkeypatch):
    fitter = _fitter()
    seen = []
    forward = fitter.model.forward
    monkeypatch.setattr(fitter.model, "forward", lambda *a, **k: seen.append(torch.get_num_threads()) or forward(*a, **k))
    rng = np.random.default_rng(2)
    n = mdm.SINGLE_THREAD_MAX_BATCH + 1
    images = [rng.integers(0, 255, (120, 120, 3), dtype=np.uint8) for _ in range(n)]
    shapes = np.stack([face68(rng, centre=(60.0, 60.0), size=70.0) for _ in range(n)])
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        fitter.fit_batch(images, shapes)
    finally:
        torch.set_num_threads(before)
    assert seen == [2]
