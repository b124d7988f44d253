"""Transfer augmentation (``densereg.nn.augment``, ``TrainConfig.augment``): photometric only, reproducible, off
by default without changing the identity of networks trained before it existed."""

from __future__ import annotations

import numpy as np
import pytest

from densereg.nn import augment, config, train


def _crop(seed=0, size=48):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    valid = np.zeros((size, size), bool)
    valid[4:40, 8:] = True
    image[~valid] = 0
    return image, valid


def test_none_is_the_identity_and_draws_nothing():
    image, valid = _crop()
    rng = np.random.default_rng(3)
    before = rng.bit_generator.state
    assert augment.augment("none", image, valid, rng) is image
    assert rng.bit_generator.state == before


def test_transfer_is_reproducible_keeps_padding_black_and_changes_the_image():
    image, valid = _crop()
    a = augment.augment("transfer", image.copy(), valid, np.random.default_rng([1, 2]))
    b = augment.augment("transfer", image.copy(), valid, np.random.default_rng([1, 2]))
    np.testing.assert_array_equal(a, b)
    assert a.shape == image.shape and a.dtype == np.uint8 and not a[~valid].any()
    changed = [not np.array_equal(augment.augment("transfer", image.copy(), valid, np.random.default_rng(s)), image)
               for s in range(10)]
    assert sum(changed) >= 8
    with pytest.raises(KeyError, match="augmentation"):
        augment.augment("cutout", image, valid, np.random.default_rng(0))


def test_training_examples_keep_their_targets_under_augmentation(tiny_synth):
    from densereg.data import datasets

    samples = datasets.load_dataset("300w-lp", tiny_synth, "train")
    plain = train.TrainingBatches(samples, config.make_config("tiny", root=str(tiny_synth))).example(0, 0)
    aug = train.TrainingBatches(samples, config.make_config("tiny", root=str(tiny_synth),
                                                            augment="transfer")).example(0, 0)
    for key in ("u", "v", "mask", "parts", "valid"):
        np.testing.assert_array_equal(plain[key], aug[key])
    assert not np.array_equal(plain["image"], aug["image"])


def test_augment_is_recorded_only_when_used_and_a_resume_compares_it():
    cpu = config.make_config("cpu").resolved()
    assert "augment" not in cpu                      # cached cpu networks keep their identity
    transfer = config.make_config("transfer").resolved()
    assert transfer["augment"] == "transfer" and set(transfer) - set(cpu) == {"augment"}
    diff = config.config_differences(cpu, {**config.LATER_FIELDS, **transfer}, ["augment"])
    assert diff == {"augment": ("none", "transfer")}
    assert config.TrainConfig.from_dict(cpu).augment == "none"
