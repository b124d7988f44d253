"""``--seed S`` reaches every trained artefact of the chain, and the artefacts of each seed live apart.

The trainers are replaced by stubs that record what each factory asks ``ensure_artefact`` for (path and
config): the plumbing, not the training, is what is tested here (each trainer's own seeding is tested in its
module's tests).
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from benchmarks import fitters, initialisers
from benchmarks.baselines import artefacts, networks
from benchmarks.context import RunContext


def test_seed_zero_keeps_the_old_cache_and_other_seeds_get_their_own_folder(tmp_path):
    assert artefacts.seed_dir(tmp_path / "synthetic", 0) == tmp_path / "synthetic"
    assert artefacts.seed_dir(tmp_path / "synthetic", 2) == tmp_path / "synthetic" / "seed2"
    ctx = RunContext("synthetic", tmp_path, "300w", tmp_path / "runs" / "synthetic", seed=3)
    assert ctx.cache_dir == tmp_path / "runs" / "synthetic" / "seed3"
    assert ctx.artefact_dir("mdm-cpu") == tmp_path / "runs" / "synthetic" / "seed3" / "mdm-cpu"


@dataclass
class Asked:
    path: Path
    config: dict


@pytest.fixture
def asked(monkeypatch):
    """Stub ``ensure_artefact`` in the factories and the artefact loaders: record every request, build nothing."""
    calls = []

    def fake_ensure(path, config, samples, build, command, **kw):
        calls.append(Asked(Path(path), config))
        return artefacts.Artefact(Path(path), config, "f" * 64, kw.get("label", ""))

    monkeypatch.setattr(initialisers, "ensure_artefact", fake_ensure)
    monkeypatch.setattr(fitters, "ensure_artefact", fake_ensure)
    monkeypatch.setattr(artefacts.Artefact, "identity", property(lambda self: "stub"))
    monkeypatch.setattr(RunContext, "train_fingerprint", lambda self: "f" * 64)
    from benchmarks.baselines import aam, dpm, hogsvm, mdm
    from benchmarks.baselines.boxes import BoxToShape

    monkeypatch.setattr(aam.AAMFitter, "load", staticmethod(lambda path: "aam"))
    monkeypatch.setattr(mdm.MDMFitter, "load", staticmethod(lambda path: "mdm"))
    monkeypatch.setattr(dpm.DPMDetector, "load", staticmethod(lambda path: "dpm"))
    monkeypatch.setattr(hogsvm, "HogSvmDetector", lambda path, **kw: "hog")
    monkeypatch.setattr(BoxToShape, "load", staticmethod(lambda path: "box2shape"))
    return calls


@pytest.mark.parametrize("seed", [0, 4])
def test_every_trained_artefact_of_the_chain_depends_on_the_seed(tmp_path, asked, seed):
    runs = tmp_path / "runs" / "synthetic"
    ctx = RunContext("synthetic", tmp_path, "300w", runs, preset="cpu", seed=seed)
    initialisers.hog_svm_factory(ctx)
    initialisers.dpm_factory(ctx)
    fitters.aam_factory(ctx)
    fitters.mdm_factory(ctx)
    where = artefacts.seed_dir(runs, seed)
    by_name = {a.path.name: a for a in asked}
    assert set(by_name) == {"hog_svm.npz", "hog_svm_box2shape.npz", "dpm-cpu.npz", "dpm-cpu_box2shape.npz",
                            "aam.pkl", "mdm.pt"}
    for a in asked:
        assert a.path.is_relative_to(where) and (seed == 0 or a.path.parent != runs), a.path
    for name in ("hog_svm.npz", "dpm-cpu.npz", "aam.pkl", "mdm.pt"):
        assert by_name[name].config["seed"] == seed, name
    for name in ("hog_svm_box2shape.npz", "dpm-cpu_box2shape.npz"):   # seed 0: the config as before seeds
        assert by_name[name].config.get("seed", 0) == seed and ("seed" in by_name[name].config) == bool(seed)


def test_the_densereg_network_of_a_seed_is_trained_with_it_in_its_folder(tmp_path, monkeypatch):
    seen = {}

    def fake_network(preset, out, **kw):
        seen.update(preset=preset, out=Path(out), **kw)
        return artefacts.Artefact(Path(out) / "last.pt", {}, None, "cpu/K10")

    monkeypatch.setattr(networks, "ensure_network", fake_network)
    runs = tmp_path / "runs" / "synthetic"
    ctx = RunContext("synthetic", tmp_path, "300w", runs, preset="cpu", seed=2)
    initialisers.densereg_checkpoint(ctx, networks)
    assert seen["seed"] == 2 and seen["out"] == runs / "seed2" / "densereg-cpu"


def test_the_network_config_and_command_carry_a_nonzero_seed(tmp_path, monkeypatch):
    seen = {}

    def fake_ensure(path, config, samples, build, command, **kw):
        seen.update(path=Path(path), config=config, command=command)
        return artefacts.Artefact(Path(path), config, None)

    from densereg.nn import train

    monkeypatch.setattr(networks, "ensure_artefact", fake_ensure)
    monkeypatch.setattr(train, "training_samples", lambda cfg: [])
    networks.ensure_network("cpu", tmp_path / "seed5" / "densereg-cpu", source="synthetic", seed=5)
    assert seen["config"]["seed"] == 5 and "--seed 5" in seen["command"]
    networks.ensure_network("cpu", tmp_path / "densereg-cpu", source="synthetic")
    assert seen["config"]["seed"] == 0 and "--seed" not in seen["command"]


def test_box_regression_faces_are_another_subset_for_another_seed():
    samples = list(range(50))
    assert initialisers.seeded_order(samples, 0) is samples
    one, two = initialisers.seeded_order(samples, 1), initialisers.seeded_order(samples, 2)
    assert sorted(one) == samples and one != samples and one != two
    assert np.array_equal(one, initialisers.seeded_order(samples, 1))
