"""Tests for unhot.losses.distill: PAL-N, distillation KLs, uncertainty, Grad-CAM, attention."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.distributions import Bernoulli, kl_divergence

from unhot.losses import (
    attention_loss,
    binary_kd_loss,
    grad_cam,
    masked_logsumexp,
    pal_n_loss,
    reference_attention_loss,
    softmax_kd_loss,
    softmax_kl,
    uncertainty,
)


def _bool(rows: list[list[int]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.bool)


def _pal_n_loop(z: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Reference: one softmax cross-entropy per (sample, positive) over {i} + negatives."""
    per_sample = []
    for b in range(z.shape[0]):
        positives = pos[b].nonzero().flatten().tolist()
        negatives = (neg[b] & ~pos[b]).nonzero().flatten().tolist()
        if not positives:
            continue
        terms = [F.cross_entropy(z[b, [i, *negatives]][None], torch.tensor([0]))
                 for i in positives]
        per_sample.append(torch.stack(terms).mean())
    return torch.stack(per_sample).mean() if per_sample else torch.tensor(0.0)


def test_masked_logsumexp_matches_subset_and_empty_rows_are_safe():
    x = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 4.0]], requires_grad=True)
    mask = _bool([[1, 0, 1], [0, 0, 0]])
    out = masked_logsumexp(x, mask, dim=1)
    assert out[0].item() == pytest.approx(math.log(math.e + math.e**3), rel=1e-6)
    assert out[1].item() == float("-inf")
    out[0].backward()
    assert torch.isfinite(x.grad).all()
    assert x.grad[0, 1] == 0 and (x.grad[1] == 0).all()


def test_pal_n_by_hand():
    # sample 0: positives {0, 1}, negatives {2, 3}; sample 1: no positive (ignored);
    # sample 2: positive {0}, negative {1}, class 2 unknown and class 3 negative.
    z = torch.tensor([[1.0, 2.0, 0.0, -1.0], [5.0, 0.0, 0.0, 0.0], [0.0, 1.0, 9.0, 1.0]])
    pos = _bool([[1, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0]])
    neg = _bool([[0, 0, 1, 1], [1, 1, 1, 1], [0, 1, 0, 1]])
    e = math.exp
    sample0 = (-math.log(e(1) / (e(1) + e(0) + e(-1)))
               - math.log(e(2) / (e(2) + e(0) + e(-1)))) / 2
    sample2 = -math.log(1 / (1 + 2 * e(1)))
    assert pal_n_loss(z, pos, neg).item() == pytest.approx((sample0 + sample2) / 2, rel=1e-6)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(2, 7), st.integers(0, 10_000))
def test_pal_n_matches_loop_reference(b, c, seed):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, c, generator=g) * 3
    state = torch.randint(0, 3, (b, c), generator=g)  # 0 unknown, 1 positive, 2 negative
    pos, neg = state == 1, state == 2
    assert pal_n_loss(z, pos, neg).item() == pytest.approx(_pal_n_loop(z, pos, neg).item(),
                                                           rel=1e-5, abs=1e-6)


def test_pal_n_excludes_other_positives_and_unknowns():
    z = torch.tensor([[0.3, -0.2, 1.5, 0.7, -2.0]], requires_grad=True)
    pos = _bool([[1, 1, 0, 0, 0]])
    neg = _bool([[0, 0, 1, 1, 0]])  # class 4 unknown
    pal_n_loss(z, pos, neg).backward()
    assert z.grad[0, 4] == 0
    # Each positive's softmax ignores the other positive: the loss is the mean of the two
    # single-positive losses in which the other positive is simply absent (unknown).
    only0 = pal_n_loss(z.detach(), _bool([[1, 0, 0, 0, 0]]), neg)
    only1 = pal_n_loss(z.detach(), _bool([[0, 1, 0, 0, 0]]), neg)
    assert pal_n_loss(z.detach(), pos, neg).item() == pytest.approx(
        ((only0 + only1) / 2).item(), rel=1e-6)
    # Raising another positive's logit leaves positive 0's term unchanged.
    bumped = z.detach().clone()
    bumped[0, 1] += 10
    assert pal_n_loss(bumped, _bool([[1, 0, 0, 0, 0]]), neg).item() == pytest.approx(
        only0.item(), rel=1e-6)


