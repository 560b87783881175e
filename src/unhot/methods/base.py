"""What a method is: a schedule of stages, each training one model with a task.

A :class:`Stage` trains one model for a number of epochs, starting fresh, from the previous
stage's weights, or from a checkpoint, optionally with a frozen teacher (a previous stage or any
checkpoint). Its :class:`TrainingTask` turns one augmented batch into named losses (cf. timm's
``TrainingTask``); the engine sums them, steps the optimizer and calls the task's epoch hook.

- Baselines: one stage, a task with a fixed loss.
- MILe: one stage whose task alternates interaction/imitation phases by optimizer step.
- Label Refinery: one fresh stage per generation, teacher = previous generation.
- Uncertainty distillation: a teacher stage, then a student stage with that teacher.
- EM + APL: one stage whose task refreshes a label store at the end of every epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from unhot.config import ModelConfig
from unhot.data.base import LABEL_FIELDS
from unhot.models import ModelOutput

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    import numpy as np

    from unhot.data.base import Split


HEAD_INITS = ("default", "minus_log_c")
"""Head-bias initialisations: PyTorch's default ``nn.Linear`` init, or ``-log(C)``."""


@dataclass(frozen=True)
class EpochEnd:
    """What a task may use when a training epoch ends: the training split, the current model's
    probabilities on a split (``predict(split)``, [N, C] in index order, gathered on every
    rank), the epochs done and planned, the stage's folder for method outputs, and whether this
    is the main process (the one that writes files)."""

    train: Split
    predict: Callable[[Split], np.ndarray]
    epochs_done: int
    epochs: int
    stage_dir: Path
    is_main: bool


@dataclass
class StepContext:
    """Everything a task may use for one optimizer step.

    ``images`` is the augmented float batch that both the student and any teacher see;
    ``raw_images`` the same batch before augmentation (for "static" labels of the whole image);
    ``step`` counts optimizer steps already taken in this stage (0-based).
    """

    model: nn.Module
    images: Tensor
    batch: dict[str, Tensor]
    step: int
    epoch: int
    teacher: nn.Module | None = None
    raw_images: Tensor | None = None
    _student: ModelOutput | None = field(default=None, repr=False)

    def student_output(self) -> ModelOutput:
        """The student's forward pass on the batch (computed once, with gradients)."""
        if self._student is None:
            self._student = self.model(self.images)
        return self._student

    def teacher_output(self) -> ModelOutput:
        """The frozen teacher's forward pass on the same batch, without gradients."""
        if self.teacher is None:
            raise RuntimeError("this stage has no teacher")
        with torch.no_grad():
            return self.teacher(self.images)


class TrainingTask:
    """A method's training step: batch in, named losses out (summed by the engine).

    ``output`` says how logits become the probabilities that evaluation scores:
    ``"sigmoid"`` (independent per class) or ``"softmax"`` (one distribution per image).
    """

    output: str = "sigmoid"

    def losses(self, ctx: StepContext) -> dict[str, Tensor]:
        """Named loss terms for one batch; the engine backpropagates their sum."""
        raise NotImplementedError

    def scores(self, logits: Tensor) -> Tensor:
        """Probabilities for evaluation: sigmoid or softmax of the classification logits."""
        if self.output == "softmax":
            return torch.softmax(logits, dim=1)
        return torch.sigmoid(logits)

    needs_single_label: bool = False
    """True for tasks that train on the batch's ``target`` (one label per image)."""
    head_init: str = "default"
    """How the classification head's bias starts (:data:`HEAD_INITS`); each method's config
    sets it from its authors' code."""

    def head_bias(self, num_classes: int) -> float | None:
        """Initial bias of the classification head: ``-log(C)`` for ``head_init:
        minus_log_c`` (initial p ~ 1/C, MILe code's ``adjust_bias``), None (PyTorch's
        ``nn.Linear`` init, Cole et al.'s and Zhou et al.'s SPML code) for ``default``."""
        return -math.log(num_classes) if self.head_init == "minus_log_c" else None

    batch_fields: tuple[str, ...] = LABEL_FIELDS
    """The label fields of a batch the task reads (fewer fields, less work per step)."""

    single_process: bool = False
    """True for tasks whose per-sample state (ROLE's label estimates) lives in one process."""

    def setup(self, train: Split) -> None:
        """Build per-sample state from the training split before the first step (e.g. ROLE's
        label estimates). Default: nothing."""

    def after_step(self, lr: float) -> None:
        """Hook after each optimizer step, with the step's scheduled learning rate (e.g. step
        ROLE's label estimates). Default: nothing."""

    def on_epoch_end(self, end: EpochEnd) -> None:
        """Hook after each training epoch (e.g. refresh a label store). Default: nothing."""

    def state_dict(self) -> dict[str, Any]:
        """Task state saved in every checkpoint (tensors and plain values only)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` on resume."""


@dataclass
class Stage:
    """One model trained for ``epochs`` epochs (None: the run's ``optim.epochs``).

    ``init``: "fresh" (random), "continue" (the previous stage's final weights) or a checkpoint
    path. ``teacher``: None, a previous stage's name, or a checkpoint path; ``teacher_bn``:
    "eval" (running statistics) or "train" (batch statistics, Label Refinery's code).
    ``model``: overrides the run's model config (e.g. a student of another architecture).
    A teacher named ``"<stage>:best"`` is that stage's best epoch by its ``keep_best`` metric
    (evaluated on ``train.eval_split``; ``keep_best_mode`` "max" or "min"). ``test_best``: the
    stage ends with its best epoch's weights, not its last (model selection).
    ``val_labels``: what the validation split is scored against, ``"true"`` (its clean label
    sets) or ``"observed"`` (its observed positives, e.g. Cole et al.'s single positives, the
    rest counted negative); the test split is always scored against its true sets.
    ``patience``: with ``keep_best``, stop after this many epochs without a gain (early stop);
    ``stop_drop``: with ``keep_best``, stop when the metric falls more than this below its best.
    ``cam_boost``: BoostLU's alpha for the model (1: plain pooling, see
    :class:`~unhot.models.heads.Classifier`).
    """

    name: str
    task: TrainingTask
    epochs: int | None = None
    init: str = "fresh"
    teacher: str | None = None
    teacher_bn: str = "eval"
    model: ModelConfig | None = None
    calibration_head: bool = False
    keep_best: str | None = None
    keep_best_mode: str = "max"
    test_best: bool = False
    val_labels: str = "true"
    patience: int | None = None
    stop_drop: float | None = None
    cam_boost: float = 1.0
