"""The baselines every method is compared with (the baselines of docs/mile.md and
docs/uncertainty_distillation.md).

- ``softmax``: cross-entropy on the given single label; predicted set = top-1.
- ``sigmoid`` (assume-negative, AN): BCE with every unobserved entry taken as negative, head bias
  initialised to ``-log(C)`` (MILe's code, whose baseline this is).
- ``bce_full``: the full-label oracle, BCE on the complete true label sets (only where they exist).
- ``bce``: BCE on the observed entries only (fully labelled multi-label data).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from unhot.config import RunConfig, choice
from unhot.losses import assume_negative_bce, masked_bce, softmax_cross_entropy
from unhot.methods.base import HEAD_INITS, Stage, StepContext, TrainingTask


@dataclass
class SoftmaxConfig:
    """``method: softmax`` has no knobs."""


SIGMOID_REDUCTIONS = ("sum_over_b", "mean_observed", "sum_over_bc")


@dataclass
class SigmoidConfig:
    """``method: {name: sigmoid, reduction, head_init}``: AN-BCE, MILe's baseline, so its
    defaults are MILe's code's: ``reduction: sum_over_b`` (BCE summed over classes, averaged
    over the batch) and ``head_init: minus_log_c``."""

    reduction: str = choice("sum_over_b", SIGMOID_REDUCTIONS)
    head_init: str = choice("minus_log_c", HEAD_INITS)


@dataclass
class BceConfig:
    """``method: {name: bce | bce_full, reduction, head_init}``: BCE on the observed entries /
    on the true sets (the oracle); uncertainty distillation's baseline, so PyTorch's default
    head init (its code's head has no bias)."""

    reduction: str = choice("mean_observed", SIGMOID_REDUCTIONS)
    head_init: str = choice("default", HEAD_INITS)


class SoftmaxTask(TrainingTask):
    """Softmax cross-entropy on the given single label (the batch's ``target``)."""

    output = "softmax"
    needs_single_label = True

    def losses(self, ctx: StepContext) -> dict[str, Tensor]:
        return {"ce": softmax_cross_entropy(ctx.student_output().logits, ctx.batch["target"])}


class AssumeNegativeTask(TrainingTask):
    """AN-BCE on the observed positives; everything else counts as negative."""

    def __init__(self, reduction: str = "sum_over_b", head_init: str = "minus_log_c") -> None:
        self.reduction = reduction
        self.head_init = head_init

    def losses(self, ctx: StepContext) -> dict[str, Tensor]:
        logits = ctx.student_output().logits
        return {"bce_an": assume_negative_bce(logits, ctx.batch["positive"], self.reduction)}


class ObservedBceTask(TrainingTask):
    """BCE on observed entries (``positive``/``negative``), or on the full true sets."""

    def __init__(self, reduction: str = "mean_observed", full_labels: bool = False,
                 head_init: str = "default") -> None:
        self.reduction = reduction
        self.full_labels = full_labels
        self.head_init = head_init

    def losses(self, ctx: StepContext) -> dict[str, Tensor]:
        logits = ctx.student_output().logits
        if self.full_labels:
            true = ctx.batch["true"]
            return {"bce_full": masked_bce(logits, true, ~true, self.reduction)}
        return {"bce": masked_bce(logits, ctx.batch["positive"], ctx.batch["negative"],
                                  self.reduction)}


@dataclass
class BceFullConfig(BceConfig):
    """``method: {name: bce_full, ...}``: its own class, so that the run's saved config and the
    engine name the oracle, not ``bce`` (the method name is found from the config's class)."""


def softmax_stages(cfg: SoftmaxConfig, run: RunConfig) -> list[Stage]:
    """One stage of softmax cross-entropy."""
    return [Stage("train", SoftmaxTask())]


def sigmoid_stages(cfg: SigmoidConfig, run: RunConfig) -> list[Stage]:
    """One stage of assume-negative BCE."""
    return [Stage("train", AssumeNegativeTask(cfg.reduction, cfg.head_init))]


def bce_stages(cfg: BceConfig, run: RunConfig) -> list[Stage]:
    """One stage of BCE on the observed entries."""
    return [Stage("train", ObservedBceTask(cfg.reduction, head_init=cfg.head_init))]


def bce_full_stages(cfg: BceFullConfig, run: RunConfig) -> list[Stage]:
    """One stage of BCE on the full true label sets (the oracle)."""
    return [Stage("train", ObservedBceTask(cfg.reduction, full_labels=True,
                                           head_init=cfg.head_init))]
