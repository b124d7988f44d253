"""The menpo adapter and the patch-AAM fitter (benchmarks/baselines/aam.py)."""

import pickle

import numpy as np
import pytest

pytest.importorskip("menpofit")

from benchmarks.baselines import aam, aam_train
from benchmarks import metrics  # noqa: E402
from densereg.data import datasets  # noqa: E402


def test_menpo_adapter_round_trip():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    points = np.array([[0.0, 0.0], [6.0, 1.0], [2.5, 4.0]])  # (x, y): x < width 7, y < height 5
    menpo_image = aam.to_menpo_image(image, points)
    assert menpo_image.pixels.shape == (3, 5, 7)  # channels first, rows, columns
    np.testing.assert_allclose(menpo_image.pixels[1, 4, 6], image[4, 6, 1] / 255.0)
    np.testing.assert_allclose(np.moveaxis(menpo_image.pixels, 0, 2), image / 255.0)
    yx = menpo_image.landmarks["PTS"].points
    np.testing.assert_array_equal(yx, points[:, ::-1])  # menpo keeps (row, column)
    np.testing.assert_array_equal(aam.from_menpo_points(menpo_image.landmarks["PTS"]), points)

    grey = aam.to_menpo_image(image, greyscale=True)
    assert grey.pixels.shape == (1, 5, 7)
    np.testing.assert_allclose(grey.pixels[0], (image / 255.0) @ aam.LUMINOSITY)


def test_menpo_adapter_samples_the_pixel_a_point_names():
    # A single bright pixel at column 5, row 2: menpo sampling at the adapted (x, y) = (5, 2) must read it,
    # which holds only if both the axis swap and the pixel-centre convention agree.
    image = np.zeros((4, 9, 3), dtype=np.uint8)
    image[2, 5] = 255
    menpo_image = aam.to_menpo_image(image, np.array([[5.0, 2.0], [2.0, 5.0 - 4.0]]))
    values = menpo_image.sample(menpo_image.landmarks["PTS"], order=0)
    np.testing.assert_allclose(values[:, 0], 1.0)
    np.testing.assert_allclose(values[:, 1], 0.0)


def test_crop_around_returns_offset_of_the_crop():
    image = np.arange(20 * 30 * 3, dtype=np.uint8).reshape(20, 30, 3)
    points = np.array([[10.0, 8.0], [14.0, 12.0]])
    crop, offset = aam.crop_around(image, points, margin=0.5)
    np.testing.assert_array_equal(offset, [8.0, 6.0])
    assert crop.shape == (9, 9, 3)
    x, y = (points[0] - offset).astype(int)
    np.testing.assert_array_equal(crop[y, x], image[8, 10])
    with pytest.raises(aam.OutsideImageError):
        aam.crop_around(image, points + 100, margin=0.5)
    # clipped at the image border
    crop, offset = aam.crop_around(image, np.array([[0.0, 0.0], [29.0, 19.0]]), margin=1.0)
    assert crop.shape == image.shape and offset.tolist() == [0.0, 0.0]


def test_config_round_trips_through_dict():
    config = aam.AAMConfig(max_iters=(3, 2), patch_shape=((9, 9), (11, 11)), max_images=None)
    from dataclasses import asdict

    as_json_like = {k: list(map(list, v)) if k == "patch_shape" else list(v) if isinstance(v, tuple) else v
                    for k, v in asdict(config).items()}
    assert aam.AAMConfig.from_dict(as_json_like) == config


def test_unknown_feature_names_valid_ones():
    with pytest.raises(KeyError, match="igo"):
        aam.feature("fast_dsift")


def test_sampling_grids_keep_every_nth_row_and_column():
    grids = aam.sampling_grids(aam.AAMConfig(patch_shape=((13, 13), (9, 9)), sampling=4))
    assert [g.shape for g in grids] == [(13, 13), (9, 9)]
    assert grids[0].sum() == 16 and grids[1].sum() == 9 and grids[0][4, 8] and not grids[0][1, 0]
    assert aam.sampling_grids(aam.AAMConfig(sampling=1)) is None


def test_vectorised_gradient_is_identical_to_menpofits():
    lk = aam.import_menpofit("aam.algorithm.lk")
    fast = aam.vectorised_patch_interface()
    assert issubclass(fast, lk.LucasKanadePatchInterface)

    class Patches:  # the pixels attribute is all the gradient reads
        pixels = np.random.default_rng(1).random((68, 1, 2, 13, 13))

    interface = object.__new__(fast)
    interface.patch_shape = (13, 13)
    np.testing.assert_array_equal(fast.gradient(interface, Patches),
                                  lk.LucasKanadePatchInterface.gradient(interface, Patches))


def test_missing_artefact_names_the_build_command(tmp_path):
    with pytest.raises(aam.ArtefactError, match="python -m benchmarks.baselines.aam_train"):
        aam.AAMFitter.load(tmp_path / "nope.pkl")


