"""Table 1: label transfer through UV, the DeepLab-v2 ASPP head, and the segmentation benchmark end to end."""

import numpy as np
import pytest
import torch

from benchmarks import dense_metrics, records as provenance
from benchmarks.experiments import segmentation
from densereg.nn import deeplab, train
from densereg.geometry import camera, rasterize
from densereg.geometry.template import PARTS
from densereg.geometry.templates import builtin_face


@pytest.fixture(scope="module")
def frontal():
    """The built-in template rendered frontally in a 128×128 image (eyes about 60 px apart)."""
    tpl = builtin_face()
    verts = camera.project_ortho(tpl.vertices, np.eye(3), 60.0, 64.0, 64.0)
    return tpl, verts, rasterize.render_gt(tpl, verts, 128, 128)


def test_transfer_of_the_gt_uv_reproduces_the_template_parts(frontal):
    tpl, verts, gt = frontal
    labels = segmentation.transfer_parts(tpl, gt.u, gt.v, gt.mask)
    assert set(np.unique(labels)) == set(range(len(PARTS))), "a frontal face shows all 8 classes"
    iou = dense_metrics.iou_per_class(labels, gt.parts, len(PARTS))
    np.testing.assert_array_equal(iou, np.ones(len(PARTS)))
    assert dense_metrics.mean_iou(iou) == 1.0
    assert (labels[~gt.mask] == 0).all(), "background is 'other'"


def test_transferred_parts_sit_where_the_template_puts_them(frontal):
    tpl, verts, gt = frontal
    labels = segmentation.transfer_parts(tpl, gt.u, gt.v, gt.mask)
    lm = verts[tpl.landmarks, :2]

    def at(point):
        x, y = np.rint(point).astype(int)
        return PARTS[labels[y, x]]

    assert at(lm[36:42].mean(0)) == "left_eye" and at(lm[42:48].mean(0)) == "right_eye"
    assert lm[36:42, 0].mean() < lm[42:48, 0].mean(), "left = the viewer's left"
    assert at(lm[19]) == "left_eyebrow" and at(lm[24]) == "right_eyebrow"
    assert at(lm[30]) == "nose"
    assert at(lm[51]) == "upper_lip"
    assert at(lm[[57, 66]].mean(0)) == "lower_lip"


def test_a_wrong_uv_field_scores_below_one(frontal):
    tpl, _, gt = frontal
    shifted = segmentation.transfer_parts(tpl, np.clip(gt.u + 0.03, 0, 1), gt.v, gt.mask)
    iou = dense_metrics.iou_per_class(shifted, gt.parts, len(PARTS))
    assert iou[PARTS.index("left_eye")] < 0.9 and iou[PARTS.index("nose")] < 1.0
    # Calling the whole face background leaves only "other" partly right.
    none = segmentation.transfer_parts(tpl, gt.u, gt.v, np.zeros_like(gt.mask))
    iou = dense_metrics.iou_per_class(none, gt.parts, len(PARTS))
    assert 0 < iou[0] < 1 and np.all(iou[1:] == 0)


def test_aspp_rates_follow_the_output_stride():
    assert deeplab.aspp_rates(8) == (6, 12, 18, 24)
    assert deeplab.aspp_rates(16) == (3, 6, 9, 12)
    assert deeplab.aspp_rates(32) == (2, 3, 4, 6)


