"""``python -m densereg.infer`` blames the right thing and leaves no stale or colliding outputs (issue 10)."""

import subprocess
import sys

import numpy as np
import pytest

from densereg import infer
from densereg.data import formats
from densereg.nn import checkpoint as ckpt


def test_two_images_with_one_stem_are_refused_naming_both(tmp_path, capsys):
    a, b = tmp_path / "x" / "face.png", tmp_path / "y" / "face.jpg"
    rc = infer.main([str(a), str(b), "--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and str(a) in err and str(b) in err and "same stem 'face'" in err


def test_an_out_that_is_a_file_is_refused_once(tmp_path, capsys):
    out = tmp_path / "out.txt"
    out.write_text("")
    assert infer.main(["a.png", "b.png", "--checkpoint", str(tmp_path / "none.pt"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: --out {out}: not a folder"]


def test_an_unknown_device_is_blamed_on_the_device(tmp_path, capsys):
    assert infer.main(["a.png", "--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path), "--device",
                       "gpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --device gpu:") and "none.pt" not in err


def test_a_corrupt_checkpoint_message_never_advises_weights_only_false(tmp_path, capsys):
    bad = tmp_path / "last.pt"
    bad.write_bytes(b"garbage" * 10)
    with pytest.raises(ValueError) as exc:
        ckpt.read_checkpoint(bad)
    assert str(bad) in str(exc.value) and "weights_only" not in str(exc.value)
    assert infer.main(["x.png", "--checkpoint", str(bad), "--out", str(tmp_path)]) == 2
    assert "weights_only" not in capsys.readouterr().err


def test_stale_face_files_of_an_earlier_run_are_removed(tmp_path):
    from test_api import H, W, as_uvmap, render
    from densereg.geometry.templates import builtin_face
    from densereg.nn.config import make_config
    from densereg.readout.predictor import DenseReg

    t = builtin_face()
    uvmap = as_uvmap([render(t, (90, 95), seed=1)[0]])
    model = DenseReg(None, make_config("tiny"), t, forward=lambda images: [uvmap for _ in images])
    out = tmp_path / "out"
    out.mkdir()
    for name in ("two_1.pts", "two_2.pts", "two_3.pts", "two_x.pts", "two_1_1.pts"):
        (out / name).write_text("old")
    path = tmp_path / "two.png"
    formats.write_image(path, np.zeros((H, W, 3), np.uint8))
    infer.process(model, path, out)
    left = sorted(p.name for p in out.glob("*.pts"))
    assert left == ["two_1.pts", "two_1_1.pts", "two_x.pts"], "one face now; other images' files kept"
    assert (out / "two_1.pts").read_text() != "old"


def test_help_names_the_bench_mode_and_the_images():
    text = subprocess.run([sys.executable, "-m", "densereg.infer", "--help"], capture_output=True, text=True,
                          check=True).stdout
    assert "--bench" in text and "image files" in text