def test_samples_without_positives_contribute_nothing():
    z = torch.randn(3, 4, requires_grad=True)
    pos = _bool([[1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    neg = ~pos
    loss = pal_n_loss(z, pos, neg)
    assert loss.item() == pytest.approx(pal_n_loss(z[:1], pos[:1], neg[:1]).item(), rel=1e-6)
    loss.backward()
    assert (z.grad[1:] == 0).all()
    empty = pal_n_loss(z, torch.zeros_like(pos), neg)
    assert empty.item() == 0.0


def test_pal_n_without_negatives_is_zero_with_finite_gradient():
    z = torch.randn(2, 3, requires_grad=True)
    loss = pal_n_loss(z, _bool([[1, 1, 0], [1, 0, 0]]), torch.zeros(2, 3, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(z.grad).all()


def test_binary_kd_by_hand_and_against_torch_bernoulli():
    s, t = torch.tensor([[0.0]]), torch.tensor([[math.log(3.0)]])
    expected = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert binary_kd_loss(s, t, temperature=1.0).item() == pytest.approx(expected, rel=1e-6)
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(4, 5, generator=g) * 4, torch.randn(4, 5, generator=g) * 4
    ref = kl_divergence(Bernoulli(logits=t / 3), Bernoulli(logits=s / 3)).mean() * 9
    assert binary_kd_loss(s, t, temperature=3.0).item() == pytest.approx(ref.item(), rel=1e-5)


def test_softmax_kd_against_kl_div():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(4, 6, generator=g) * 3, torch.randn(4, 6, generator=g) * 3
    ref = F.kl_div(F.log_softmax(s / 3, 1), F.softmax(t / 3, 1), reduction="batchmean") * 9
    assert softmax_kd_loss(s, t, temperature=3.0).item() == pytest.approx(ref.item(), rel=1e-5)


@settings(max_examples=30, deadline=None)
@given(st.floats(0.5, 6.0), st.integers(0, 10_000))
def test_kd_terms_scale_by_t_squared_and_vanish_at_equality(temperature, seed):
    g = torch.Generator().manual_seed(seed)
    s, t = torch.randn(3, 4, generator=g) * 3, torch.randn(3, 4, generator=g) * 3
    for loss in (binary_kd_loss, softmax_kd_loss):
        scaled = loss(s, t, temperature).item()
        assert scaled == pytest.approx(temperature**2 * loss(s / temperature, t / temperature,
                                                             1.0).item(), rel=1e-4, abs=1e-7)
        assert scaled >= 0
        assert loss(t, t, temperature).item() == pytest.approx(0.0, abs=1e-6)


def test_uncertainty_is_kl_from_calibration_to_classification():
    cal, cls = torch.tensor([[0.0, math.log(3.0)]]), torch.tensor([[0.0, 0.0]])
    expected = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    assert uncertainty(cal, cls).item() == pytest.approx(expected, rel=1e-6)
    assert uncertainty(cls, cls).item() == pytest.approx(0.0, abs=1e-7)
    assert softmax_kl(cal, cls).shape == (1,)


def _heads(features: int, classes: int) -> torch.nn.Linear:
    torch.manual_seed(0)
    return torch.nn.Linear(features, classes)


def test_grad_cam_by_hand_for_a_linear_score():
    # score = sum_b a . mean_hw(Z_b): dscore/dZ_bfhw = a_f / (h w), so w_bf = a_f and the map
    # is sum_f a_f Z_bf (spatial sum of gradients, no ReLU).
    z = torch.randn(2, 3, 4, 5, requires_grad=True)
    a = torch.tensor([1.0, -2.0, 0.5])
    score = (z.mean(dim=(2, 3)) * a).sum()
    cam = grad_cam(score, z, create_graph=False)
    assert cam.shape == (2, 4, 5)
    expected = (a[None, :, None, None] * z).sum(dim=1)
    assert torch.allclose(cam, expected, atol=1e-5)
    assert (cam < 0).any()
    relu = grad_cam((z.mean(dim=(2, 3)) * a).sum(), z, create_graph=False, relu=True)
    assert torch.allclose(relu, expected.clamp(min=0), atol=1e-5)


def test_grad_cam_is_differentiable_only_with_create_graph():
    head, cal = _heads(6, 4), torch.nn.Linear(6, 4)
    z = torch.randn(2, 6, 3, 3, requires_grad=True)

    def score() -> torch.Tensor:
        pooled = z.mean(dim=(2, 3))
        return uncertainty(cal(pooled), head(pooled)).sum()

    cam = grad_cam(score(), z, create_graph=True)
    (g_head,) = torch.autograd.grad(cam.pow(2).sum(), head.weight)
    assert g_head.abs().sum() > 0  # second-order path through the channel weights
    cam = grad_cam(score(), z, create_graph=False)
    (g_none,) = torch.autograd.grad(cam.pow(2).sum(), head.weight, allow_unused=True)
    assert g_none is None


def test_attention_loss_normalises_and_resizes():
    g = torch.Generator().manual_seed(2)
    a = torch.randn(3, 4, 4, generator=g)
    assert attention_loss(a, 5.0 * a).item() == pytest.approx(0.0, abs=1e-6)
    assert attention_loss(a, -a).item() == pytest.approx(4.0, rel=1e-5)
    b = torch.randn(3, 4, 4, generator=g)
    manual = (F.normalize(a.flatten(1), dim=1) - F.normalize(b.flatten(1), dim=1)).pow(2)
    assert attention_loss(a, b).item() == pytest.approx(manual.sum(1).mean().item(), rel=1e-5)
    big = torch.randn(3, 8, 8, generator=g)
    resized = F.interpolate(big[:, None], size=(4, 4), mode="bilinear",
                            align_corners=False)[:, 0]
    assert attention_loss(a, big).item() == pytest.approx(attention_loss(a, resized).item(),
                                                          rel=1e-6)


def _authors_student_loss(z_s, z_t, heads_s, heads_t, temperature=3.0, alpha=1.0,
                          mimic_alpha=0.1):
    """The authors' UD student loss (LcDog/ud selective_fc_kd_att.py:23-89, the engine's mean
    over a zeros(B) vector holding the total in its first entry), written from their formulas
    with global average pooling: kl_div on log-probabilities with reduction sum, channel
    weights softmax(sum_hw grad) detached, MSE mean x 0.1, everything / B."""
    b, t = z_s.shape[0], temperature

    def outputs(z, heads):
        pooled = z.mean(dim=(2, 3))
        return heads[0](pooled), heads[1](pooled)

    def attention(z, heads, keep_graph):
        leaf = z.detach().requires_grad_(True)
        cls, cal = outputs(leaf, heads)
        F.kl_div(cls.softmax(1).log(), cal.softmax(1), reduction="sum").backward()
        weights = leaf.grad.sum(dim=[2, 3], keepdim=True).softmax(dim=1).detach()
        return (weights * (z if keep_graph else leaf.detach())).sum(dim=1)

    s_cls, s_cal = outputs(z_s, heads_s)
    t_cls, t_cal = (o.detach() for o in outputs(z_t, heads_t))
    mimic = F.mse_loss(attention(z_s, heads_s, True), attention(z_t, heads_t, False)) * mimic_alpha
    select_kd = F.kl_div((s_cal / t).softmax(1).log(), (t_cal / t).softmax(1),
                         reduction="sum") * t**2
    kd = (F.kl_div((s_cls / t).sigmoid().log(), (t_cls / t).sigmoid(), reduction="sum")
          + F.kl_div((1 - (s_cls / t).sigmoid()).log(), 1 - (t_cls / t).sigmoid(),
                     reduction="sum")) / 2 * t**2 / s_cls.shape[1]
    return ((select_kd * alpha + kd) / 2 + mimic) / b


def test_ud_defaults_reproduce_the_authors_student_loss_and_gradient():
    """unhot's UD terms at the default weights (kd 0.25, alpha 0.5, beta 0.1, reference
    attention) equal the authors' loss on the same tensors, value and gradient."""
    g = torch.Generator().manual_seed(5)
    heads_s, heads_t = (_heads(6, 4), torch.nn.Linear(6, 4)), (_heads(6, 4), torch.nn.Linear(6, 4))
    z_t = torch.randn(3, 6, 3, 3, generator=g)
    z_s = torch.randn(3, 6, 3, 3, generator=g, requires_grad=True)
    reference = _authors_student_loss(z_s, z_t, heads_s, heads_t)
    (ref_grad,) = torch.autograd.grad(reference, z_s)

    def pooled_outputs(z, heads):
        return heads[0](z.mean(dim=(2, 3))), heads[1](z.mean(dim=(2, 3)))

    s_cls, s_cal = pooled_outputs(z_s, heads_s)
    leaf_t = z_t.clone().requires_grad_(True)
    t_cls, t_cal = pooled_outputs(leaf_t, heads_t)
    t_map = grad_cam(uncertainty(t_cal, t_cls).sum(), leaf_t, create_graph=False,
                     channel_softmax=True).detach()
    s_map = grad_cam(uncertainty(s_cal, s_cls).sum(), z_s, create_graph=False,
                     channel_softmax=True)
    ours = (0.25 * binary_kd_loss(s_cls, t_cls.detach())
            + 0.5 * softmax_kd_loss(s_cal, t_cal.detach())
            + 0.1 * reference_attention_loss(s_map, t_map))
    (our_grad,) = torch.autograd.grad(ours, z_s)
    assert ours.item() == pytest.approx(reference.item(), rel=1e-5)
    torch.testing.assert_close(our_grad, ref_grad, rtol=1e-4, atol=1e-7)


def test_reference_attention_loss_is_mse_over_batch_size():
    a, b = torch.zeros(2, 2, 2), torch.ones(2, 2, 2)
    assert reference_attention_loss(a, 3 * b).item() == pytest.approx(9.0 / 2)
