"""Losses of uncertainty distillation (Song et al., ACM MM 2021; docs/uncertainty_distillation.md).

All take logits [B, C] (never probabilities) and boolean masks; reductions are explicit.

- :func:`pal_n_loss`: the calibration branch's PAL-N loss by partial softmax (eq. 10-11);
- :func:`binary_kd_loss` / :func:`softmax_kd_loss`: prediction distribution distillation on the
  classification (per-class sigmoid) and calibration (softmax) heads at temperature T (eq. 13-14);
- :func:`uncertainty`, :func:`grad_cam`, :func:`reference_attention_loss` (the authors' code)
  and :func:`attention_loss` (L2-normalised maps): uncertainty attention distillation
  (eq. 15-17).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def masked_logsumexp(x: Tensor, mask: Tensor, dim: int = -1) -> Tensor:
    """``log sum_{j: mask_j} exp(x_j)`` along ``dim``; ``-inf`` where ``mask`` selects nothing.

    Safe to differentiate: entries outside ``mask`` and rows without any entry get zero gradient
    (a plain logsumexp over an all ``-inf`` row would give NaN gradients).
    """
    any_entry = mask.any(dim=dim)
    filled = x.masked_fill(~mask, float("-inf"))
    # Rows with no entry are computed on zeros (finite) and then replaced by -inf.
    filled = torch.where(any_entry.unsqueeze(dim), filled, torch.zeros_like(x))
    lse = torch.logsumexp(filled, dim=dim)
    return torch.where(any_entry, lse, torch.full_like(lse, float("-inf")))


def pal_n_loss(logits: Tensor, positive: Tensor, negative: Tensor) -> Tensor:
    """Pick-all-labels normalised loss by partial softmax (Song et al. 2021, eq. 10-11).

    For a sample with positives ``P`` and negatives ``N`` (unknown entries and the *other*
    positives take no part), each positive ``i`` is a softmax over ``{i} ∪ N``::

        f_i = exp(z_i) / (exp(z_i) + sum_{j in N} exp(z_j))
        l   = -1/|P| sum_{i in P} log f_i,   -log f_i = softplus(logsumexp_{j in N} z_j - z_i)

    The batch loss is the mean of ``l`` over the samples that have at least one positive
    (samples without positives contribute nothing; 0 if none has one). The paper sums over
    the batch; a mean keeps the scale independent of the batch size.
    """
    positive, negative = positive.bool(), negative.bool() & ~positive.bool()
    neg_lse = masked_logsumexp(logits, negative, dim=1)
    per_entry = F.softplus(neg_lse.unsqueeze(1) - logits)
    per_entry = torch.where(positive, per_entry, torch.zeros_like(per_entry))
    count = positive.sum(dim=1)
    per_sample = per_entry.sum(dim=1) / count.clamp(min=1)
    return per_sample.sum() / (count > 0).sum().clamp(min=1)


def binary_kd_loss(student_logits: Tensor, teacher_logits: Tensor,
                   temperature: float = 3.0) -> Tensor:
    """Per-class binary KL distillation on sigmoid outputs (Song et al. 2021, eq. 13).

    ``T^2 * 1/(B C) sum_{b,c} KL(Bern(sigmoid(t/T)) || Bern(sigmoid(s/T)))`` with
    ``KL(q || p) = q log(q/p) + (1-q) log((1-q)/(1-p))``, computed with ``logsigmoid``. The T^2
    factor keeps gradient magnitudes comparable across temperatures (Hinton et al., 2015).
    """
    s, t = student_logits / temperature, teacher_logits / temperature
    q = torch.sigmoid(t)
    kl = q * (F.logsigmoid(t) - F.logsigmoid(s)) + (1 - q) * (F.logsigmoid(-t) - F.logsigmoid(-s))
    return temperature**2 * kl.mean()


def softmax_kl(p_logits: Tensor, q_logits: Tensor) -> Tensor:
    """``KL(softmax(p) || softmax(q))`` per row, shape [B]: ``sum_c p_c (log p_c - log q_c)``."""
    log_p = F.log_softmax(p_logits, dim=1)
    return (log_p.exp() * (log_p - F.log_softmax(q_logits, dim=1))).sum(dim=1)


def softmax_kd_loss(student_logits: Tensor, teacher_logits: Tensor,
                    temperature: float = 3.0) -> Tensor:
    """Softmax KL distillation on the calibration heads (Song et al. 2021, eq. 14).

    ``T^2 * 1/B sum_b KL(softmax(t_b/T) || softmax(s_b/T))``.
    """
    kl = softmax_kl(teacher_logits / temperature, student_logits / temperature)
    return temperature**2 * kl.mean()


def uncertainty(calibration_logits: Tensor, logits: Tensor) -> Tensor:
    """A network's uncertainty per sample [B]: ``KL(softmax(calibration) || softmax(logits))``,
    the divergence between its calibration and classification heads (Song et al. 2021, eq. 15)."""
    return softmax_kl(calibration_logits, logits)


def grad_cam(score: Tensor, feature_map: Tensor, *, create_graph: bool,
             relu: bool = False, channel_softmax: bool = False) -> Tensor:
    """Grad-CAM map [B, h, w] of a scalar ``score`` on ``feature_map`` [B, F, h, w].

    ``w_bf = sum_{h,w} d score / d Z_bfhw`` (eq. 15, a spatial sum, not Grad-CAM's mean), or with
    ``channel_softmax`` ``softmax_f`` of it (the authors' code, selective_fc_kd_att.py:49,64);
    ``A_bhw = sum_f w_bf Z_bfhw`` (eq. 16); ``relu`` applies Grad-CAM's ReLU (the paper has
    none). ``score`` should be a sum over samples so that each sample gets its own gradient.
    With ``create_graph`` the weights are differentiable too (a second-order path into the
    heads); without it they are constants and a map of a ``feature_map`` that requires grad is
    differentiable through ``Z`` only (the authors' detached weights). The graph of ``score``
    is kept for the caller's backward pass.
    """
    (grad,) = torch.autograd.grad(score, feature_map, create_graph=create_graph,
                                  retain_graph=True)
    weights = grad.sum(dim=(2, 3), keepdim=True)
    if channel_softmax:
        weights = weights.softmax(dim=1)
    cam = (weights * feature_map).sum(dim=1)
    return F.relu(cam) if relu else cam


def _same_size(teacher_map: Tensor, student_map: Tensor) -> Tensor:
    """The teacher's map resized (bilinear) to the student's spatial size where they differ."""
    if teacher_map.shape[-2:] == student_map.shape[-2:]:
        return teacher_map
    return F.interpolate(teacher_map.unsqueeze(1), size=student_map.shape[-2:],
                         mode="bilinear", align_corners=False).squeeze(1)


def reference_attention_loss(student_map: Tensor, teacher_map: Tensor) -> Tensor:
    """Uncertainty attention distillation as the authors' code computes it
    (LcDog/ud, selective_fc_kd_att.py:67 and the engine's mean over the batch):
    ``mean_{b,h,w} (a_s - a_t)^2 / B`` on raw (unnormalised) maps [B, h, w]. Its weight there is
    ``mimic_alpha`` 0.1; the ``/ B`` makes the term's scale depend on the batch size, as in
    their code."""
    teacher_map = _same_size(teacher_map, student_map)
    return (student_map - teacher_map).pow(2).mean() / student_map.shape[0]


def attention_loss(student_map: Tensor, teacher_map: Tensor) -> Tensor:
    """Uncertainty attention distillation (Song et al. 2021, eq. 17) between maps [B, h, w].

    Each map is flattened and divided by its L2 norm (maps of different networks have
    unrelated scales, as in attention transfer, Zagoruyko & Komodakis 2017); the loss is the
    squared L2 distance, averaged over the batch: ``1/B sum_b ||a_s/|a_s| - a_t/|a_t|||^2``
    (in [0, 4]; squared so that the gradient is defined where the maps agree). A teacher map
    of another spatial size is resized to the student's (bilinear).
    """
    teacher_map = _same_size(teacher_map, student_map)
    a_s = F.normalize(student_map.flatten(1), dim=1)
    a_t = F.normalize(teacher_map.flatten(1), dim=1)
    return (a_s - a_t).pow(2).sum(dim=1).mean()
