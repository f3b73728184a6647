"""Losses and the PKD layer pairing against hand-computed values and other formulations."""
import math
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F

from utils.errors import PeakdError
from utils.losses import (kd_loss, patience_loss, pkd_teacher_layers, regression_kd_loss,
                          resolve_fc_layer_idx)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def explicit_kd(s, t, y, alpha, T):
    """kd_loss written as the plain double sum over examples and classes, in float64."""
    s, t = s.double(), t.double()
    total = 0.0
    for b in range(s.shape[0]):
        zs = [float(v) / T for v in s[b]]
        zt = [float(v) / T for v in t[b]]
        log_zs = math.log(sum(math.exp(v) for v in zs))
        log_zt = math.log(sum(math.exp(v) for v in zt))
        kl = sum(math.exp(zt[c] - log_zt) * ((zt[c] - log_zt) - (zs[c] - log_zs))
                 for c in range(len(zs)))
        ce = -(float(s[b, y[b]]) - math.log(sum(math.exp(float(v)) for v in s[b])))
        total += alpha * T * T * kl + (1 - alpha) * ce
    return total / s.shape[0]


# --- kd_loss -----------------------------------------------------------------------------------

def test_kd_loss_hand_values():
    # equal logits: KL is 0 and CE is log 2
    s = torch.zeros(1, 2)
    assert kd_loss(s, s.clone(), torch.tensor([0]), 0.5, 2.0).item() == pytest.approx(0.5 * math.log(2))
    # teacher probabilities (3/4, 1/4) against a uniform student, alpha 1, T 1
    t = torch.tensor([[math.log(3.0), 0.0]], dtype=torch.float64)
    expected = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    got = kd_loss(s.double(), t, torch.tensor([1]), 1.0, 1.0)
    assert got.item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("alpha,T", [(0.7, 10.0), (0.3, 1.0), (1.0, 4.0), (0.5, 0.5)])
def test_kd_loss_matches_explicit_sum(alpha, T):
    g = gen(1)
    s = torch.randn(5, 3, generator=g, dtype=torch.float64) * 3
    t = torch.randn(5, 3, generator=g, dtype=torch.float64) * 3
    y = torch.randint(0, 3, (5,), generator=g)
    got = kd_loss(s, t, y, alpha, T)
    assert got.dim() == 0
    assert got.item() == pytest.approx(explicit_kd(s, t, y, alpha, T), rel=1e-10)


def test_kd_loss_alpha_zero_is_exactly_cross_entropy():
    g = gen(2)
    s = torch.randn(4, 3, generator=g)
    y = torch.tensor([0, 2, 1, 2])
    ce = F.cross_entropy(s, y)
    assert torch.equal(kd_loss(s, None, y, 0, 10.0), ce)
    assert torch.equal(kd_loss(s, None, y, 0.0, 10.0), ce)
    # a teacher that is given anyway is not read
    assert torch.equal(kd_loss(s, torch.randn(4, 3, generator=g), y, 0.0, 10.0), ce)


def test_kd_loss_needs_teacher_when_alpha_nonzero():
    with pytest.raises(ValueError, match="teacher_logits"):
        kd_loss(torch.zeros(2, 2), None, torch.tensor([0, 1]), 0.7, 10.0)


def test_kd_loss_rejects_bad_temperature():
    with pytest.raises(PeakdError, match="--T"):
        kd_loss(torch.zeros(2, 2), torch.zeros(2, 2), torch.tensor([0, 1]), 0.7, 0.0)


def test_kd_loss_is_a_batch_mean():
    g = gen(3)
    s, t = torch.randn(1, 4, generator=g), torch.randn(1, 4, generator=g)
    y = torch.tensor([2])
    one = kd_loss(s, t, y, 0.7, 10.0)
    three = kd_loss(s.repeat(3, 1), t.repeat(3, 1), y.repeat(3), 0.7, 10.0)
    assert three.item() == pytest.approx(one.item(), rel=1e-6)


