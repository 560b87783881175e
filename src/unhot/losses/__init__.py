"""Losses on logits, with explicit masks and reductions (fp32). Each docstring: formula + paper."""

from unhot.losses.basic import (
    REDUCTIONS,
    assume_negative_bce,
    masked_bce,
    reduce_entries,
    soft_target_cross_entropy,
    softmax_cross_entropy,
)
from unhot.losses.distill import (
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
from unhot.losses.spml import (
    an_label_smoothing,
    binary_entropy,
    entropy_maximisation,
    expected_positive_regulariser,
    role_initial_estimates,
    role_loss,
    soft_negative_bce,
    weighted_an,
)

__all__ = [
    "REDUCTIONS",
    "an_label_smoothing",
    "assume_negative_bce",
    "attention_loss",
    "binary_entropy",
    "binary_kd_loss",
    "entropy_maximisation",
    "expected_positive_regulariser",
    "grad_cam",
    "masked_bce",
    "masked_logsumexp",
    "pal_n_loss",
    "reduce_entries",
    "reference_attention_loss",
    "role_initial_estimates",
    "role_loss",
    "soft_negative_bce",
    "soft_target_cross_entropy",
    "softmax_cross_entropy",
    "softmax_kd_loss",
    "softmax_kl",
    "uncertainty",
    "weighted_an",
]
