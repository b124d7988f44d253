"""The inference speed-ups compute what the plain path computes: folded batch norm, the CPU decode, FLOP count."""

import numpy as np
import pytest
import torch
import torch.nn as nn

from densereg.nn.fast_decode import decode_cpu
from densereg.nn.inference import count_flops, fold_batchnorm
from densereg.nn.model import DenseRegNet, decode, decode_torch


def _randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial running statistics and affine parameters (as after training)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) * 2 + 0.1)
                m.weight.copy_(torch.randn(n, generator=g) * 0.5 + 1)
                m.bias.copy_(torch.randn(n, generator=g) * 0.2)
    return model.eval()


@pytest.mark.parametrize("backbone", ["resnet18", "resnet50"])
def test_folded_batchnorm_computes_the_same_outputs(backbone):
    torch.manual_seed(0)
    net = _randomise_bn(DenseRegNet(backbone=backbone, width=8, output_stride=8, K=5, depth=True))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    folded = fold_batchnorm(net)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.randint(0, 255, (1, 3, 40, 48), dtype=torch.uint8)
    with torch.inference_mode():
        a, b = net(x, upsample=False), folded(x, upsample=False)
    for k in a:
        scale = a[k].abs().max().item()
        assert torch.allclose(a[k], b[k], atol=1e-5 * max(scale, 1.0), rtol=1e-4), k
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())   # the original is untouched


def _outputs(K: int, residuals: bool, depth: bool, seed: int = 0, hw=(23, 31)):
    g = torch.Generator().manual_seed(seed)
    out = {"logits_u": torch.randn(2, K + 1, *hw, generator=g) * 4,
           "logits_v": torch.randn(2, K + 1, *hw, generator=g) * 4}
    out["logits_u"][:, 0] += 4                      # a mix of foreground and background
    out["logits_v"][:, 0] += 4
    if residuals:
        out["res_u"] = torch.rand(2, K, *hw, generator=g) * 1.2 - 0.1
        out["res_v"] = torch.rand(2, K, *hw, generator=g) * 1.2 - 0.1
    if depth:
        out["depth"] = torch.rand(2, 1, *hw, generator=g)
    return out


@pytest.mark.parametrize("K,residuals,depth,size", [(10, True, False, (181, 245)), (5, False, False, None),
                                                   (1, True, True, (50, 40))])
def test_cpu_decode_equals_the_tensor_decode(K, residuals, depth, size):
    out = _outputs(K, residuals, depth)
    a, b = decode_torch(out, K, size), decode_cpu(out, K, size)
    assert set(a) == set(b)
    mask = a["mask"].numpy()
    assert a["mask"].dtype == b["mask"].dtype and 0.05 < mask.mean() < 0.95
    for k in a:
        x, y = a[k].numpy(), b[k].numpy()
        assert x.shape == y.shape and x.dtype == y.dtype, k
        assert np.array_equal(np.isnan(x), np.isnan(y)) if x.dtype.kind == "f" else np.array_equal(x, y), k
        if x.dtype.kind == "f":
            np.testing.assert_allclose(np.nan_to_num(x), np.nan_to_num(y), atol=2e-6, err_msg=k)
    assert decode(out, K, size)["u"].numpy().tobytes() == b["u"].numpy().tobytes()   # CPU uses the fast path


def test_flop_count_of_known_layers():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=2, dilation=2), nn.Conv2d(8, 4, 1, stride=2),
                          nn.Flatten(), nn.Linear(4 * 5 * 5, 7))
    flops = count_flops(model, torch.zeros(1, 3, 10, 10))
    assert flops["conv"] == 2 * (27 * 8 * 100 + 8 * 4 * 25)
    assert flops["linear"] == 2 * 100 * 7
    assert flops["total"] == flops["conv"] + flops["linear"]


def _reference_predict(net, images, image_scale):
    """The read-out path before the speed-ups: plain network, tensor decode (kept here as the reference)."""
    from densereg.nn.inputs import prepare_image
    from densereg.readout.forward import _to_uvmap

    maps = []
    with torch.inference_mode():
        for img in images:
            (h, w), padded = prepare_image(img, net.output_stride, image_scale)
            x = torch.from_numpy(padded[None]).permute(0, 3, 1, 2)
            out = decode_torch(net(x, upsample=False), net.K, padded.shape[:2])
            maps.append(_to_uvmap({k: v[0, :h, :w].float().numpy() for k, v in out.items()}, img.shape[:2]))
    return maps


def test_default_read_out_path_equals_the_plain_path():
    from densereg.readout.forward import predict

    torch.manual_seed(0)
    net = _randomise_bn(DenseRegNet(backbone="resnet18", width=8, output_stride=8, K=10))
    with torch.no_grad():                                         # a confident net: most pixels foreground
        net.cls_u.weight.mul_(50)
        net.cls_v.weight.mul_(50)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in ((70, 90), (64, 64), (70, 90))]
    fast, slow = predict(net, images, image_scale=0.75, batch_size=2), _reference_predict(net, images, 0.75)
    for a, b in zip(fast, slow):
        assert np.array_equal(a.mask, b.mask) and 0.02 < a.mask.mean() < 0.999
        for k in ("u", "v", "u_q", "v_q"):
            np.testing.assert_allclose(getattr(a, k), getattr(b, k), atol=1e-5, equal_nan=True, err_msg=k)
        np.testing.assert_allclose(a.fg_prob, b.fg_prob, atol=1e-4)   # logits ×50 amplify the rounding


def test_inference_form_follows_weight_changes():
    from densereg.nn.inference import inference_form

    net = _randomise_bn(DenseRegNet(backbone="resnet18", width=8, output_stride=8, K=3))
    x = torch.randint(0, 255, (1, 3, 32, 32), dtype=torch.uint8)
    first = inference_form(net)
    assert inference_form(net) is first                           # cached while the weights stay
    with torch.no_grad():
        net.backbone.bn1.running_mean.add_(1.0)                   # an in-place change of one statistic
    second = inference_form(net)
    assert second is not first
    with torch.inference_mode():
        a, b = net(x, upsample=False)["logits_u"], second(x, upsample=False)["logits_u"]
    assert torch.allclose(a, b, atol=1e-4)
    assert "_densereg_inference_form" not in net.state_dict() and len(list(net.children())) == len(
        list(DenseRegNet(backbone="resnet18", width=8, output_stride=8, K=3).children()))
