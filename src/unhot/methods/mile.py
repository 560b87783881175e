"""MILe — multi-label iterated learning (Rajeswar et al., 2022; docs/mile.md).

One network with sigmoid outputs; its optimizer steps alternate, cycle after cycle, between

- ``k_t`` *interaction* steps: assume-negative BCE against the observed single label;
- ``k_s`` *imitation* steps: a frozen snapshot of the network taken after the ``k_t``-th
  interaction step of the cycle (the teacher; eval mode, so BatchNorm uses running statistics)
  labels the same augmented batch the student sees, ``y = 1[sigmoid(z_teacher) > rho]`` (or
  ``y ~ Bernoulli(sigmoid(z_teacher))`` with ``sample_teacher``), and the network minimises BCE
  against ``y`` on every entry. The ground truth is not used unless ``keep_ground_truth`` ORs it in.

Step ``s`` (0-based, counted over the whole stage) is an imitation step iff
``s mod (k_t + k_s) >= k_t``: exactly ``k_t`` and ``k_s`` steps per phase (the authors' code runs
k-1). Every step is one backward pass, as for the baselines; only teacher forwards are extra.
The teacher goes into the task's checkpoint state, so a run resumed in the middle of an imitation
phase goes on with the same teacher.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from unhot.config import ConfigError, RunConfig, choice
from unhot.losses import assume_negative_bce
from unhot.methods.base import HEAD_INITS, Stage, StepContext, TrainingTask
from unhot.methods.baselines import SIGMOID_REDUCTIONS


@dataclass
class MileConfig:
    """``method: {name: mile, k_t, k_s, rho, keep_ground_truth, sample_teacher, reduction,
    head_init}``.

    ``k_t`` / ``k_s``: optimizer steps per interaction / imitation phase (authors' ImageNet code:
    2000/2000); ``rho``: pseudo-label threshold on the teacher's probabilities.
    ``reduction``: ``sum_over_b`` (the authors' ``rescale_sigmoid``: BCE summed over classes,
    averaged over the batch, so their learning rate carries over) or ``mean_observed`` (mean
    over batch and classes: the same training at lr x C and weight decay / C).
    ``head_init``: ``minus_log_c`` (their ``adjust_bias``) or ``default``.
    """

    k_t: int = 2000
    k_s: int = 2000
    rho: float = 0.25
    keep_ground_truth: bool = False
    sample_teacher: bool = False
    reduction: str = choice("sum_over_b", SIGMOID_REDUCTIONS)
    head_init: str = choice("minus_log_c", HEAD_INITS)

    def __post_init__(self) -> None:
        if self.k_t < 1:
            raise ConfigError(f"method(mile).k_t must be >= 1, got {self.k_t}")
        if self.k_s < 0:
            raise ConfigError(f"method(mile).k_s must be >= 0, got {self.k_s}")
        if not 0.0 <= self.rho < 1.0:
            raise ConfigError(f"method(mile).rho must be in [0, 1), got {self.rho}")


class Phase(NamedTuple):
    """Where optimizer step ``step`` falls: its cycle, its position in the cycle, its phase."""

    cycle: int
    position: int
    imitation: bool


def mile_phase(step: int, k_t: int, k_s: int) -> Phase:
    """Cycle ``step // (k_t + k_s)``, position ``step mod (k_t + k_s)``; imitation iff the
    position is ``>= k_t`` (the first ``k_t`` steps of each cycle interact with the labels)."""
    cycle, position = divmod(step, k_t + k_s)
    return Phase(cycle, position, position >= k_t)


def pseudo_labels(teacher_logits: Tensor, rho: float, sample: bool = False) -> Tensor:
    """MILe's multi-label pseudo ground truth from the teacher's logits (bool [B, C]).

    ``1[sigmoid(z) > rho]`` — a threshold on probabilities, not logits — or, with ``sample``,
    Bernoulli draws with success probability ``sigmoid(z)`` (torch's global generator).
    """
    probs = torch.sigmoid(teacher_logits.float())
    if sample:
        return torch.bernoulli(probs).bool()
    return probs > rho


def snapshot(model: nn.Module) -> nn.Module:
    """A frozen copy of ``model`` (unwrapped from DDP/Accelerate): eval mode, no gradients."""
    teacher = copy.deepcopy(getattr(model, "module", model))
    teacher.eval()
    for param in teacher.parameters():
        param.requires_grad_(False)
        param.grad = None
    return teacher


class MileTask(TrainingTask):
    """Alternates interaction (AN-BCE) and imitation (BCE on a frozen snapshot's pseudo-labels)
    steps; holds the current teacher while an imitation phase runs."""

    output = "sigmoid"

    def __init__(self, cfg: MileConfig) -> None:
        self.cfg = cfg
        self.head_init = cfg.head_init
        self.teacher: nn.Module | None = None
        self.teacher_cycle = -1
        self._pending: dict[str, Tensor] | None = None

    def losses(self, ctx: StepContext) -> dict[str, Tensor]:
        cfg = self.cfg
        phase = mile_phase(ctx.step, cfg.k_t, cfg.k_s)
        if not phase.imitation:
            self.teacher, self._pending = None, None
            logits = ctx.student_output().logits
            return {"bce_interaction": assume_negative_bce(logits, ctx.batch["positive"],
                                                           cfg.reduction)}
        # Snapshot before the student's forward pass: in train mode it updates BatchNorm's
        # running statistics, which the teacher must hold as they were after the k_t steps.
        teacher = self._teacher_for(phase, ctx.model)
        with torch.no_grad():
            target = pseudo_labels(teacher(ctx.images).logits, cfg.rho, cfg.sample_teacher)
        if cfg.keep_ground_truth:
            target = target | ctx.batch["positive"].to(target.device)
        # BCE on every entry against the hard pseudo-label: AN-BCE with the pseudo-positives.
        return {"bce_imitation": assume_negative_bce(ctx.student_output().logits, target,
                                                     cfg.reduction)}

    def _teacher_for(self, phase: Phase, model: nn.Module) -> nn.Module:
        """The teacher of ``phase``'s cycle: snapshot at the phase's first step, restored from a
        checkpoint after a resume, otherwise the one already held."""
        if phase.position == self.cfg.k_t:
            self.teacher, self.teacher_cycle, self._pending = snapshot(model), phase.cycle, None
        elif self.teacher is None and self._pending is not None \
                and self.teacher_cycle == phase.cycle:
            self.teacher = snapshot(model)
            self.teacher.load_state_dict(self._pending)
            self._pending = None
        if self.teacher is None or self.teacher_cycle != phase.cycle:
            raise RuntimeError(f"MILe: no teacher for the imitation step at cycle {phase.cycle}, "
                               f"position {phase.position} (teacher of cycle "
                               f"{self.teacher_cycle}); the checkpoint lacks its snapshot")
        return self.teacher

    def state_dict(self) -> dict[str, Any]:
        """The teacher's weights (while an imitation phase runs) and its cycle."""
        state: dict[str, Any] = {"teacher_cycle": self.teacher_cycle}
        if self.teacher is not None:
            state["teacher"] = {k: v.detach().cpu().clone()
                                for k, v in self.teacher.state_dict().items()}
        elif self._pending is not None:
            state["teacher"] = self._pending
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Keep the saved teacher until the next step rebuilds it around the student's
        architecture (the task never sees the model before then)."""
        self.teacher = None
        self.teacher_cycle = int(state.get("teacher_cycle", -1))
        self._pending = state.get("teacher")


def mile_stages(cfg: MileConfig, run: RunConfig) -> list[Stage]:
    """One stage whose task alternates MILe's interaction and imitation phases."""
    return [Stage("train", MileTask(cfg))]
