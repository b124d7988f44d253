"""Every initialiser × fitter of the registries honours the contract on a tiny generated set.

Each method is built by its real factory (training its artefact with the ``tiny`` presets, seconds long), then
run through the harness's own ``evaluate_sample``: the outcome must be a finite 68×2 shape or a declared miss.
"""

import numpy as np
import pytest

from benchmarks import fitters, initialisers
from benchmarks.experiments import landmarks
from benchmarks.context import RunContext
from densereg.data import datasets, synth

try:  # the library's DenseReg predictor (lib branch); the densereg initialiser is a few lines over it
    import densereg.readout.predictor  # noqa: F401
    HAVE_PREDICTOR = True
except ImportError:
    HAVE_PREDICTOR = False

# dlib-68: real images only; densereg: once the library's predictor exists.
SYNTHETIC_INITIALISERS = [k for k in initialisers.INITIALISERS
                          if k != "dlib-68" and (k != "densereg" or HAVE_PREDICTOR)]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """30 training images (the detectors need a few dozen faces) and 3 test images."""
    root = tmp_path_factory.mktemp("contract") / "bench"
    synth.generate(root, seed=11, counts={"train": 30, "test": 3, "helen": 0}, workers=1, progress=False)
    return root


@pytest.fixture(scope="module")
def ctx(bench, tmp_path_factory):
    return RunContext(source="synthetic", root=bench, dataset="300w",
                                   runs_dir=tmp_path_factory.mktemp("runs"), preset="tiny")


@pytest.fixture(scope="module")
def methods(ctx):
    """Each method built once (artefacts trained once) for the whole grid."""
    return {"init": {k: initialisers.get_initialiser(k, ctx) for k in SYNTHETIC_INITIALISERS},
            "fit": {k: fitters.get_fitter(k, ctx) for k in fitters.FITTERS}}


@pytest.mark.parametrize("fitter", list(fitters.FITTERS))
@pytest.mark.parametrize("init", SYNTHETIC_INITIALISERS)
def test_every_initialiser_with_every_fitter(bench, methods, init, fitter):
    samples = datasets.load_dataset("300w", bench, "test")
    for sample in samples:
        result = landmarks.evaluate_sample(sample, methods["init"][init], methods["fit"][fitter], "outer-eye")
        if result["status"] == "miss":
            assert result["error"] == np.inf
        else:
            assert result["status"] == "ok", result
            assert np.isfinite(result["error"]) and result["error"] >= 0


def test_dlib68_refuses_synthetic_faces(ctx):
    with pytest.raises(ValueError, match="real images only"):
        initialisers.get_initialiser("dlib-68", ctx)
