"""The bad-input matrix: every class of bad (or merely unusual) input the readers and entry points meet.

Each case builds one input under ``tmp_path`` and reads it the way the project does. A bad input must raise an
error whose message names the offending file and says what is wrong (``expect_error``); an unusual but valid
one must read correctly. One parametrised test runs them all, so the matrix is a single list to read.
"""

from __future__ import annotations

import io
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from densereg.data import datasets as ds
from densereg.data import formats
from densereg.data.formats import DatasetError

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 255, (24, 32, 3), dtype=np.uint8)
POINTS = RNG.uniform(5, 20, (68, 2)).round(3)


def expect_error(fn, path, *problem, exc=Exception):
    """``fn()`` raises ``exc`` whose message names ``path`` and contains every regex of ``problem``."""
    with pytest.raises(exc) as info:
        fn()
    message = str(info.value)
    assert str(path) in message, f"the error does not name {path}: {message}"
    for words in problem:
        assert re.search(words, message), f"the error does not say {words!r}: {message}"
    return message


def pts_text(points, header=True, newline="\n", close=True):
    lines = (["version: 1", f"n_points: {len(points)}"] if header else []) + ["{"]
    lines += [f"{x + 1:.3f} {y + 1:.3f}" for x, y in points] + (["}"] if close else [])
    return newline.join(lines) + newline


# ------------------------------------------------------------------------------------------------------------
# Images


