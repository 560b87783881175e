import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from unhot.losses import (
    assume_negative_bce,
    masked_bce,
    reduce_entries,
    soft_target_cross_entropy,
    softmax_cross_entropy,
)


def test_masked_bce_by_hand():
    z = torch.tensor([[0.0, 2.0], [-1.0, 0.5]])
    pos = torch.tensor([[True, False], [False, False]])
    neg = torch.tensor([[False, True], [False, False]])
    # observed: (0,0) positive with z=0 -> log 2; (0,1) negative with z=2 -> log(1+e^2)
    expected = (math.log(2) + math.log(1 + math.e**2)) / 2
    assert masked_bce(z, pos, neg).item() == pytest.approx(expected, rel=1e-6)
    assert masked_bce(z, pos, neg, "sum_over_bc").item() == pytest.approx(expected * 2 / 4,
                                                                         rel=1e-6)


def test_reduce_none_zeroes_unobserved_and_unknown_reduction_fails():
    loss = torch.ones(2, 2)
    mask = torch.tensor([[True, False], [False, True]])
    assert reduce_entries(loss, mask, "none").tolist() == [[1, 0], [0, 1]]
    with pytest.raises(ValueError, match="mean_observed"):
        reduce_entries(loss, mask, "mean")


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(1, 6), st.integers(0, 1000))
def test_an_equals_bce_when_every_label_is_observed(b, c, seed):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, c, generator=g) * 3
    y = torch.rand(b, c, generator=g) < 0.4
    an = assume_negative_bce(z, y)
    ref = F.binary_cross_entropy_with_logits(z, y.float())
    assert an.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-6)
    assert masked_bce(z, y, ~y).item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-6)


def test_soft_target_ce_equals_ce_for_one_hot_and_kl_plus_entropy():
    z = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    t = torch.tensor([1, 2])
    one_hot = F.one_hot(t, 3).float()
    assert soft_target_cross_entropy(z, one_hot).item() == pytest.approx(
        softmax_cross_entropy(z, t).item(), rel=1e-6)
    q = torch.tensor([[0.2, 0.5, 0.3], [0.1, 0.1, 0.8]])
    kl = F.kl_div(F.log_softmax(z, 1), q, reduction="batchmean")
    entropy = -(q * q.log()).sum(1).mean()
    assert soft_target_cross_entropy(z, q).item() == pytest.approx((kl + entropy).item(),
                                                                   rel=1e-5)
