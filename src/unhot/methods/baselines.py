"""The baselines every method is compared with (METHODS.md §0).

- ``softmax``: cross-entropy on the given single label; predicted set = top-1.
- ``sigmoid`` (assume-negative, AN): BCE with every unobserved entry taken as negative, head bias
  initialised to ``-log(C)``.
- ``bce_full``: the full-label oracle, BCE on the complete true label sets (only where they exist).
- ``bce``: BCE on the observed entries only (fully labelled multi-label data).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from unhot.config import RunConfig
from unhot.losses import assume_negative_bce, masked_bce, softmax_cross_entropy
from unhot.methods.base import Stage, StepContext, TrainingTask


@dataclass
class SoftmaxConfig:
    """``method: softmax`` has no knobs."""


@dataclass
class SigmoidConfig:
    """``method: sigmoid``: AN-BCE; ``reduction``: mean_observed | sum_over_bc."""

    reduction: str = "mean_observed"


@dataclass
class BceConfig:
    """``method: bce`` (observed entries) / ``bce_full`` (true sets, the oracle)."""

    reduction: str = "mean_observed"


class SoftmaxTask(TrainingTask):
    """Softmax cross-entropy on the given single label (the batch's ``target``)."""

    output = "softmax"

    def losses(self, ctx: StepContext) -> dict[str, Tensor]:
        return {"ce": softmax_cross_entropy(ctx.student_output().logits, ctx.batch["target"])}


class AssumeNegativeTask(TrainingTask):
    """AN-BCE on the observed positives; everything else counts as negative."""

    def __init__(self, reduction: str = "mean_observed") -> None:
        self.reduction = reduction

    def losses(self, ctx: StepContext) -> dict[str, Tensor]:
        logits = ctx.student_output().logits
        return {"bce_an": assume_negative_bce(logits, ctx.batch["positive"], self.reduction)}


class ObservedBceTask(TrainingTask):
    """BCE on observed entries (``positive``/``negative``), or on the full true sets."""

    def __init__(self, reduction: str = "mean_observed", full_labels: bool = False) -> None:
        self.reduction = reduction
        self.full_labels = full_labels

    def losses(self, ctx: StepContext) -> dict[str, Tensor]:
        logits = ctx.student_output().logits
        if self.full_labels:
            true = ctx.batch["true"]
            return {"bce_full": masked_bce(logits, true, ~true, self.reduction)}
        return {"bce": masked_bce(logits, ctx.batch["positive"], ctx.batch["negative"],
                                  self.reduction)}


def softmax_stages(cfg: SoftmaxConfig, run: RunConfig) -> list[Stage]:
    """One stage of softmax cross-entropy."""
    return [Stage("train", SoftmaxTask())]


def sigmoid_stages(cfg: SigmoidConfig, run: RunConfig) -> list[Stage]:
    """One stage of assume-negative BCE."""
    return [Stage("train", AssumeNegativeTask(cfg.reduction))]


def bce_stages(cfg: BceConfig, run: RunConfig) -> list[Stage]:
    """One stage of BCE on the observed entries."""
    return [Stage("train", ObservedBceTask(cfg.reduction))]


def bce_full_stages(cfg: BceConfig, run: RunConfig) -> list[Stage]:
    """One stage of BCE on the full true label sets (the oracle)."""
    return [Stage("train", ObservedBceTask(cfg.reduction, full_labels=True))]