def truncated_image(tmp):
    formats.write_image(tmp / "face.jpg", RGB)
    data = (tmp / "face.jpg").read_bytes()
    (tmp / "cut.jpg").write_bytes(data[: len(data) // 2])
    expect_error(lambda: formats.read_image(tmp / "cut.jpg"), tmp / "cut.jpg", "truncated", exc=DatasetError)


def empty_image(tmp):
    (tmp / "empty.png").write_bytes(b"")
    expect_error(lambda: formats.read_image(tmp / "empty.png"), tmp / "empty.png", "empty file",
                 exc=DatasetError)


def not_an_image(tmp):
    (tmp / "notes.jpg").write_text("these are my notes, saved with the wrong extension\n" * 20)
    message = expect_error(lambda: formats.read_image(tmp / "notes.jpg"), tmp / "notes.jpg",
                           "not a decodable image", "unknown image format", exc=DatasetError)
    assert "BytesIO" not in message   # the decoder's in-memory buffer means nothing to a user


def directory_as_image(tmp):
    (tmp / "looks.png").mkdir()
    expect_error(lambda: formats.read_image(tmp / "looks.png"), tmp / "looks.png", "cannot read",
                 exc=DatasetError)


def greyscale_png(tmp):
    Image.fromarray(RGB[:, :, 1]).save(tmp / "grey.png")
    image = formats.read_image(tmp / "grey.png")
    assert image.shape == (24, 32, 3) and image.dtype == np.uint8
    assert (image == RGB[:, :, 1:2]).all()


def palette_png(tmp):
    Image.fromarray(RGB).convert("P").save(tmp / "palette.png")
    expected = np.asarray(Image.open(tmp / "palette.png").convert("RGB"))
    assert np.array_equal(formats.read_image(tmp / "palette.png"), expected)


def sixteen_bit_png(tmp):
    Image.fromarray(RGB[:, :, 0].astype(np.uint16) * 257).save(tmp / "grey16.png")   # 16-bit grey ("I;16")
    assert np.array_equal(formats.read_image(tmp / "grey16.png"), np.repeat(RGB[:, :, :1], 3, axis=2))
    import cv2
    cv2.imwrite(str(tmp / "rgb16.png"), (RGB.astype(np.uint16) * 257)[:, :, ::-1])  # 16-bit colour
    assert np.array_equal(formats.read_image(tmp / "rgb16.png"), RGB)


def rgba_png(tmp):
    Image.fromarray(np.dstack([RGB, np.full(RGB.shape[:2], 9, np.uint8)])).save(tmp / "rgba.png")
    assert np.array_equal(formats.read_image(tmp / "rgba.png"), RGB)   # alpha dropped, colours in RGB order


# ------------------------------------------------------------------------------------------------------------
# .pts landmark files


def pts_without_header_or_braces(tmp):
    path = tmp / "bare.pts"
    path.write_text("\n".join(f"{x} {y}" for x, y in POINTS))
    expect_error(lambda: formats.read_pts(path), path, "missing '{'", exc=DatasetError)


def pts_without_header_but_braced(tmp):
    path = tmp / "braced.pts"
    path.write_text(pts_text(POINTS, header=False))
    np.testing.assert_allclose(formats.read_pts(path, expected_n=68), POINTS)


def pts_wrong_point_count(tmp):
    path = tmp / "short.pts"
    path.write_text(pts_text(POINTS[:67]))
    expect_error(lambda: formats.read_pts(path, expected_n=68), path, "expected 68 points, found 67",
                 exc=DatasetError)
    path.write_text(pts_text(POINTS).replace("n_points: 68", "n_points: 66"))
    expect_error(lambda: formats.read_pts(path), path, "n_points 66 but 68 points", exc=DatasetError)


def pts_crlf(tmp):
    path = tmp / "crlf.pts"
    path.write_bytes(pts_text(POINTS, newline="\r\n").encode())
    np.testing.assert_allclose(formats.read_pts(path, expected_n=68), POINTS)


def pts_nan(tmp):
    path = tmp / "nan.pts"
    path.write_text(pts_text(POINTS).replace(f"{POINTS[3, 0] + 1:.3f}", "nan", 1))
    expect_error(lambda: formats.read_pts(path), path, "line 7", "non-finite", exc=DatasetError)


def pts_unclosed(tmp):
    path = tmp / "open.pts"
    path.write_text(pts_text(POINTS, close=False))
    expect_error(lambda: formats.read_pts(path), path, "missing closing '}'", exc=DatasetError)


def pts_binary(tmp):
    path = tmp / "binary.pts"
    path.write_bytes(bytes(range(128, 256)))
    expect_error(lambda: formats.read_pts(path), path, "not a text .pts file", exc=DatasetError)


def box_with_three_points(tmp):
    path = tmp / "box.pts"
    path.write_text(pts_text(POINTS[:3]))
    expect_error(lambda: formats.read_box_pts(path), path, "expected 4 points, found 3", exc=DatasetError)


# ------------------------------------------------------------------------------------------------------------
# Dataset folders and fittings


def _lfpw_test_pair(root, stem):
    folder = root / "300W" / "lfpw" / "testset"
    formats.write_image(folder / f"{stem}.png", RGB)
    formats.write_pts(folder / f"{stem}.pts", POINTS)
    return folder


def missing_annotation(tmp):
    folder = _lfpw_test_pair(tmp, "image_0001")
    formats.write_image(folder / "image_0002.png", RGB)     # no image_0002.pts
    (tmp / "300W" / "helen" / "testset").mkdir(parents=True)
    expect_error(lambda: ds.load_dataset("300w", tmp, "common"), folder / "image_0002.png",
                 "image without annotation", exc=DatasetError)


def malformed_annotation_in_dataset(tmp):
    folder = _lfpw_test_pair(tmp, "image_0001")
    (folder / "image_0001.pts").write_text(pts_text(POINTS[:60]))
    (tmp / "300W" / "helen" / "testset").mkdir(parents=True)
    expect_error(lambda: ds.load_dataset("300w", tmp, "common"), folder / "image_0001.pts",
                 "expected 68 points, found 60", exc=DatasetError)


def fitting_missing_a_field(tmp):
    path = tmp / "300W_LP" / "AFW" / "AFW_134212_1_0.mat"
    path.parent.mkdir(parents=True)
    scipy.io.savemat(path, {"Pose_Para": np.zeros((1, 7)), "Shape_Para": np.zeros((199, 1)),
                            "pt2d": POINTS.T + 1})          # no Exp_Para
    expect_error(lambda: formats.read_fitting(path), path, "missing field.*Exp_Para", exc=DatasetError)
    formats.write_image(path.with_suffix(".jpg"), RGB)
    expect_error(lambda: ds.load_dataset("300w-lp", tmp, "all"), path, "Exp_Para", exc=DatasetError)


def fitting_not_a_mat_file(tmp):
    path = tmp / "fit.mat"
    path.write_bytes(b"MATLAB 5.0 MAT-file" + bytes(20))
    expect_error(lambda: formats.read_fitting(path), path, "cannot read .mat file", exc=DatasetError)


# ------------------------------------------------------------------------------------------------------------
# Checkpoints and cached artefacts


def _densereg_checkpoint(path):
    from densereg.nn import checkpoint
    from densereg.nn.config import make_config
    from densereg.nn.tasks import build_model

    cfg = make_config("tiny", template="builtin")
    return checkpoint.save_checkpoint(path, {"model": build_model(cfg).state_dict(), "config": cfg.resolved(),
                                             "step": 0})


def truncated_checkpoint(tmp):
    from densereg.readout.predictor import DenseReg

    path = _densereg_checkpoint(tmp / "last.pt")
    path.write_bytes(path.read_bytes()[:2000])
    expect_error(lambda: DenseReg.load(path, device="cpu"), path, "unreadable checkpoint", "truncated",
                 exc=ValueError)


def checkpoint_of_another_kind(tmp):
    from benchmarks.baselines import mdm
    from densereg.nn import checkpoint
    from densereg.readout.predictor import DenseReg

    path = checkpoint.save_checkpoint(tmp / "mdm.pt", {"model": {}, "config": {"patch": 16}},
                                      kind=mdm.CHECKPOINT_FORMAT)
    expect_error(lambda: DenseReg.load(path, device="cpu"), path, "not a densereg-checkpoint-1 file",
                 re.escape(f"it is a {mdm.CHECKPOINT_FORMAT} checkpoint"), exc=ValueError)


def deeplab_checkpoint_as_densereg(tmp):
    from densereg.nn import checkpoint
    from densereg.nn.config import make_config
    from densereg.readout.predictor import DenseReg

    cfg = make_config("tiny", task="deeplab")
    path = checkpoint.save_checkpoint(tmp / "deeplab.pt", {"model": {}, "config": cfg.resolved()})
    expect_error(lambda: DenseReg.load(path, device="cpu"), path, "deeplab checkpoint, not a DenseReg one",
                 exc=ValueError)


class _Planted:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))      # unpickling it would create a file