def test_corrupt_or_foreign_artefact_names_the_build_command(tmp_path):
    path = tmp_path / "aam.pkl"
    path.write_bytes(b"not a pickle")
    with pytest.raises(aam.ArtefactError, match="not a readable AAM pickle.*python -m benchmarks.baselines.aam_train"):
        aam.AAMFitter.load(path)
    path.write_bytes(pickle.dumps({"format": 0}))
    with pytest.raises(aam.ArtefactError, match="format"):
        aam.AAMFitter.load(path)


class _CreatesAFile:
    """Unpickling this calls ``open(path, "w")``: a planted artefact that would write a file on load."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("wrap", [lambda evil: evil, lambda evil: {"format": aam.ARTEFACT_FORMAT, "aam": evil}])
def test_planted_pickle_runs_no_code(tmp_path, wrap):
    marker = tmp_path / "pwned"
    path = tmp_path / "aam.pkl"
    path.write_bytes(pickle.dumps(wrap(_CreatesAFile(marker))))
    assert not marker.exists()
    with pytest.raises(aam.ArtefactError, match=r"aam\.pkl: not a readable AAM pickle.*refusing the global io\.open"):
        aam.AAMFitter.load(path)
    assert not marker.exists(), "loading the artefact ran code from the file"


def test_the_plain_unpickler_would_have_run_it(tmp_path):
    """The planted file is live (so the test above can fail): plain pickle creates the file."""
    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps(_CreatesAFile(marker))).close()
    assert marker.exists()


@pytest.fixture(scope="module")
def tiny_aam(tiny_synth, tmp_path_factory):
    """A patch AAM trained through the CLI on the tiny synthetic training split (6 images)."""
    path = tmp_path_factory.mktemp("aam") / "aam.pkl"
    aam_train.main(["--root", str(tiny_synth), "--out", str(path), "--max-images", "0"])
    return path


def test_trained_aam_self_fit_reduces_error(tiny_aam, tiny_synth):
    fitter = aam.AAMFitter.load(tiny_aam)
    assert fitter.info["n_train"] == 6 and fitter.config.features == "igo"
    train = datasets.load_dataset("300w", tiny_synth, "train")
    rng = np.random.default_rng(0)
    before, after = [], []
    for sample in train[:3]:
        gt = sample.landmarks
        size = float(np.ptp(gt, axis=0).max())
        init = gt + rng.normal(0, 0.02 * size, 2)  # a small shift: the fit must pull it back
        final = fitter(sample.image(), init)
        assert final.shape == (68, 2) and np.isfinite(final).all()
        before.append(metrics.nme(init, gt))
        after.append(metrics.nme(final, gt))
    assert np.mean(after) < 0.5 * np.mean(before), (before, after)


def test_fitter_rejects_a_bad_initial_shape(tiny_aam, tiny_synth):
    fitter = aam.AAMFitter.load(tiny_aam)
    image = datasets.load_dataset("300w", tiny_synth, "test")[0].image()
    with pytest.raises(ValueError, match="initial shape"):
        fitter(image, np.full((68, 2), np.nan))
    with pytest.raises(ValueError, match="initial shape"):
        fitter(image, np.zeros((5, 2)))


def test_shape_outside_the_image_is_returned_unchanged(tiny_aam, tiny_synth):
    fitter = aam.AAMFitter.load(tiny_aam)
    sample = datasets.load_dataset("300w", tiny_synth, "test")[0]
    far = sample.landmarks + 10_000.0
    np.testing.assert_array_equal(fitter(sample.image(), far), far)
    assert fitter.n_outside == 1


@pytest.mark.parametrize("sampling", [4, 1])
def test_the_sampled_wiberg_loop_fits_what_menpofits_loop_fits(tiny_aam, tiny_synth, sampling):
    """The loop at the sampled pixels (benchmarks.baselines.aam_wiberg) against menpofit's own loop and patch
    gradient, from perturbed starts on test faces, with the published sampling and with every pixel."""
    from benchmarks.baselines.aam_wiberg import sampled_wiberg

    ours = aam.AAMFitter.load(tiny_aam, sampling=sampling)
    published = aam.AAMFitter.load(tiny_aam, as_published=True, sampling=sampling)
    assert all(type(a) is sampled_wiberg() for a in ours.fitter.algorithms)
    assert not any(type(a) is sampled_wiberg() for a in published.fitter.algorithms)
    rng = np.random.default_rng(1)
    moved = 0.0
    for sample in datasets.load_dataset("300w", tiny_synth, "test")[:3]:
        gt = sample.landmarks
        start = gt + rng.normal(0, 0.04 * float(np.ptp(gt, axis=0).max()), (1, 2))
        a, b = ours(sample.image(), start), published(sample.image(), start)
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-8)
        moved = max(moved, float(np.abs(a - start).max()))
    assert moved > 0.5     # the fits did move: the comparison is not of two unchanged starts