def test_kd_loss_temperature_scaling_high_T_limit():
    # for large T, T^2 * KL -> (1 / 2C) * sum_c ((s_c - mean s) - (t_c - mean t))^2 (Hinton 2015)
    g = gen(4)
    s = torch.randn(3, 5, generator=g, dtype=torch.float64)
    t = torch.randn(3, 5, generator=g, dtype=torch.float64)
    y = torch.zeros(3, dtype=torch.long)
    centred = (s - s.mean(-1, keepdim=True)) - (t - t.mean(-1, keepdim=True))
    limit = (centred.pow(2).sum(-1) / (2 * 5)).mean()
    assert kd_loss(s, t, y, 1.0, 1000.0).item() == pytest.approx(limit.item(), rel=1e-3)
    # at T = 1 the same logits are far from that limit: the T^2 factor is what makes it T-free
    assert kd_loss(s, t, y, 1.0, 1.0).item() != pytest.approx(limit.item(), rel=1e-2)


def test_kd_loss_gradient():
    # d/ds [T^2 KL(p_t || p_s)] with batchmean = T * (p_s - p_t) / B
    g = gen(5)
    s = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(4, 3, generator=g, dtype=torch.float64)
    T = 3.0
    kd_loss(s, t, torch.zeros(4, dtype=torch.long), 1.0, T).backward()
    expected = T * (torch.softmax(s.detach() / T, -1) - torch.softmax(t / T, -1)) / 4
    assert torch.allclose(s.grad, expected, atol=1e-12)
    assert t.grad is None


def test_kd_loss_gradient_flows_in_the_mixed_loss():
    g = gen(6)
    s = torch.randn(4, 3, generator=g, requires_grad=True)
    kd_loss(s, torch.randn(4, 3, generator=g), torch.tensor([0, 1, 2, 0]), 0.7, 10.0).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0 and torch.isfinite(s.grad).all()


# --- regression_kd_loss ------------------------------------------------------------------------

def test_regression_kd_loss_hand_values():
    s = torch.tensor([1.0, 2.0])
    t = torch.tensor([0.0, 2.0])
    y = torch.tensor([3.0, 5.0])
    # MSE(s, t) = (1 + 0) / 2 = 0.5; MSE(s, y) = (4 + 9) / 2 = 6.5
    assert regression_kd_loss(s, t, y, 0.25).item() == pytest.approx(0.25 * 0.5 + 0.75 * 6.5)
    assert regression_kd_loss(s, t, y, 1.0).item() == pytest.approx(0.5)


def test_regression_kd_loss_accepts_column_shapes():
    s = torch.tensor([1.0, 2.0, 0.5])
    t = torch.tensor([0.0, 2.0, 1.0])
    y = torch.tensor([3.0, 5.0, 0.0], dtype=torch.float64)
    flat = regression_kd_loss(s, t, y, 0.4)
    assert regression_kd_loss(s[:, None], t[:, None], y, 0.4).item() == pytest.approx(flat.item())
    assert regression_kd_loss(s[:, None], t, y[:, None], 0.4).item() == pytest.approx(flat.item())
    with pytest.raises(ValueError, match="student_scores"):
        regression_kd_loss(torch.zeros(3, 2), t, y, 0.4)


def test_regression_kd_loss_alpha_zero_is_exactly_mse():
    s = torch.tensor([[1.0], [2.0]], requires_grad=True)
    y = torch.tensor([3.0, 5.0])
    loss = regression_kd_loss(s, None, y, 0.0)
    assert torch.equal(loss, F.mse_loss(s[:, 0], y))
    loss.backward()
    assert torch.allclose(s.grad, torch.tensor([[-2.0], [-3.0]]))  # 2 (s - y) / B
    with pytest.raises(ValueError, match="teacher_scores"):
        regression_kd_loss(s, None, y, 0.5)


# --- patience_loss -----------------------------------------------------------------------------

def test_patience_loss_hand_values():
    s = torch.tensor([[[3.0, 4.0]]])  # normalised (0.6, 0.8)
    t = torch.tensor([[[2.0, 0.0]]])  # normalised (1, 0)
    # ((0.6 - 1)^2 + 0.8^2) / 2 elements
    assert patience_loss(s, t).item() == pytest.approx((0.16 + 0.64) / 2)
    assert patience_loss(s, t, normalize=False).item() == pytest.approx((1.0 + 16.0) / 2)


def test_patience_loss_matches_explicit_formula_and_is_scale_free():
    g = gen(7)
    s = torch.randn(2, 3, 8, generator=g, dtype=torch.float64)
    t = torch.randn(2, 3, 8, generator=g, dtype=torch.float64)
    s_unit = s / s.pow(2).sum(-1, keepdim=True).sqrt()
    t_unit = t / t.pow(2).sum(-1, keepdim=True).sqrt()
    expected = (s_unit - t_unit).pow(2).sum() / (2 * 3 * 8)
    assert patience_loss(s, t).item() == pytest.approx(expected.item(), rel=1e-12)
    # normalisation per vector: rescaling one layer's vectors changes nothing
    scale = torch.tensor([1.0, 7.0, 0.1], dtype=torch.float64)[None, :, None]
    assert patience_loss(s * scale, t).item() == pytest.approx(expected.item(), rel=1e-12)
    assert patience_loss(s * scale, t, normalize=False).item() != pytest.approx(
        patience_loss(s, t, normalize=False).item())


