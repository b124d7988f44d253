"""A checkpoint passed with ``--checkpoint`` is refused when trained on other data than the run's (issue 10)."""

import shutil

import pytest

from benchmarks.baselines import networks
from benchmarks.baselines.artefacts import ArtefactError
from densereg.data import datasets


@pytest.fixture(scope="module")
def trained(tiny_synth, tmp_path_factory):
    return networks.ensure_network("tiny", tmp_path_factory.mktemp("ckpt") / "run", root=tiny_synth,
                                   iterations=1).path


@pytest.fixture
def other_root(tiny_synth, tmp_path):
    """The same benchmark with one training image fewer: other training data."""
    root = tmp_path / "other"
    shutil.copytree(tiny_synth, root)
    samples = datasets.load_dataset("300w-lp", root, "train")
    victim = samples[-1].image_path
    for path in victim.parent.glob(victim.stem + ".*"):
        path.unlink()
    assert len(datasets.load_dataset("300w-lp", root, "train")) == len(samples) - 1
    return root


def test_a_checkpoint_of_this_data_is_accepted_either_way(trained, tiny_synth):
    assert networks.checkpoint_artefact(trained, "CMD", root=tiny_synth).path == trained
    assert networks.ensure_network("tiny", trained.parent, root=tiny_synth, iterations=1, checkpoint=trained)


def test_a_checkpoint_of_other_training_data_is_refused_either_way(trained, other_root):
    with pytest.raises(ArtefactError, match="built from other training data"):
        networks.checkpoint_artefact(trained, "CMD", root=other_root)
    with pytest.raises(ArtefactError, match="built from other training data"):
        networks.ensure_network("tiny", trained.parent, root=other_root, iterations=1, checkpoint=trained)


def test_a_checkpoint_whose_training_data_is_absent_cannot_be_checked(trained, tmp_path):
    with pytest.raises(ArtefactError, match="cannot be checked: its training data 300w-lp/train"):
        networks.checkpoint_artefact(trained, "CMD", root=tmp_path)
