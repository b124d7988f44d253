"""The HOG+SVM detector, its training, and dlib's 68-point shape predictor (benchmarks/baselines/hogsvm.py)."""

import numpy as np
import pytest

pytest.importorskip("dlib")

from benchmarks.baselines import hogsvm
from benchmarks import metrics  # noqa: E402
from benchmarks.baselines.artefacts import ArtefactError  # noqa: E402
from densereg.geometry.boxes import iou  # noqa: E402
from densereg.data import datasets, formats  # noqa: E402
from densereg.geometry import mirror  # noqa: E402


def test_yaw_proxy_is_zero_when_symmetric_and_flips_sign_when_mirrored(tiny_synth):
    for sample in datasets.load_dataset("300w", tiny_synth, "train"):
        yaw = hogsvm.yaw_proxy(sample.landmarks)
        mirrored = mirror.mirror_landmarks(sample.landmarks, 256)
        assert -1.0 <= yaw <= 1.0
        assert hogsvm.yaw_proxy(mirrored) == pytest.approx(-yaw, abs=1e-9)
    symmetric = np.zeros((68, 2))
    symmetric[:17, 0] = np.linspace(-1, 1, 17)
    symmetric[36], symmetric[45] = [-0.5, -0.5], [0.5, -0.5]
    assert hogsvm.yaw_proxy(symmetric) == pytest.approx(0.0)
    assert hogsvm.component_of(0.1, 0.3) == "frontal"
    assert hogsvm.component_of(-0.5, 0.3) == "left" and hogsvm.component_of(0.5, 0.3) == "right"


def test_square_box_keeps_centre_and_takes_the_longer_side():
    box = hogsvm.square_box([10, 20, 30, 60])
    np.testing.assert_allclose(box, [0, 20, 40, 60])


def test_missing_or_corrupt_detector_names_the_build_command(tmp_path):
    with pytest.raises(ArtefactError, match="python -m benchmarks.baselines.hogsvm train"):
        hogsvm.HogSvmDetector(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"garbage")
    with pytest.raises(ArtefactError, match="not a readable hog-svm detector.*python -m benchmarks.baselines.hogsvm train"):
        hogsvm.HogSvmDetector(bad)


@pytest.fixture(scope="module")
def detector_bench(tmp_path_factory):
    """A 40-image synthetic training split and a detector trained on it through the CLI."""
    from densereg.data import synth

    root = tmp_path_factory.mktemp("hog") / "bench"
    synth.generate(root, seed=5, counts={"train": 40, "test": 4, "helen": 0}, workers=1, progress=False)
    path = root.parent / "hog.npz"
    hogsvm.main(["train", "--root", str(root), "--out", str(path), "--max-images", "0"])
    return root, path


@pytest.mark.slow
def test_trained_detector_finds_the_training_faces(detector_bench):
    root, path = detector_bench
    detector = hogsvm.HogSvmDetector(path, adjust_threshold=-0.5)
    assert detector.info["components"] == list(hogsvm.COMPONENTS) and len(detector.detectors) == 3
    samples = datasets.load_dataset("300w", root, "train")
    found = 0
    for sample in samples[:10]:
        detections = detector.detect(sample.image())
        scores = [score for _, score in detections]
        assert scores == sorted(scores, reverse=True)
        found += max((iou(box, sample.box) for box, _ in detections), default=0.0) >= 0.5
    assert found >= 8, f"found {found} of 10 training faces"


@pytest.fixture
def real_face(real_fixtures):
    stem = real_fixtures / "300W" / "lfpw" / "trainset" / "image_0001"
    return formats.read_image(stem.with_suffix(".png")), formats.read_pts(stem.with_suffix(".pts"), 68)


def test_builtin_detector_and_shape_predictor_on_a_real_face(real_face):
    image, gt = real_face
    detections = hogsvm.HogSvmDetector().detect(image, upsample=0)
    assert detections, "dlib's frontal face detector found no face"
    box = max((box for box, _ in detections), key=lambda b: iou(b, datasets.landmarks_box(gt)))
    assert iou(box, datasets.landmarks_box(gt)) >= 0.5
    shape = hogsvm.DlibShapePredictor()(image, box)
    assert shape.shape == (68, 2)
    assert metrics.nme(shape, gt) < 0.1


def test_shape_predictor_is_found_without_importing_its_package():
    import sys

    path = hogsvm.shape_predictor_path()
    assert path.name == "shape_predictor_68_face_landmarks.dat" and path.is_file()
    assert "face_recognition_models" not in sys.modules
