"""Quantised regression encode/decode (paper eq. 2-3) on NumPy arrays and torch tensors."""

import numpy as np
import pytest
import torch

from densereg.nn.quantize import bin_centre, decode_bins, dequantize, quantize, residual_in_bins, uv_to_class


@pytest.mark.parametrize("K", [1, 5, 10, 20, 60])
def test_round_trip_numpy(K):
    u = np.random.default_rng(K).uniform(0, 1, 10_000)
    u = np.concatenate([u, np.arange(K + 1) / K])  # include every bin edge
    q, r = quantize(u, K)
    assert q.dtype == np.int64 and r.dtype == u.dtype
    assert q.min() >= 0 and q.max() <= K - 1
    # The residual lies in its bin (one rounding of slack at the edges), and decoding gives u back.
    assert r.min() >= -1e-15 and r.max() <= 1 / K + 1e-15
    np.testing.assert_allclose(dequantize(q, r, K), u, rtol=0, atol=4e-16)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_round_trip_torch(dtype):
    u = torch.rand(50, 40, dtype=dtype)
    q, r = quantize(u, 10)
    assert q.dtype == torch.int64 and r.dtype == dtype
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(dequantize(q, r, 10), u, rtol=0, atol=2 * eps)


def test_numpy_and_torch_agree():
    u = np.random.default_rng(0).uniform(0, 1, 1000)
    q_np, r_np = quantize(u, 10)
    q_t, r_t = quantize(torch.from_numpy(u), 10)
    np.testing.assert_array_equal(q_np, q_t.numpy())
    np.testing.assert_array_equal(r_np, r_t.numpy())


def test_known_bins_and_edges():
    K = 10
    u = np.array([0.0, 0.05, 0.1, 0.3, 0.999, 1.0])
    q, r = quantize(u, K)
    np.testing.assert_array_equal(q, [0, 0, 1, 3, 9, 9])
    # u = 1.0 has no bin K: it falls in the last bin with a full-bin residual r = d.
    np.testing.assert_allclose(r, [0.0, 0.05, 0.0, 0.0, 0.099, 0.1], atol=1e-12)


def test_out_of_range_values_go_to_the_end_bins():
    q, r = quantize(np.array([-0.2, 1.3]), 4)
    np.testing.assert_array_equal(q, [0, 3])
    np.testing.assert_allclose(r, [-0.2, 0.55])


def test_background_nan():
    u = np.array([np.nan, 0.42, np.inf])
    q, r = quantize(u, 10)
    np.testing.assert_array_equal(q, [-1, 4, -1])
    assert np.isnan(r[0]) and np.isnan(r[2])
    back = dequantize(q, r, 10)
    assert np.isnan(back[0]) and np.isnan(back[2]) and back[1] == pytest.approx(0.42)
    qt, rt = quantize(torch.tensor([float("nan"), 0.42]), 10)
    assert qt.tolist() == [-1, 4] and torch.isnan(rt[0])


def test_bin_centre():
    np.testing.assert_allclose(bin_centre(np.array([0, 4, 9]), 10), [0.05, 0.45, 0.95])
    assert np.isnan(bin_centre(np.array([-1]), 10)[0])
    torch.testing.assert_close(bin_centre(torch.tensor([0, 1]), 2), torch.tensor([0.25, 0.75]))
    # Decoding to the bin centre is within d/2 of any u in the bin.
    u = np.random.default_rng(1).uniform(0, 1, 1000)
    assert np.abs(bin_centre(quantize(u, 7)[0], 7) - u).max() <= 0.5 / 7 + 1e-12


def test_uv_to_class_background_and_mask():
    u = np.array([[np.nan, 0.0, 0.55], [1.0, 0.2, 0.95]])
    np.testing.assert_array_equal(uv_to_class(u, 10), [[0, 1, 6], [10, 3, 10]])
    mask = np.array([[True, True, False], [True, True, True]])
    # Masked-out pixels are background even with a finite u; NaN stays background under a True mask.
    np.testing.assert_array_equal(uv_to_class(u, 10, mask), [[0, 1, 0], [10, 3, 10]])
    cls_t = uv_to_class(torch.from_numpy(u), 10, torch.from_numpy(mask))
    assert cls_t.dtype == torch.int64
    np.testing.assert_array_equal(cls_t.numpy(), [[0, 1, 0], [10, 3, 10]])


@pytest.mark.parametrize("K", [0, -3, 2.5])
def test_bad_k(K):
    with pytest.raises(ValueError, match="K"):
        quantize(np.array([0.5]), K)


@pytest.mark.parametrize("K", [1, 5, 10, 20, 60])
def test_bin_unit_residuals_round_trip_and_agree(K):
    """The network's parametrisation (residual in bin units) decodes to the same u, in NumPy and torch."""
    u = np.concatenate([np.random.default_rng(K).uniform(0, 1, 5000), np.arange(K + 1) / K])
    q, r = quantize(u, K)
    t = residual_in_bins(u, q, K)
    assert t.min() >= -1e-12 and t.max() <= 1 + 1e-12
    np.testing.assert_allclose(t, r * K, atol=1e-12)
    np.testing.assert_allclose(decode_bins(q, t, K), u, rtol=0, atol=1e-15)
    tt = residual_in_bins(torch.from_numpy(u), torch.from_numpy(q), K)
    np.testing.assert_array_equal(tt.numpy(), t)
    np.testing.assert_array_equal(decode_bins(torch.from_numpy(q), tt, K).numpy(), decode_bins(q, t, K))
    np.testing.assert_array_equal(bin_centre(torch.from_numpy(q), K).double().numpy(),
                                  bin_centre(q, K).astype(np.float32).astype(np.float64))


def test_decode_uses_the_quantisation_module():
    """The network decode of one-hot outputs is exactly eq. 3 from densereg.nn.quantize."""
    from densereg.nn.model import decode

    K = 5
    u = torch.tensor([[[0.0, 0.33, 0.999]]])
    q, _ = quantize(u, K)
    t = residual_in_bins(u, q, K)
    logits = torch.full((1, K + 1, 1, 3), -20.0)
    logits.scatter_(1, (q + 1).unsqueeze(1), 20.0)
    res = torch.zeros(1, K, 1, 3)
    res.scatter_(1, q.unsqueeze(1), t.unsqueeze(1))
    out = decode({"logits_u": logits, "logits_v": logits, "res_u": res, "res_v": res}, K)
    torch.testing.assert_close(out["u"], decode_bins(q, t, K).float())
    torch.testing.assert_close(out["u_q"], bin_centre(q, K).float())
