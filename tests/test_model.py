"""DenseReg network: torchvision-compatible trunks, head shapes, hand-checked losses, exact decode."""

import math

import pytest
import torch

from densereg.nn.backbone import BACKBONES, build_backbone, count_parameters, load_backbone_weights
from densereg.nn.model import REG_WEIGHT_PLAIN, REG_WEIGHT_QUANTISED, VARIANTS, DenseRegNet, decode, densereg_losses


def torchvision_layout(layers, bottleneck, num_classes=1000):
    """The state-dict names and shapes of torchvision's resnet18/34/50/101, written out from its design.

    Stem conv1 (64, 3, 7, 7) + bn1; four stages of 64·2^i planes; a BasicBlock has conv1/bn1/conv2/bn2 (two
    3×3), a Bottleneck conv1 (1×1), conv2 (3×3), conv3 (1×1, 4× planes) with their BNs; the first block of a
    stage has downsample.0 (1×1 conv) + downsample.1 (BN) when the stride or the channel count changes; fc.
    Every BN holds weight, bias, running_mean, running_var and a scalar num_batches_tracked.
    """
    spec = {}

    def bn(prefix, c):
        for name in ("weight", "bias", "running_mean", "running_var"):
            spec[f"{prefix}.{name}"] = (c,)
        spec[f"{prefix}.num_batches_tracked"] = ()

    spec["conv1.weight"] = (64, 3, 7, 7)
    bn("bn1", 64)
    expansion = 4 if bottleneck else 1
    cin = 64
    for i, blocks in enumerate(layers):
        planes = 64 * 2 ** i
        for b in range(blocks):
            p = f"layer{i + 1}.{b}"
            if bottleneck:
                spec[f"{p}.conv1.weight"] = (planes, cin, 1, 1)
                spec[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
                spec[f"{p}.conv3.weight"] = (planes * 4, planes, 1, 1)
                bn(f"{p}.bn1", planes), bn(f"{p}.bn2", planes), bn(f"{p}.bn3", planes * 4)
            else:
                spec[f"{p}.conv1.weight"] = (planes, cin, 3, 3)
                spec[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
                bn(f"{p}.bn1", planes), bn(f"{p}.bn2", planes)
            stride = 1 if i == 0 else 2
            if b == 0 and (stride != 1 or cin != planes * expansion):
                spec[f"{p}.downsample.0.weight"] = (planes * expansion, cin, 1, 1)
                bn(f"{p}.downsample.1", planes * expansion)
            cin = planes * expansion
    spec["fc.weight"] = (num_classes, cin)
    spec["fc.bias"] = (num_classes,)
    return spec


# Public torchvision facts: state-dict entries (with fc and num_batches_tracked) and parameter counts.
TORCHVISION = {
    "resnet18": dict(layers=(2, 2, 2, 2), bottleneck=False, entries=122, params=11_689_512),
    "resnet50": dict(layers=(3, 4, 6, 3), bottleneck=True, entries=320, params=25_557_032),
}


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_state_dict_matches_torchvision(name):
    ref = TORCHVISION[name]
    spec = torchvision_layout(ref["layers"], ref["bottleneck"])
    assert len(spec) == ref["entries"]
    assert "layer2.0.downsample.0.weight" in spec and "bn1.running_mean" in spec
    model = build_backbone(name, num_classes=1000)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == spec
    assert count_parameters(model) == ref["params"]


def test_dilation_keeps_parameter_shapes():
    shapes = [{k: v.shape for k, v in build_backbone("resnet18", output_stride=s).state_dict().items()}
              for s in (8, 16, 32)]
    assert shapes[0] == shapes[1] == shapes[2]


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
@pytest.mark.parametrize("stride,side", [(8, 9), (16, 5), (32, 3)])
def test_output_stride(name, stride, side):
    # An input of side 8k+1 gives k+1 features at OS8 (as in the released model: 65 → 9).
    trunk = build_backbone(name, output_stride=stride, width=8).eval()
    with torch.no_grad():
        feats = trunk.features(torch.zeros(1, 3, 65, 65))
    assert feats.shape == (1, trunk.out_channels, side, side)
    assert trunk.out_channels == 8 * 8 * (4 if name == "resnet50" else 1)


def test_bad_names_list_valid_keys():
    with pytest.raises(KeyError, match="valid: resnet101, resnet18, resnet34, resnet50"):
        build_backbone("resnet19")
    with pytest.raises(KeyError, match="q\\+r"):
        DenseRegNet("resnet18", variant="qr", width=8)
    with pytest.raises(ValueError, match="output_stride"):
        build_backbone("resnet18", output_stride=4)
    with pytest.raises(ValueError, match="K=1"):
        DenseRegNet("resnet18", variant="regression", K=10, width=8)


def _targets(B, H, W, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(B, H, W, dtype=torch.bool)
    mask[:, H // 4: 3 * H // 4, W // 4: 3 * W // 4] = True
    u = torch.where(mask, torch.rand(B, H, W, generator=g), torch.tensor(float("nan")))
    v = torch.where(mask, torch.rand(B, H, W, generator=g), torch.tensor(float("nan")))
    depth = torch.where(mask, torch.rand(B, H, W, generator=g), torch.tensor(float("nan")))
    return {"u": u, "v": v, "mask": mask, "depth": depth}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_forward_backward(backbone, variant):
    torch.manual_seed(0)
    # Tiny width and input (17 → 3×3 features at OS8) keep the 12 cases fast; shapes do not depend on them.
    model = DenseRegNet(backbone, output_stride=8, variant=variant, depth=True, width=4)
    K = model.K
    assert K == (1 if variant == "regression" else 10)
    out = model(torch.rand(2, 3, 17, 17))
    assert out["logits_u"].shape == out["logits_v"].shape == (2, K + 1, 17, 17)
    assert out["depth"].shape == (2, 1, 17, 17)
    if variant == "q":
        assert "res_u" not in out and "res_v" not in out
    else:
        assert out["res_u"].shape == out["res_v"].shape == (2, K, 17, 17)
    losses = model.losses(out, _targets(2, 17, 17))
    expected = {"cls_u", "cls_v", "depth", "loss"} | (set() if variant == "q" else {"reg_u", "reg_v"})
    assert set(losses) == expected
    assert all(torch.isfinite(t) for t in losses.values())
    losses["loss"].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.cls_u.weight.grad.abs().sum() > 0 and model.backbone.conv1.weight.grad.abs().sum() > 0


def test_uint8_input_is_scaled():
    model = DenseRegNet("resnet18", output_stride=16, width=8).eval()
    img = torch.randint(0, 256, (1, 3, 33, 33), dtype=torch.uint8)
    with torch.no_grad():
        a, b = model(img), model(img.float() / 255)
    torch.testing.assert_close(a["logits_u"], b["logits_u"])


def test_default_regression_weights():
    assert DenseRegNet("resnet18", width=8).reg_weight == REG_WEIGHT_QUANTISED == 40
    assert DenseRegNet("resnet18", variant="regression", width=8).reg_weight == REG_WEIGHT_PLAIN == 70
    assert DenseRegNet("resnet18", K=1, width=8).reg_weight == 70


def test_regression_variant_is_q_plus_r_with_one_bin():
    torch.manual_seed(3)
    plain = DenseRegNet("resnet18", output_stride=16, variant="regression", width=8).eval()
    torch.manual_seed(3)
    k1 = DenseRegNet("resnet18", output_stride=16, variant="q+r", K=1, width=8).eval()
    x = torch.rand(1, 3, 33, 33)
    with torch.no_grad():
        a, b = plain(x), k1(x)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _hand_outputs():
    """A 4×4, K=2 example whose losses are written out by hand in the test below."""
    nan = float("nan")
    K = 2
    u = torch.full((1, 4, 4), nan)
    u[0, 0, 0], u[0, 0, 1], u[0, 0, 2], u[0, 1, 0] = 0.1, 0.6, 1.0, 0.3
    mask = torch.isfinite(u)
    v = torch.where(mask, torch.tensor(0.5), torch.tensor(nan))  # v = 0.5 is bin 1 (class 2), t = 0
    valid = torch.ones(1, 4, 4, dtype=torch.bool)
    valid[0, 1, 0] = False  # a foreground pixel that must not count (u = 0.3, huge residual error below)
    valid[0, 3, 3] = False  # a background pixel that must not count
    logits_u = torch.zeros(1, K + 1, 4, 4)
    logits_u[0, 1, 0, 0] = math.log(3.0)  # softmax (1/5, 3/5, 1/5) at a pixel of class 1
    logits_v = torch.zeros(1, K + 1, 4, 4)
    res_u = torch.stack([torch.full((4, 4), 0.25), torch.full((4, 4), 0.75)])[None].clone()
    res_u[0, 1, 0, 2] = 2.5  # |2.5 - 1.0| = 1.5 > 1: the linear branch of smooth-L1
    res_u[0, 0, 1, 0] = 100.0  # at the invalid pixel
    res_v = torch.zeros(1, K, 4, 4)
    outputs = {"logits_u": logits_u, "logits_v": logits_v, "res_u": res_u, "res_v": res_v}
    targets = {"u": u, "v": v, "mask": mask, "valid": valid}
    return outputs, targets


def test_losses_by_hand():
    outputs, targets = _hand_outputs()
    losses = densereg_losses(outputs, targets, K=2, reg_weight=40.0)
    # 14 valid pixels; one has cross-entropy -log(3/5), the other 13 have log(3) (uniform over 3 classes).
    assert losses["cls_u"].item() == pytest.approx((13 * math.log(3) + math.log(5 / 3)) / 14, rel=1e-6)
    assert losses["cls_v"].item() == pytest.approx(math.log(3), rel=1e-6)
    # Valid foreground: u=0.1 → bin 0, t=0.2, pred 0.25 → 0.5·0.05²; u=0.6 → bin 1, t=0.2, pred 0.75 →
    # 0.5·0.55²; u=1.0 → bin 1, t=1.0, pred 2.5 → 1.5 - 0.5. Mean over 3 pixels, times 40.
    reg_u = 40 * (0.5 * 0.05 ** 2 + 0.5 * 0.55 ** 2 + (1.5 - 0.5)) / 3
    assert losses["reg_u"].item() == pytest.approx(reg_u, rel=1e-6)
    assert losses["reg_v"].item() == pytest.approx(0.0, abs=1e-7)
    total = losses["cls_u"] + losses["cls_v"] + losses["reg_u"] + losses["reg_v"]
    assert losses["loss"].item() == pytest.approx(total.item(), rel=1e-6)


def test_losses_resize_low_resolution_outputs():
    outputs, targets = _hand_outputs()
    full = densereg_losses(outputs, targets, K=2, reg_weight=40.0)
    # Spatially constant maps are unchanged by bilinear upsampling, so 2×2 outputs must give the same loss
    # as the same constants at 4×4.
    const = {k: v[..., 2:4, 2:4].mean(dim=(-2, -1), keepdim=True).expand(*v.shape[:2], 2, 2).contiguous()
             for k, v in outputs.items()}
    const_full = {k: v[..., :1, :1].expand(*v.shape[:2], 4, 4) for k, v in const.items()}
    a = densereg_losses(const, targets, K=2, reg_weight=40.0)
    b = densereg_losses(const_full, targets, K=2, reg_weight=40.0)
    assert all(a[k].item() == pytest.approx(b[k].item(), rel=1e-6) for k in a)
    assert a["loss"].item() != pytest.approx(full["loss"].item())


def test_losses_with_nothing_valid_are_zero_and_differentiable():
    outputs, targets = _hand_outputs()
    outputs = {k: v.requires_grad_() for k, v in outputs.items()}
    targets["valid"] = torch.zeros(1, 4, 4, dtype=torch.bool)
    losses = densereg_losses(outputs, targets, K=2, reg_weight=40.0)
    assert losses["loss"].item() == 0.0
    losses["loss"].backward()


def test_depth_loss_by_hand():
    depth_pred = torch.full((1, 1, 2, 2), 0.5)
    targets = {"u": torch.tensor([[[0.2, float("nan")], [0.7, 0.9]]]),
               "v": torch.tensor([[[0.2, float("nan")], [0.7, 0.9]]]),
               "mask": torch.tensor([[[True, False], [True, True]]]),
               "depth": torch.tensor([[[0.1, 0.9], [0.5, float("nan")]]])}
    outputs = {"logits_u": torch.zeros(1, 11, 2, 2), "logits_v": torch.zeros(1, 11, 2, 2),
               "depth": depth_pred}
    losses = densereg_losses(outputs, targets, K=10, reg_weight=40.0, depth_weight=70.0)
    # Foreground with finite depth: (0,0) error 0.4 and (1,0) error 0; background (0,1) does not count.
    assert losses["depth"].item() == pytest.approx(70 * (0.5 * 0.4 ** 2 + 0.0) / 2, rel=1e-6)


@pytest.mark.parametrize("K", [1, 5, 10])
def test_decode_perfect_outputs_recovers_uv(K):
    t = _targets(2, 12, 10, seed=K)
    outputs = {}
    for a in ("u", "v"):
        uv = t[a]
        cls = torch.where(t["mask"], (uv * K).floor().clamp(0, K - 1).long() + 1, 0)
        outputs[f"logits_{a}"] = 30.0 * torch.nn.functional.one_hot(cls, K + 1).permute(0, 3, 1, 2).float()
        residual = torch.nan_to_num(uv * K - (cls - 1).clamp(min=0))
        outputs[f"res_{a}"] = residual[:, None].expand(-1, K, -1, -1).contiguous()
    dec = decode(outputs, K)
    assert torch.equal(dec["mask"], t["mask"])
    fg = t["mask"]
    for a in ("u", "v"):
        assert torch.isnan(dec[a][~fg]).all() and torch.isnan(dec[f"{a}_q"][~fg]).all()
        torch.testing.assert_close(dec[a][fg], t[a][fg], rtol=0, atol=1e-6)
        assert (dec[f"{a}_q"][fg] - t[a][fg]).abs().max() <= 0.5 / K + 1e-6
    # A classification-only output decodes to the bin centre.
    q_only = decode({k: v for k, v in outputs.items() if k.startswith("logits")}, K)
    torch.testing.assert_close(q_only["u"], dec["u_q"], equal_nan=True)


def test_decode_resizes_and_reports_depth():
    model = DenseRegNet("resnet18", output_stride=8, width=8, depth=True).eval()
    with torch.no_grad():
        low = model(torch.rand(1, 3, 41, 41), upsample=False)
    dec = model.decode(low, size=(41, 41))
    assert dec["u"].shape == dec["fg_prob"].shape == dec["depth"].shape == (1, 41, 41)
    assert ((dec["fg_prob"] >= 0) & (dec["fg_prob"] <= 1)).all()
    fg = dec["mask"]
    assert torch.isnan(dec["u"][~fg]).all() and (dec["u"][fg] >= 0).all() and (dec["u"][fg] <= 1).all()


def _save(state, path):
    torch.save(state, path)
    return path


def test_load_backbone_weights(tmp_path):
    torch.manual_seed(1)
    reference = build_backbone("resnet18", num_classes=1000)  # stands in for torchvision.models.resnet18()
    path = _save(reference.state_dict(), tmp_path / "resnet18.pth")
    model = DenseRegNet("resnet18", output_stride=8)
    assert load_backbone_weights(model, path) == 120  # 122 entries minus fc.weight and fc.bias
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, reference.state_dict()[k]), k
    via_constructor = DenseRegNet("resnet18", output_stride=16, pretrained=path)
    assert torch.equal(via_constructor.backbone.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)


def test_load_backbone_weights_errors_name_file_and_keys(tmp_path):
    state = build_backbone("resnet18", num_classes=1000).state_dict()
    with pytest.raises(FileNotFoundError, match="absent.pth"):
        load_backbone_weights(DenseRegNet("resnet18", width=8), tmp_path / "absent.pth")
    path = _save(state, tmp_path / "full.pth")
    with pytest.raises(ValueError, match=r"full\.pth.*mis-shaped keys: bn1\.bias \(file \(64,\), model \(32,\)\)"):
        load_backbone_weights(DenseRegNet("resnet18", width=32), path)
    broken = dict(state)
    del broken["layer3.1.bn2.running_var"]
    broken["layer5.0.conv1.weight"] = torch.zeros(1)
    path = _save(broken, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match=r"broken\.pth.*missing keys: layer3\.1\.bn2\.running_var; "
                                         r"unexpected keys: layer5\.0\.conv1\.weight"):
        load_backbone_weights(DenseRegNet("resnet18"), path)
    path = _save({"weights": [1, 2]}, tmp_path / "notastate.pth")
    with pytest.raises(ValueError, match="notastate.pth.*state dict"):
        load_backbone_weights(DenseRegNet("resnet18", width=8), path)


def test_freeze_bn_keeps_statistics():
    model = DenseRegNet("resnet18", output_stride=16, width=8, freeze_bn=True).train()
    before = model.backbone.bn1.running_mean.clone()
    model(torch.rand(2, 3, 33, 33))
    assert torch.equal(before, model.backbone.bn1.running_mean)
    assert not model.backbone.bn1.weight.requires_grad and model.cls_u.weight.requires_grad
    bn_params = sum(p.numel() for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)
                    for p in m.parameters())
    assert count_parameters(model, trainable_only=True) == count_parameters(model) - bn_params
