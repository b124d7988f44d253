"""The synthetic benchmark: determinism, native formats read back, landmarks and dense GT consistent."""

import os

import numpy as np
import pytest

from densereg.data import check, datasets, formats, groundtruth, synth
from densereg.geometry import rasterize
from densereg.geometry.templates import builtin_face


def test_render_scene_is_deterministic():
    a = synth.render_scene(builtin_face(), np.random.default_rng([7, 1, 2]))
    b = synth.render_scene(builtin_face(), np.random.default_rng([7, 1, 2]))
    assert np.array_equal(a.image, b.image) and np.array_equal(a.landmarks, b.landmarks)
    c = synth.render_scene(builtin_face(), np.random.default_rng([7, 1, 3]))
    assert not np.array_equal(a.image, c.image)


def test_generated_tree_reads_back_with_the_real_readers(tiny_synth):
    train = datasets.load_dataset("300w", tiny_synth, "train")
    test = datasets.load_dataset("300w", tiny_synth, "test")
    indoor = datasets.load_dataset("300w", tiny_synth, "indoor")
    lp = datasets.load_dataset("300w-lp", tiny_synth, "train")
    helen = datasets.load_dataset("helen", tiny_synth, "test")
    assert (len(train), len(test), len(indoor), len(lp), len(helen)) == (6, 4, 2, 6, 2)
    for s in train + test + helen:
        assert s.landmarks.shape == (68, 2) and np.isfinite(s.landmarks).all()
        img = s.image()
        assert img.shape == (synth.IMAGE_SIZE, synth.IMAGE_SIZE, 3) and img.dtype == np.uint8
    assert all("fitting" in s.extras for s in lp + test + helen)
    manifest = synth.read_manifest(tiny_synth)
    assert manifest["counts"] == {"train": 6, "test": 4, "helen": 2}
    problems, counts = check.check_tree(tiny_synth)
    assert problems == [] and counts["mat"] == 12


def test_landmarks_are_projections_of_the_fitted_template(tiny_synth):
    for s in datasets.load_dataset("300w", tiny_synth, "test"):
        fitting = formats.read_fitting(s.extras["fitting"])
        verts = groundtruth.posed_vertices(fitting, builtin_face(), synth.IMAGE_SIZE)
        proj = verts[builtin_face().landmarks, :2]
        # .pts keeps 6 decimals and Pose_Para is float32 on disk, as in real 300W-LP files.
        assert np.abs(proj - s.landmarks).max() < 0.01


def test_dense_gt_reads_back_visible_landmarks(tiny_synth):
    """The rendered UV field puts each visible landmark's UV within ~1 px of its projection."""
    template = builtin_face()
    errors = []
    for s in datasets.load_dataset("300w", tiny_synth, "test"):
        fitting = formats.read_fitting(s.extras["fitting"])
        verts = groundtruth.posed_vertices(fitting, template, synth.IMAGE_SIZE)
        raster = rasterize.rasterize(verts, template.triangles, template.uv, synth.IMAGE_SIZE, synth.IMAGE_SIZE)
        gt = groundtruth.dense_gt(s, template)
        lm = template.landmarks
        seen = rasterize.visible_vertices(verts[lm], raster.depth, tol=0.5, margin=1, max_step=3)
        if seen.sum() == 0:
            continue
        err = rasterize.uv_readback_error(gt.u, gt.v, gt.mask, verts, template.uv, lm[seen])
        errors.append(err)
    errors = np.concatenate(errors)
    assert len(errors) > 50
    assert np.median(errors) <= 1.0 and np.percentile(errors, 90) <= 1.5


def test_dense_gt_needs_a_fitting(tiny_synth):
    s = datasets.load_dataset("300w", tiny_synth, "train")[0]
    s.extras.pop("fitting", None)
    with pytest.raises(ValueError, match="no 3D fitting"):
        groundtruth.dense_gt(s)


def test_ensure_synthetic_reuses_a_complete_benchmark(tiny_synth, monkeypatch):
    called = []
    monkeypatch.setattr(synth, "generate", lambda *a, **k: called.append(1))
    root = synth.ensure_synthetic(tiny_synth, seed=3, counts={"train": 6, "test": 4, "helen": 2})
    assert root == tiny_synth and not called


def test_preview_grid(tiny_synth, tmp_path):
    out = synth.preview(tiny_synth, tmp_path / "grid.png", n=4)
    img = formats.read_image(out)
    assert img.shape[0] == 2 * synth.IMAGE_SIZE and img.shape[1] == 4 * synth.IMAGE_SIZE


def test_interrupted_generation_leaves_no_temp_folder(tmp_path, monkeypatch):
    calls = []

    def interrupted(item):
        calls.append(item)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return synth._render_and_write(item)

    monkeypatch.setattr(synth, "_render_and_write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        synth.generate(tmp_path / "bench", counts={"train": 2, "test": 1, "helen": 0}, workers=1, progress=False)
    assert len(calls) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == []       # neither bench/ nor bench.tmp-<pid>/


def test_stale_temp_folders_of_dead_processes_are_removed(tmp_path, monkeypatch):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead_pid = int(dead.stdout)
    (tmp_path / f"bench.tmp-{dead_pid}").mkdir()
    (tmp_path / f"bench.tmp-{dead_pid}" / "half.png").write_bytes(b"x")
    (tmp_path / f"bench.tmp-{os.getppid()}").mkdir()                 # a live process's build: left alone
    monkeypatch.setattr(synth, "_render_and_write", lambda item: None)
    synth.generate(tmp_path / "bench", counts={"train": 1, "test": 0, "helen": 0}, workers=1, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench", f"bench.tmp-{os.getppid()}"]


def test_generate_never_replaces_a_folder_it_did_not_create(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(FileExistsError, match="synth.json"):
        synth.generate(tmp_path / "mine", counts={"train": 1, "test": 0, "helen": 0}, workers=1, progress=False)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_manifest_records_background_photos_and_a_change_rebuilds(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(synth, "_render_and_write", lambda item: calls.append(item))
    monkeypatch.setattr(synth.os, "cpu_count", lambda: 1)     # one worker: render in this process
    counts = {"train": 1, "test": 0, "helen": 0}
    synth.ensure_synthetic(tmp_path / "bench", counts=counts)
    assert synth.read_manifest(tmp_path / "bench")["background_photos"] == synth.appearance.background_photos()
    synth.ensure_synthetic(tmp_path / "bench", counts=counts)
    assert len(calls) == 1                                   # same environment: reused
    monkeypatch.setattr(synth.appearance, "background_photos", lambda: ["only-this.jpg"])
    synth.ensure_synthetic(tmp_path / "bench", counts=counts)
    assert len(calls) == 2                                   # other photos: rebuilt
    assert synth.read_manifest(tmp_path / "bench")["background_photos"] == ["only-this.jpg"]


def test_a_render_worker_that_dies_stops_the_build_and_leaves_nothing(tmp_path, monkeypatch):
    """A worker killed mid-render (segfault, OOM) ends the build with an error naming the image, never a hang."""
    render = synth._render_and_write

    def dies_on_second_image(args):
        if args[3] == 1:
            os._exit(3)
        return render(args)

    monkeypatch.setattr(synth, "_render_and_write", dies_on_second_image)
    with pytest.raises(RuntimeError, match=r"train image 1 died \(exit code 3\)"):
        synth.generate(tmp_path / "bench", counts={"train": 3, "test": 0, "helen": 0}, workers=2, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