def test_patience_loss_gradient_and_zero_vectors():
    g = gen(8)
    s = torch.randn(2, 2, 4, generator=g, requires_grad=True)
    patience_loss(s, torch.randn(2, 2, 4, generator=g)).backward()
    assert s.grad.abs().sum() > 0
    z = torch.zeros(1, 1, 4, requires_grad=True)
    loss = patience_loss(z, torch.zeros(1, 1, 4))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(z.grad).all()


def test_patience_loss_no_pairs_is_a_graph_safe_zero():
    s = torch.randn(3, 0, 4, requires_grad=True)
    loss = patience_loss(s, torch.zeros(3, 0, 4))
    assert loss.dim() == 0 and loss.item() == 0.0 and loss.requires_grad
    (loss * 100).backward()
    assert s.grad.shape == s.shape


def test_patience_loss_shape_mismatch():
    with pytest.raises(ValueError, match="student_cls"):
        patience_loss(torch.zeros(2, 2, 4), torch.zeros(2, 3, 4))


# --- layer pairing -----------------------------------------------------------------------------

def test_pkd_teacher_layers_spec_examples():
    assert pkd_teacher_layers(3, 12) == [4, 8]  # plain 3-layer student
    assert pkd_teacher_layers(6, 12) == [2, 4, 6, 8, 10]  # SPS 3-layer student, 6 effective
    assert pkd_teacher_layers(6, 6) == [1, 2, 3, 4, 5]
    assert pkd_teacher_layers(1, 12) == []
    assert pkd_teacher_layers(4, 6) == [2, 3, 5]  # 1.5 and 4.5 round up


def test_pkd_teacher_layers_rule_and_range():
    for depth in range(1, 13):
        for n in range(1, 2 * depth):
            layers = pkd_teacher_layers(n, depth)
            exact = [math.floor(Fraction(j * depth, n) + Fraction(1, 2)) for j in range(1, n)]
            assert layers == exact
            assert all(1 <= layer <= depth - 1 for layer in layers)
            assert layers == sorted(layers)


def test_pkd_teacher_layers_too_deep_student():
    with pytest.raises(PeakdError, match="--fc_layer_idx"):
        pkd_teacher_layers(24, 12)


def test_resolve_fc_layer_idx_default_is_zero_based():
    assert resolve_fc_layer_idx(None, 3, 12) == [3, 7]
    assert resolve_fc_layer_idx(None, 6, 12) == [1, 3, 5, 7, 9]
    assert resolve_fc_layer_idx(None, 1, 12) == []


def test_resolve_fc_layer_idx_explicit():
    assert resolve_fc_layer_idx("3,7", 3, 12) == [3, 7]
    assert resolve_fc_layer_idx(" 0 , 10 ", 3, 12) == [0, 10]
    assert resolve_fc_layer_idx([5, 5], 3, 12) == [5, 5]
    assert resolve_fc_layer_idx("1,3,5,7,9", 6, 12) == [1, 3, 5, 7, 9]
    assert resolve_fc_layer_idx("", 1, 12) == []


@pytest.mark.parametrize("value,n,fragment", [
    ("3", 3, "needs 2"),
    ("1,2,3", 3, "needs 2"),
    ("3,11", 3, "11 out of range"),
    ("-1,3", 3, "-1 out of range"),
    ("a,b", 3, "not a list of integers"),
    ("3.5,7", 3, "not a list of integers"),
    ("3,,7", 3, "not a list of integers"),
    ([3.5, 7], 3, "not a list of integers"),
    ("0,1,2,3,4", 6, "4 out of range"),
])
def test_resolve_fc_layer_idx_errors(value, n, fragment):
    depth = 12 if n == 3 else 5
    with pytest.raises(PeakdError) as err:
        resolve_fc_layer_idx(value, n, depth)
    message = str(err.value)
    assert "--fc_layer_idx" in message and fragment in message
    assert f"0..{depth - 2}" in message and "\n" not in message
