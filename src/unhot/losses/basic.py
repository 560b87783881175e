"""The baseline losses every method is compared with (the baselines of docs/mile.md and
docs/uncertainty_distillation.md).

All take logits ``z`` [B, C] and boolean masks [B, C]; probabilities never enter a loss directly.
Reductions over the entries of a [B, C] loss matrix are named:

- ``"mean_observed"``: sum over the entries in ``mask`` / number of such entries;
- ``"sum_over_bc"``: sum over the entries in ``mask`` / (B * C) (Cole et al.'s convention);
- ``"sum_over_b"``: sum over the entries in ``mask`` / B: summed over classes, averaged over the
  batch (MILe's code, ``rescale_sigmoid``); C times ``sum_over_bc``, so at the same learning
  rate it steps C times further;
- ``"none"``: the masked [B, C] matrix (zeros outside ``mask``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

REDUCTIONS = ("mean_observed", "sum_over_bc", "sum_over_b", "none")


def reduce_entries(loss: Tensor, mask: Tensor, reduction: str = "mean_observed") -> Tensor:
    """Reduce a [B, C] per-entry loss over the entries where ``mask`` is True.

    ``mean_observed``: sum(loss * mask) / max(1, sum(mask));
    ``sum_over_bc``: sum(loss * mask) / (B*C); ``sum_over_b``: sum(loss * mask) / B.
    """
    masked = torch.where(mask, loss, torch.zeros_like(loss))
    if reduction == "mean_observed":
        return masked.sum() / mask.sum().clamp(min=1)
    if reduction == "sum_over_bc":
        return masked.sum() / loss.numel()
    if reduction == "sum_over_b":
        return masked.sum() / loss.shape[0]
    if reduction == "none":
        return masked
    raise ValueError(f"unknown reduction {reduction!r}; valid: {', '.join(REDUCTIONS)}")


def masked_bce(logits: Tensor, positive: Tensor, negative: Tensor,
               reduction: str = "mean_observed") -> Tensor:
    """Binary cross-entropy on the observed entries only.

    ``l_ic = -[y_ic log sigmoid(z_ic) + (1 - y_ic) log sigmoid(-z_ic)]`` with y = 1 on
    ``positive`` and 0 on ``negative``; unknown entries contribute nothing. With every entry
    observed this is the full-label BCE (the "oracle" of Cole et al., CVPR 2021).
    """
    target = positive.to(logits.dtype)
    loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return reduce_entries(loss, positive | negative, reduction)


def assume_negative_bce(logits: Tensor, positive: Tensor,
                        reduction: str = "mean_observed") -> Tensor:
    """Assume-negative (AN) BCE: every entry not positive is treated as a negative.

    ``L = -1/(B C) sum_ic [y_ic log p_ic + (1 - y_ic) log (1 - p_ic)]``, p = sigmoid(z). The
    sigmoid baseline of MILe (Rajeswar et al., 2022) and the AN baseline of Cole et al. (2021).
    """
    return masked_bce(logits, positive, ~positive, reduction)


def softmax_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """Softmax cross-entropy on the given single label: ``-mean_i log softmax(z_i)[t_i]``."""
    return F.cross_entropy(logits, target)


def soft_target_cross_entropy(logits: Tensor, target_probs: Tensor) -> Tensor:
    """Cross-entropy against a soft target distribution q (Label Refinery, Bagherinezhad 2018).

    ``L = -1/B sum_i sum_c q_ic log softmax(z_i)_c``; equals KL(q || softmax(z)) + H(q), so its
    gradient in z is that of the KL.
    """
    return -(target_probs * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
