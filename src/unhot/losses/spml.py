"""Losses for single-positive multi-label learning (Cole et al., CVPR 2021; Zhou et al., ECCV
2022; METHODS.md §4).

Each training image has one observed positive; every other entry is unknown. All functions take
logits ``z`` [B, C] and a boolean ``positive`` mask, work in log space (``logsigmoid``) and
reduce with :func:`unhot.losses.basic.reduce_entries` (``"sum_over_bc"`` is Cole et al.'s and
Zhou et al.'s convention, ``"mean_observed"`` averages over the entries the loss covers).

Config example::

    method: {name: spml, loss: em_apl, alpha: 0.1, beta: 0.9, theta: 0.9, warmup: 2}
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from unhot.losses.basic import reduce_entries


def an_label_smoothing(logits: Tensor, positive: Tensor, coef: float = 0.1,
                       reduction: str = "sum_over_bc") -> Tensor:
    """Assume-negative BCE with label smoothing (Cole et al.'s AN-LS, their ``ls_coef``).

    Targets ``1 - coef`` on the positive, ``coef`` on every other entry, i.e.
    ``y~ = (1 - 2 coef) y + coef``; ``l = -[y~ log p + (1 - y~) log(1 - p)]`` on every entry.
    ``coef = 0`` is the plain AN loss. (The textbook ``(1 - eps) y + eps / 2`` is
    ``coef = eps / 2``.)
    """
    target = positive.to(logits.dtype) * (1 - 2 * coef) + coef
    loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return reduce_entries(loss, torch.ones_like(positive), reduction)


def weighted_an(logits: Tensor, positive: Tensor, reduction: str = "sum_over_bc") -> Tensor:
    """Weighted assume-negative BCE (Cole et al.'s WAN): assumed negatives weighted 1/(C-1).

    ``l = -log p`` on the positive, ``-log(1 - p) / (C - 1)`` on every other entry.
    """
    num_classes = logits.shape[1]
    pos_term = -F.logsigmoid(logits)
    neg_term = -F.logsigmoid(-logits) / max(1, num_classes - 1)
    loss = torch.where(positive, pos_term, neg_term)
    return reduce_entries(loss, torch.ones_like(positive), reduction)


def expected_positive_regulariser(logits: Tensor, positive: Tensor, k: float,
                                  reduction: str = "sum_over_bc") -> Tensor:
    """EPR (Cole et al., CVPR 2021): ``-log p`` on observed positives plus
    :func:`expected_positive_penalty`; ``k`` is the expected number of positives per image.

    Config: ``method: {name: spml, loss: epr, k: 1.5}`` (Cole et al.'s k for VOC)."""
    positives = reduce_entries(-F.logsigmoid(logits), positive, reduction)
    return positives + expected_positive_penalty(torch.sigmoid(logits), k)


def expected_positive_penalty(probabilities: Tensor, k: float) -> Tensor:
    """Cole et al.'s expected-positive regulariser ``(k_hat - k)^2 / C^2`` with
    ``k_hat = (1/B) sum_i sum_c p_ic``, the batch's mean predicted label count.

    The square is of the batch mean, as in the paper and its code, not a mean of per-image
    squares: single images may predict more or fewer than ``k`` labels."""
    k_hat = probabilities.sum(dim=1).mean()
    return (k_hat - k) ** 2 / probabilities.shape[1] ** 2


def binary_entropy(logits: Tensor) -> Tensor:
    """``H(p) = -[p log p + (1 - p) log(1 - p)]`` with ``p = sigmoid(z)``, from logits."""
    p = torch.sigmoid(logits)
    return -(p * F.logsigmoid(logits) + (1 - p) * F.logsigmoid(-logits))


def entropy_maximisation(logits: Tensor, positive: Tensor, unknown: Tensor, alpha: float,
                         reduction: str = "sum_over_bc") -> Tensor:
    """EM loss (Zhou et al., ECCV 2022, eq. 4): ``-log p`` on positives, ``-alpha H(p)`` on
    unknown entries (maximising their entropy pulls them weakly toward p = 0.5)."""
    loss = torch.where(positive, -F.logsigmoid(logits), -alpha * binary_entropy(logits))
    return reduce_entries(loss, positive | unknown, reduction)


def soft_negative_bce(logits: Tensor, pseudo_negative: Tensor, soft_target: Tensor,
                      reduction: str = "sum_over_bc") -> Tensor:
    """APL's term on pseudo-negatives (Zhou et al., eq. 7): BCE against the soft target ``q``
    (the model's probability when the entry was marked), ``-[q log p + (1-q) log(1-p)]``."""
    loss = F.binary_cross_entropy_with_logits(logits, soft_target.to(logits.dtype),
                                              reduction="none")
    return reduce_entries(loss, pseudo_negative, reduction)


def role_loss(logits: Tensor, estimate_logits: Tensor, positive: Tensor, k: float) -> Tensor:
    """ROLE (Cole et al., CVPR 2021): the classifier and a learned per-sample label estimate
    teach each other.

    With p = sigmoid(z), q = sigmoid(estimate), sg = stop-gradient, per entry
    ``(1[pos](-log p) + 1[pos](-log q)) / 2 + (BCE(p; sg q) + BCE(q; sg p)) / 2``, averaged over
    the B*C entries, plus ``(R(p) + R(q)) / 2`` with R the expected-positive regulariser
    (:func:`expected_positive_penalty`).
    """
    positive_f = positive.to(logits.dtype)
    p_detached = torch.sigmoid(logits).detach()
    q_detached = torch.sigmoid(estimate_logits).detach()
    observed = positive_f * (-F.logsigmoid(logits) - F.logsigmoid(estimate_logits))
    cross = (F.binary_cross_entropy_with_logits(logits, q_detached, reduction="none")
             + F.binary_cross_entropy_with_logits(estimate_logits, p_detached, reduction="none"))
    regulariser = (expected_positive_penalty(torch.sigmoid(logits), k)
                   + expected_positive_penalty(torch.sigmoid(estimate_logits), k))
    return (observed + cross).mean() / 2 + regulariser / 2


def role_initial_estimates(positive: Tensor, generator: torch.Generator) -> Tensor:
    """ROLE's initial estimate logits: observed positives at logit(0.995), every other entry
    uniform in [-logit(0.6), logit(0.6)] (Cole et al.'s code)."""
    spread = math.log(0.6 / 0.4)
    start = (2 * torch.rand(positive.shape, generator=generator) - 1) * spread
    return torch.where(positive, torch.full_like(start, math.log(0.995 / 0.005)), start)
