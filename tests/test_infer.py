"""``python -m densereg.infer``: per-image outputs, and a bad file named on one line without stopping the rest."""

import numpy as np
import pytest

from densereg import infer
from densereg.data import formats
from densereg.nn import train
from densereg.readout.predictor import DenseReg


@pytest.fixture(scope="module")
def checkpoint(tiny_synth, tmp_path_factory):
    cfg = train.make_config("tiny", root=str(tiny_synth), iterations=1)
    return train.train(cfg, tmp_path_factory.mktemp("infer") / "run", progress=False)


def test_cli_writes_outputs_and_names_a_bad_file(checkpoint, tmp_path, capsys):
    rng = np.random.default_rng(0)
    good = [tmp_path / "a.png", tmp_path / "b.jpg"]
    formats.write_image(good[0], rng.integers(0, 255, (40, 56, 3), dtype=np.uint8))
    formats.write_image(good[1], rng.integers(0, 255, (33, 30, 3), dtype=np.uint8))
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    out = tmp_path / "out"
    rc = infer.main([str(good[0]), str(bad), str(good[1]), "--checkpoint", str(checkpoint), "--out", str(out),
                     "--device", "cpu"])
    assert rc == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len([line for line in err if "broken.png" in line]) == 1 and err[0].startswith(f"error: {bad}")
    for path in good:
        shape = formats.read_image(path).shape[:2]
        with np.load(out / f"{path.stem}.npz") as f:
            assert set(f.files) >= {"u", "v", "mask", "fg_prob", "parts"} and "depth" not in f.files
            assert f["u"].shape == shape and f["mask"].dtype == bool
        assert formats.read_image(out / f"{path.stem}_parts.png").shape[:2] == shape
        assert formats.read_image(out / f"{path.stem}_overlay.png").shape[:2] == shape
    assert not list(out.glob("broken*"))
    assert infer.main([str(good[0]), "--checkpoint", str(checkpoint), "--out", str(out)]) == 0


def test_cli_names_a_bad_checkpoint(tmp_path, capsys):
    bad = tmp_path / "last.pt"
    bad.write_bytes(b"junk")
    assert infer.main(["x.png", "--checkpoint", str(bad), "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {bad}: unreadable checkpoint")


def test_faces_are_written_as_one_based_pts(tmp_path):
    """With an oracle UV field (see test_api) every face found gets its own 1-based .pts file."""
    from test_api import H, W, as_uvmap, render
    from densereg.geometry.templates import builtin_face
    from densereg.nn.config import make_config

    t = builtin_face()
    (gt_a, lm_a), (gt_b, lm_b) = render(t, (90, 95), seed=1), render(t, (270, 90), seed=2)
    uvmap = as_uvmap([gt_a, gt_b])
    model = DenseReg(None, make_config("tiny"), t, forward=lambda images: [uvmap for _ in images])
    path = tmp_path / "two.png"
    formats.write_image(path, np.zeros((H, W, 3), np.uint8))
    written = infer.process(model, path, tmp_path / "out")
    pts = sorted(p.name for p in written if p.suffix == ".pts")
    assert pts == ["two_1.pts", "two_2.pts"]
    found = [formats.read_pts(tmp_path / "out" / name) for name in pts]
    for truth in (lm_a, lm_b):
        best = min(np.median(np.linalg.norm(f - truth, axis=1)) for f in found)
        assert best < 1.5
    first = model.faces(path)[0].landmarks[0]
    raw = [float(x) for x in (tmp_path / "out" / "two_1.pts").read_text().splitlines()[3].split()]
    np.testing.assert_allclose(raw, first + 1, atol=1e-5)      # 1-based on disk