@pytest.mark.parametrize("stride", [8, 16])
def test_aspp_head_shapes_and_branches(stride):
    torch.manual_seed(0)
    net = deeplab.DeepLabV2("resnet18", output_stride=stride, width=8).eval()
    assert [b.dilation for b in net.aspp] == [(r, r) for r in deeplab.aspp_rates(stride)]
    assert all(b.kernel_size == (3, 3) and b.padding == b.dilation for b in net.aspp)
    assert all(b.in_channels == net.backbone.out_channels and b.out_channels == 8 for b in net.aspp)
    x = torch.rand(2, 3, 64, 48)
    with torch.no_grad():
        out = net(x)
        low = net(x, upsample=False)
        feats = net.backbone.features((x - net.mean) / net.std)
    assert out["logits_parts"].shape == (2, 8, 64, 48)
    assert low["logits_parts"].shape == (2, 8, 64 // stride, 48 // stride)
    summed = sum(b(feats) for b in net.aspp)   # the head is the sum of the four branches
    torch.testing.assert_close(low["logits_parts"], summed)
    dec = net.decode(low, size=(64, 48))
    assert dec["parts"].shape == (2, 64, 48) and dec["parts"].dtype == torch.int64
    torch.testing.assert_close(dec["parts"], out["logits_parts"].argmax(1))


def test_deeplab_loss_is_cross_entropy_over_valid_pixels_and_backpropagates():
    torch.manual_seed(0)
    net = deeplab.DeepLabV2("resnet18", output_stride=8, width=8)
    x = torch.rand(2, 3, 32, 32)
    parts = torch.randint(0, 8, (2, 32, 32))
    valid = torch.zeros(2, 32, 32, dtype=torch.bool)
    valid[:, 4:20, 6:30] = True
    out = net(x, upsample=False)
    terms = net.losses(out, {"parts": parts, "valid": valid})
    assert set(terms) == {"cls_parts", "loss"} and torch.isfinite(terms["loss"])
    logits = torch.nn.functional.interpolate(out["logits_parts"], size=(32, 32), mode="bilinear",
                                             align_corners=False)
    by_hand = torch.nn.functional.cross_entropy(logits.permute(0, 2, 3, 1)[valid], parts[valid])
    torch.testing.assert_close(terms["loss"], by_hand)
    terms["loss"].backward()
    assert all(b.weight.grad is not None and torch.isfinite(b.weight.grad).all() for b in net.aspp)
    assert net.backbone.conv1.weight.grad.abs().sum() > 0
    # At initialisation (std 0.01 weights, zero biases) the scores are near uniform: loss ≈ ln 8.
    assert abs(float(terms["loss"].detach()) - np.log(8)) < 0.5


def test_training_examples_carry_part_labels(tiny_synth):
    cfg = train.make_config("tiny", root=str(tiny_synth))
    data = train.TrainingBatches(train.training_samples(cfg), cfg)
    ex = data.example(0, 0)
    assert ex["parts"].dtype == np.int64 and ex["parts"].shape == (cfg.crop, cfg.crop)
    assert (ex["parts"][~ex["mask"]] == 0).all(), "background and padding are 'other'"
    assert (ex["parts"][ex["mask"]] > 0).any(), "the crop shows face parts"


def test_train_and_load_a_deeplab_checkpoint(tiny_synth, tmp_path):
    cfg = train.make_config("tiny", root=str(tiny_synth), task="deeplab", iterations=1)
    path = train.train(cfg, tmp_path / "run", progress=False)
    model, loaded = train.load_model(path)
    assert isinstance(model, deeplab.DeepLabV2) and loaded.task == "deeplab"
    with pytest.raises(ValueError, match="task: checkpoint 'deeplab' vs requested 'densereg'"):
        train.read_checkpoint(path, {**cfg.resolved(), "task": "densereg"})
    with pytest.raises(KeyError, match="valid: densereg, deeplab"):
        train.build_model(train.make_config("tiny", task="unet"))
    labels = deeplab.predict_parts(model, [np.zeros((37, 53, 3), np.uint8), np.zeros((20, 20, 3), np.uint8)])
    assert [lab.shape for lab in labels] == [(37, 53), (20, 20)] and labels[0].dtype == np.uint8


def test_checkpoints_without_a_task_field_are_densereg(tiny_synth, tmp_path):
    cfg = train.make_config("tiny", root=str(tiny_synth), iterations=1)
    path = train.train(cfg, tmp_path / "run", progress=False)
    state = torch.load(path, weights_only=True)
    del state["config"]["task"]                       # a checkpoint from before the DeepLab baseline
    torch.save(state, path)
    train.read_checkpoint(path, cfg.resolved())
    model, loaded = train.load_model(path)
    assert loaded.task == "densereg" and not isinstance(model, deeplab.DeepLabV2)


@pytest.mark.slow   # about 10 s of CPU, but 35-60 s of wall time on the shared 2-core machine
def test_table1_end_to_end_both_methods(tiny_synth, tmp_path, capsys):
    common = ["--source", "synthetic", "--preset", "tiny", "--iterations", "2", "--limit", "2",
              "--root", str(tiny_synth), "--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "res")]
    assert segmentation.main(["--method", "densereg", *common]) == 0
    assert (tmp_path / "runs" / "synthetic" / "densereg-tiny-it2" / "last.pt").is_file()
    assert not (tmp_path / "res" / "figures").exists(), "no figure before both methods have run"
    assert segmentation.main(["--method", "deeplab", *common]) == 0
    assert (tmp_path / "runs" / "synthetic" / "deeplab-tiny-it2" / "last.pt").is_file()
    rows, columns = provenance.read_csv(tmp_path / "res" / "helen.csv")
    assert columns[:10] == ["method", "part", "iou", "source", "preset", "seed", "commit", "torch", "device",
                            "date"]
    assert len(rows) == 2 * 9
    for name in ("DenseReg [limit=2]", "DeepLab-v2 [limit=2]"):
        mine = {r["part"]: r for r in rows if r["method"] == name}
        assert list(mine) == [*PARTS, "average"]
        assert all(r["source"] == "synthetic" and r["preset"] == "tiny+iterations=2" and r["n"] == "2"
                   for r in mine.values())
        ious = [float(mine[p]["iou"]) for p in PARTS if mine[p]["iou"]]
        assert all(0 <= v <= 1 for v in ious)
        assert float(mine["average"]["iou"]) == pytest.approx(np.mean(ious), abs=1e-4)
        assert float(mine["other"]["iou"]) > 0.5, "most of each image is 'other'"
    assert (tmp_path / "res" / "figures" / "fig6_synthetic.png").stat().st_size > 1000
    out = capsys.readouterr().out
    assert "DeepLab-v2 paper (%)" in out and "68.58" in out
    # Re-running replaces the method's rows instead of appending.
    assert segmentation.main(["--method", "deeplab", *common]) == 0
    assert len(provenance.read_csv(tmp_path / "res" / "helen.csv")[0]) == 2 * 9


def test_real_source_without_300w_lp_fittings_says_what_is_missing(tmp_path, capsys):
    folder = tmp_path / "300W" / "helen" / "testset"
    folder.mkdir(parents=True)
    import cv2

    cv2.imwrite(str(folder / "100032540_1.jpg"), np.zeros((40, 40, 3), np.uint8))
    pts = "version: 1\nn_points: 68\n{\n" + "".join(f"{10 + i % 10} {10 + i // 10}\n" for i in range(68)) + "}\n"
    (folder / "100032540_1.pts").write_text(pts)
    code = segmentation.main(["--method", "densereg", "--source", "real", "--root", str(tmp_path),
                              "--results", str(tmp_path / "res")])
    err = capsys.readouterr().err
    assert code == 2
    assert "HELEN_100032540_1_0.mat" in err and "300W-LP" in err and "BFM" in err
    assert not (tmp_path / "res" / "helen.csv").exists()
