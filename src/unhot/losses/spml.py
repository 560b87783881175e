"""Losses for single-positive multi-label learning (Cole et al., CVPR 2021; Zhou et al., ECCV
2022; docs/spml.md).

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


def large_loss_mask(logits: Tensor, positive: Tensor, unknown: Tensor, rate: float) -> Tensor:
    """The entries Kim et al.'s large-loss methods modify (CVPR 2022, LargeLossMatters
    losses.py:43-56): among the unknown entries, those whose assume-negative loss
    ``-log(1 - p)`` is at least the k-th largest of the batch, ``k = ceil(B C rate)`` counted
    over all B*C entries (so k >= 1 once ``rate > 0``). Not differentiable (a selection)."""
    k = math.ceil(logits.numel() * rate - 1e-9)
    if k <= 0:
        return torch.zeros_like(positive)
    candidate_loss = torch.where(unknown, -F.logsigmoid(-logits.detach()), 0.0)
    k = min(k, candidate_loss.numel())
    threshold = torch.topk(candidate_loss.flatten(), k).values[-1]
    return unknown & (candidate_loss >= threshold) & (candidate_loss > 0)


def large_loss(logits: Tensor, positive: Tensor, modified: Tensor, correct: bool) -> Tensor:
    """LL-R / LL-Ct (Kim et al., CVPR 2022, eq. 5-6): the assume-negative BCE on every entry,
    except the ``modified`` ones (:func:`large_loss_mask`), whose loss is rejected (weight 0,
    LL-R) or corrected (BCE against target 1, LL-Ct / LL-Cp); mean over all B*C entries (the
    rejected ones stay in the denominator, losses.py:58)::

        l_ic = BCE(z_ic, y_ic)       unmodified (y = 1 on positives, 0 elsewhere)
        l_ic = 0                      modified, LL-R
        l_ic = BCE(z_ic, 1)           modified, LL-Ct / LL-Cp

    Config: ``method: {name: spml, loss: ll_r}`` (``ll_ct``, ``ll_cp``; ``delta_rel``)."""
    assumed = F.binary_cross_entropy_with_logits(logits, positive.to(logits.dtype),
                                                 reduction="none")
    replaced = (F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits),
                                                   reduction="none")
                if correct else torch.zeros_like(assumed))
    return torch.where(modified, replaced, assumed).mean()


GR_EPSILON = 1e-7
"""Inside GR's ``-log(p + eps)`` (GRLoss losses.py:37-39)."""


def generalised_ce(p: Tensor, q: float) -> Tensor:
    """Generalised cross-entropy toward 1 (Zhang & Sabuncu, NeurIPS 2018): ``(1 - p^q) / q``;
    ``q -> 0`` is ``-log p``, ``q = 1`` is ``1 - p`` (MAE)."""
    return (1 - p.pow(q)) / q


def gr_loss(logits: Tensor, positive: Tensor, negative: Tensor, w: float, b: float, mu: float,
            sigma: float, q2: float, q3: float) -> Tensor:
    """Generalized robust loss (Chen et al., IJCAI 2024, GRLoss losses.py:8-14), mean over all
    B*C entries, with ``p = sigmoid(z)`` and ``sg`` = stop-gradient::

        l = -log(p + 1e-7)                                              observed positive
        l = V (K (1 - p^q2) / q2 + (1 - K) (1 - (1 - p)^q3) / q3)       unknown
        K = sigmoid(w sg(p) + b)          soft pseudo-label (chance the entry is positive)
        V = exp(-(sg(p) - mu)^2 / (2 sigma^2))                          weight

    Observed negatives (absent from the single-positive protocol, where the authors' loss gives
    them 0) get the assume-negative ``-log(1 - p + 1e-7)``. ``w, b, mu, sigma`` follow
    :func:`gr_schedule`.

    Config: ``method: {name: spml, loss: gr}`` (``gr_beta``, ``gr_alpha``, ``gr_q``)."""
    p = torch.sigmoid(logits)
    held = p.detach()
    soft_positive = torch.sigmoid(w * held + b)
    weight = torch.exp(-0.5 * ((held - mu) / sigma) ** 2)
    towards = soft_positive * generalised_ce(p, q2) + (1 - soft_positive) * generalised_ce(
        1 - p, q3)
    loss = torch.where(positive, -torch.log(p + GR_EPSILON),
                       torch.where(negative, -torch.log(1 - p + GR_EPSILON), weight * towards))
    return loss.mean()


def gr_schedule(beta: tuple[float, float, float, float], alpha: tuple[float, float, float, float],
                epoch: int, epochs: int) -> tuple[float, float, float, float]:
    """GR's hyper-parameters in epoch ``epoch`` (1-based) of ``epochs``, linear from start to
    end values (GRLoss train.py:61-78): ``beta = (w_0, w_T, b_0, b_T)`` move with
    ``(epoch - 1) / T`` (so ``w_T`` is never reached), ``alpha = (mu_0, sigma_0, mu_T,
    sigma_T)`` with ``epoch / T``. Returns ``(w, b, mu, sigma)``."""
    lag, lead = max(epoch - 1, 0) / epochs, max(epoch, 0) / epochs
    w0, w_end, b0, b_end = beta
    mu0, sigma0, mu_end, sigma_end = alpha
    return (w0 + (w_end - w0) * lag, b0 + (b_end - b0) * lag,
            mu0 + (mu_end - mu0) * lead, sigma0 + (sigma_end - sigma0) * lead)