def planted_aam_pickle(tmp):
    pytest.importorskip("menpofit")
    from benchmarks.baselines import aam
    from benchmarks.baselines.artefacts import ArtefactError

    path, marker = tmp / "runs" / "synthetic" / "aam.pkl", tmp / "pwned"
    path.parent.mkdir(parents=True)
    path.write_bytes(pickle.dumps({"format": aam.ARTEFACT_FORMAT, "aam": _Planted(marker)}))
    expect_error(lambda: aam.AAMFitter.load(path), path, "refusing the global", exc=ArtefactError)
    assert not marker.exists(), "loading the AAM cache ran code from the file"


# ------------------------------------------------------------------------------------------------------------
# Entry points: benchmarks.run's boxes:DIR and preds:DIR, densereg.infer


def _run_300w(tmp, init, capsys, workers=1):
    from benchmarks import run

    root = tmp / "data"
    for stem in ("indoor_001", "indoor_002"):
        folder = root / "300W" / "300W" / "01_Indoor"
        formats.write_image(folder / f"{stem}.png", RGB)
        formats.write_pts(folder / f"{stem}.pts", POINTS)
    (root / "300W" / "300W" / "02_Outdoor").mkdir(parents=True, exist_ok=True)
    for folder in ("afw", "helen/trainset", "lfpw/trainset"):
        for i in range(2):
            formats.write_image(root / "300W" / folder / f"t{i}.png", RGB)
            formats.write_pts(root / "300W" / folder / f"t{i}.pts", POINTS * (1 + i / 10))
    rc = run.main(["300w", "--init", init, "--root", str(root), "--results", str(tmp / "results"),
                   "--runs", str(tmp / "runs"), "--workers", str(workers), "--no-progress"])
    return rc, capsys.readouterr().err


def box_folder_with_a_three_point_box(tmp, capsys):
    boxes = tmp / "boxes"
    formats.write_box_pts(boxes / "indoor_001.pts", [4, 4, 22, 22])
    (boxes / "indoor_002.pts").write_text(pts_text(POINTS[:3]))
    for workers in (1, 2):     # the error travels back from a worker process too
        rc, err = _run_300w(tmp, f"boxes:{boxes}", capsys, workers)
        assert rc == 2 and not (tmp / "results" / "300w.csv").exists()
        assert f"{boxes / 'indoor_002.pts'}: expected 4 points, found 3" in err


def preds_folder_with_a_malformed_pts(tmp, capsys):
    preds = tmp / "preds"
    formats.write_pts(preds / "indoor_001.pts", POINTS)
    (preds / "indoor_002.pts").write_text(pts_text(POINTS, close=False))
    rc, err = _run_300w(tmp, f"preds:{preds}", capsys)
    assert rc == 2 and not (tmp / "results" / "300w.csv").exists()
    assert f"{preds / 'indoor_002.pts'}: missing closing '}}'" in err


def infer_on_an_unreadable_image(tmp, capsys):
    from densereg import infer

    checkpoint = _densereg_checkpoint(tmp / "last.pt")
    good, bad = tmp / "good.png", tmp / "bad.jpg"
    formats.write_image(good, RGB)
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    rc = infer.main([str(bad), str(good), "--checkpoint", str(checkpoint), "--out", str(tmp / "out"),
                     "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert len(err) == 2 and err[0].startswith(f"error: {bad}: not a decodable image")
    assert err[1] == "1 of 2 images failed"
    assert (tmp / "out" / "good.npz").is_file() and not list((tmp / "out").glob("bad*"))


CASES = [
    truncated_image, empty_image, not_an_image, directory_as_image, greyscale_png, palette_png,
    sixteen_bit_png, rgba_png,
    pts_without_header_or_braces, pts_without_header_but_braced, pts_wrong_point_count, pts_crlf, pts_nan,
    pts_unclosed, pts_binary, box_with_three_points,
    missing_annotation, malformed_annotation_in_dataset, fitting_missing_a_field, fitting_not_a_mat_file,
    truncated_checkpoint, checkpoint_of_another_kind, deeplab_checkpoint_as_densereg, planted_aam_pickle,
    box_folder_with_a_three_point_box, preds_folder_with_a_malformed_pts, infer_on_an_unreadable_image,
]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_bad_input(case, tmp_path, capsys):
    if "capsys" in case.__code__.co_varnames[: case.__code__.co_argcount]:
        case(tmp_path, capsys)
    else:
        case(tmp_path)
