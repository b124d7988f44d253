"""The one artefact policy: keyed by config and training-data fingerprint, rebuilt or refused, never reused."""

import json

import pytest

from benchmarks.baselines.artefacts import (ArtefactError, differences, ensure_artefact, fingerprint,
                                            read_sidecar, sidecar_path)
from densereg.data import datasets


class Builder:
    """A build function that writes its config's ``value`` and counts its calls."""

    def __init__(self, value):
        self.value, self.calls = value, 0

    def __call__(self, path):
        self.calls += 1
        path.write_text(str(self.value))


def test_first_use_builds_and_stamps_then_reuses(tmp_path, capsys):
    path = tmp_path / "cache" / "model.bin"
    build = Builder(1)
    art = ensure_artefact(path, {"C": 1.0}, "f" * 64, build, "make model")
    assert build.calls == 1 and path.read_text() == "1"
    stamp = json.loads(sidecar_path(path).read_text())
    assert stamp["config"] == {"C": 1.0} and stamp["data"] == "f" * 64 and stamp["command"] == "make model"
    assert "building (first use)" in capsys.readouterr().err
    again = ensure_artefact(path, {"C": 1.0}, "f" * 64, build, "make model")
    assert build.calls == 1 and again.identity == art.identity and len(art.digest) == 12


@pytest.mark.parametrize("config, data, what", [
    ({"C": 2.0}, "f" * 64, "C: 1.0 -> 2.0"),
    ({"C": 1.0}, "e" * 64, "other training data"),
])
def test_a_change_rebuilds_a_cached_artefact_and_says_what_changed(tmp_path, capsys, config, data, what):
    path = tmp_path / "model.bin"
    ensure_artefact(path, {"C": 1.0}, "f" * 64, Builder(1), "make model")
    build = Builder(2)
    art = ensure_artefact(path, config, data, build, "make model")
    assert build.calls == 1 and path.read_text() == "2"
    assert what in capsys.readouterr().err
    assert read_sidecar(path)["config"] == config and art.data == data


def test_a_change_refuses_an_explicit_artefact_with_the_command(tmp_path):
    path = tmp_path / "model.bin"
    ensure_artefact(path, {"K": 10}, "f" * 64, Builder(1), "make model")
    build = Builder(2)
    with pytest.raises(ArtefactError, match=r"model.bin: .*K: 10 -> 5.*build it with: make model"):
        ensure_artefact(path, {"K": 5}, "f" * 64, build, "make model", explicit=True)
    assert build.calls == 0 and path.read_text() == "1"
    with pytest.raises(ArtefactError, match="nowhere.bin: not found"):
        ensure_artefact(tmp_path / "nowhere.bin", {"K": 5}, None, build, "make model", explicit=True)


def test_an_unstamped_artefact_is_never_reused_nor_deleted(tmp_path, capsys):
    path = tmp_path / "model.bin"
    path.write_text("planted")
    build = Builder(3)
    ensure_artefact(path, {"C": 1.0}, "f" * 64, build, "make model")
    assert path.read_text() == "3" and "no record" in capsys.readouterr().err
    aside = list(tmp_path.glob("model.bin.replaced-*"))
    assert len(aside) == 1 and aside[0].read_text() == "planted"   # someone else's file: moved aside
    path.write_text("planted")
    sidecar_path(path).unlink()
    with pytest.raises(ArtefactError, match="no record"):
        ensure_artefact(path, {"C": 1.0}, "f" * 64, build, "make model", explicit=True)


def test_a_self_describing_artefact_is_read_for_its_config_and_resumed_when_unfinished(tmp_path):
    path = tmp_path / "last.pt"
    state = {"config": {"K": 10, "root": "/a"}, "data": "f" * 64, "step": 1}
    path.write_text("x")

    def build(p):
        state["step"] = 4
        p.write_text("y")

    art = ensure_artefact(path, {"K": 10, "root": "/b"}, "f" * 64, build, "train",
                          stored=lambda p: (state["config"], state["data"]), complete=lambda p: state["step"] >= 4)
    assert state["step"] == 4 and art.config["K"] == 10   # resumed, the root (volatile) not compared
    state["config"]["K"] = 5
    with pytest.raises(ArtefactError, match="K: 5 -> 10"):
        ensure_artefact(path, {"K": 10}, "f" * 64, build, "train", explicit=True,
                        stored=lambda p: (state["config"], state["data"]))


def test_differences_ignore_volatile_fields_and_tuple_list_spelling():
    assert differences({"scales": [1.0, 2.0], "root": "/x"}, {"scales": (1.0, 2.0), "root": "/y"}) == []
    assert differences({}, {"K": 10}) == ["K: not recorded (wanted 10)"]


def test_fingerprint_follows_names_and_file_bytes(tiny_synth, tmp_path):
    samples = datasets.load_dataset("300w", tiny_synth, "test")
    assert fingerprint(samples) == fingerprint(list(reversed(samples)))
    assert fingerprint(samples) != fingerprint(samples[:-1])


def test_a_k5_checkpoint_is_refused_when_passed_and_rebuilt_where_the_default_is_expected(tiny_synth, tmp_path,
                                                                                            capsys):
    """Issue 12: another K's checkpoint is never evaluated as the preset's model."""
    import shutil

    from benchmarks.baselines import networks

    other = networks.ensure_network("tiny", tmp_path / "k5", root=tiny_synth, K=5, iterations=1)
    assert other.label == "tiny/K5" and other.path.is_file()
    with pytest.raises(ArtefactError, match="K: 5 -> 10"):
        networks.ensure_network("tiny", tmp_path / "default", root=tiny_synth, iterations=1,
                                checkpoint=other.path)
    default = tmp_path / "default" / "last.pt"
    default.parent.mkdir()
    shutil.copy(other.path, default)                         # planted where the default is expected
    art = networks.ensure_network("tiny", tmp_path / "default", root=tiny_synth, iterations=1)
    assert "K: 5 -> 10" in capsys.readouterr().err
    assert art.label == "tiny/K10" and networks.stored_identity(default)[0]["K"] == 10
    assert art.identity != other.identity
