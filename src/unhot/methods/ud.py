"""Uncertainty distillation (Song et al., ACM MM 2021; docs/uncertainty_distillation.md) and
plain KD.

- ``bce_cal``: one stage, classification head trained with BCE plus a calibration head
  (Linear -> BN -> ReLU -> Linear) trained with ``lam *`` PAL-N by partial softmax.
- ``ud``: a teacher stage (``bce_cal``, optionally another architecture via ``teacher_model``)
  then a student stage of any architecture distilled from it on the same augmented batch:
  ``L = kd_weight KL_sigmoid + alpha KL_softmax(calibration) + beta L_att (+ cls_balance BCE)``
  (eq. 18). Defaults are the authors' code (LcDog/ud, selective_fc_kd_att.py:67-89 with the
  engine's division by B): ``kd_weight 0.25, alpha 0.5, beta 0.1, attention: reference``
  (softmax channel weights, detached; raw maps; MSE / B). The paper's form is ``kd_weight 1,
  alpha 0.5, beta 0.5`` with ``attention: normalized`` (L2-normalised maps, weights
  differentiated too); docs/uncertainty_distillation.md has the fidelity table.
- ``kd``: the same schedule, but the student only matches the teacher's classification head
  (the paper's "Ours - KD"); its teacher is plain BCE unless ``lam > 0``.

``teacher_checkpoint`` skips the teacher stage and distils from any run's weights.
``self_distill``: the network first trains ``teacher_epochs`` on the labels (cosine schedule),
then restarts the cosine schedule from its final weights for ``optim.epochs`` with its best
first-half epoch (``keep_best`` on ``train.eval_split``) as the frozen teacher (Yang et al.'s
snapshot distillation as used in Sec. 5.3.2).

Difficult entries (``batch["difficult"]``) count as positive in every label term
(``difficult: positive``, VOC convention) or take no part (``difficult: ignore``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from unhot.config import Checked, ConfigError, ModelConfig, RunConfig, bounded, choice
from unhot.losses import (
    attention_loss,
    binary_kd_loss,
    grad_cam,
    masked_bce,
    pal_n_loss,
    reference_attention_loss,
    softmax_kd_loss,
    uncertainty,
)
from unhot.methods.base import HEAD_INITS, Stage, StepContext, TrainingTask
from unhot.models import ModelOutput
from unhot.runs import RunError

DIFFICULT = ("positive", "ignore")
ATTENTION_FORMS = ("reference", "normalized")


@dataclass
class CalibratedBceConfig(Checked):
    """``method: {name: bce_cal, lam, difficult, head_init}``: BCE + ``lam`` * PAL-N (paper:
    0.1); PyTorch's default head init (the authors' classification head has no bias)."""

    prefix = "method."
    lam: float = bounded(0.1, 0)
    difficult: str = choice("positive", DIFFICULT)
    head_init: str = choice("default", HEAD_INITS)


@dataclass
class KdConfig(CalibratedBceConfig):
    """``method: {name: kd, ...}``: a teacher stage, then a student matching its sigmoid outputs.

    ``temperature``: T of the distillation KLs (scaled by T^2); ``kd_weight``: weight of the
    binary KD term ``T^2 mean_{b,c} KL`` (1: the plain KD student); ``cls_balance``: weight of an
    added BCE on the labels (authors' code; 0 = pure distillation); ``lam``: PAL-N weight of
    the teacher stage (0: plain BCE, no calibration head); ``teacher_model``: the teacher's
    architecture (None: the run's ``model``); ``teacher_epochs``: its epochs (None:
    ``optim.epochs``); ``teacher_checkpoint``: distil from these weights instead of training a
    teacher; ``self_distill`` / ``keep_best``: see the module docstring.
    """

    lam: float = bounded(0.0, 0)
    temperature: float = bounded(3.0, 0, above=True)
    kd_weight: float = bounded(1.0, 0)
    cls_balance: float = bounded(0.0, 0)
    teacher_model: ModelConfig | None = None
    teacher_epochs: int | None = bounded(None, 1)
    teacher_checkpoint: str | None = None
    self_distill: bool = False
    keep_best: str = "mAP"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.self_distill and (self.teacher_model or self.teacher_checkpoint):
            raise ConfigError("method.self_distill: the network is its own teacher; drop "
                              "method.teacher_model and method.teacher_checkpoint")


@dataclass
class UdConfig(KdConfig):
    """``method: {name: ud, ...}``: KD knobs plus ``alpha`` (calibration-head KL weight),
    ``beta`` (uncertainty attention weight), ``attention`` (``reference``: the authors' code;
    ``normalized``: L2-normalised maps with differentiable weights) and ``cam_relu`` (ReLU on
    Grad-CAM maps; neither paper nor code has one). The teacher needs a calibration head, so
    ``lam`` defaults to the paper's 0.1. ``kd_weight`` 0.25, ``alpha`` 0.5, ``beta`` 0.1 are
    the authors' code's weights ``((alpha_code * KL_cal + KL_bin) / 2 + 0.1 MSE) / B`` in
    unhot's per-sample means (module docstring)."""

    lam: float = bounded(0.1, 0)
    kd_weight: float = bounded(0.25, 0)
    alpha: float = bounded(0.5, 0)
    beta: float = bounded(0.1, 0)
    attention: str = choice("reference", ATTENTION_FORMS)
    cam_relu: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lam <= 0 and self.teacher_checkpoint is None:
            raise ConfigError("method(ud).lam must be > 0: the teacher's calibration head is "
                              "trained by PAL-N (or give method.teacher_checkpoint)")


def observed_labels(batch: dict[str, Tensor], difficult: str) -> tuple[Tensor, Tensor]:
    """(positive, negative) masks of a batch with difficult entries made positive or dropped."""
    positive, negative, hard = batch["positive"], batch["negative"], batch["difficult"]
    if difficult == "positive":
        return positive | hard, negative & ~hard
    return positive & ~hard, negative & ~hard


class CalibratedBceTask(TrainingTask):
    """BCE on the classification head + ``lam`` * PAL-N on the calibration head (eq. 12)."""

    def __init__(self, lam: float, difficult: str, head_init: str = "default") -> None:
        self.lam = lam
        self.difficult = difficult
        self.head_init = head_init

    def losses(self, ctx: StepContext) -> dict[str, Tensor]:
        out = ctx.student_output()
        positive, negative = observed_labels(ctx.batch, self.difficult)
        terms = {"bce": masked_bce(out.logits, positive, negative)}
        if self.lam > 0:
            terms["paln"] = self.lam * pal_n_loss(_calibration(out, "model"), positive, negative)
        return terms


def _calibration(out: ModelOutput, who: str) -> Tensor:
    if out.calibration is None:
        raise RunError(f"uncertainty distillation: the {who} has no calibration head (train it "
                       f"with method bce_cal / ud, or a checkpoint that has one)")
    return out.calibration


def teacher_uncertainty_map(teacher: nn.Module, images: Tensor, relu: bool,
                            channel_softmax: bool) -> tuple[ModelOutput, Tensor]:
    """The frozen teacher's outputs and its uncertainty Grad-CAM map, both constants.

    The teacher's parameters take no gradient, so its feature map is made a leaf that requires
    one (a forward hook on the backbone); only the heads are differentiated.
    """
    handle = teacher.backbone.register_forward_hook(
        lambda _module, _inputs, output: output.detach().requires_grad_(True))
    try:
        with torch.enable_grad():
            out = teacher(images)
            score = uncertainty(_calibration(out, "teacher"), out.logits).sum()
            cam = grad_cam(score, out.feature_map, create_graph=False, relu=relu,
                           channel_softmax=channel_softmax)
    finally:
        handle.remove()
    detached = ModelOutput(*(None if t is None else t.detach() for t in out))
    return detached, cam.detach()


class DistillTask(TrainingTask):
    """Student step of KD (``alpha = beta = 0``) or UD: named loss terms of eq. 18."""

    def __init__(self, cfg: KdConfig, alpha: float = 0.0, beta: float = 0.0,
                 cam_relu: bool = False, attention: str = "reference") -> None:
        self.cfg = cfg
        self.head_init = cfg.head_init
        self.alpha = alpha
        self.beta = beta
        self.cam_relu = cam_relu
        self.reference = attention == "reference"

    def losses(self, ctx: StepContext) -> dict[str, Tensor]:
        cfg = self.cfg
        out = ctx.student_output()
        if self.beta > 0:
            if ctx.teacher is None:
                raise RuntimeError("this stage has no teacher")
            teacher, teacher_map = teacher_uncertainty_map(ctx.teacher, ctx.images,
                                                           self.cam_relu, self.reference)
        else:
            teacher = ctx.teacher_output()
        terms = {"kd": cfg.kd_weight * binary_kd_loss(out.logits, teacher.logits,
                                                      cfg.temperature)}
        if self.alpha > 0:
            terms["kd_cal"] = self.alpha * softmax_kd_loss(
                _calibration(out, "student"), _calibration(teacher, "teacher"), cfg.temperature)
        if self.beta > 0:
            score = uncertainty(_calibration(out, "student"), out.logits).sum()
            student_map = grad_cam(score, out.feature_map, create_graph=not self.reference,
                                   relu=self.cam_relu, channel_softmax=self.reference)
            distance = reference_attention_loss if self.reference else attention_loss
            terms["attention"] = self.beta * distance(student_map, teacher_map)
        if cfg.cls_balance > 0:
            positive, negative = observed_labels(ctx.batch, cfg.difficult)
            terms["bce"] = cfg.cls_balance * masked_bce(out.logits, positive, negative)
        return terms


def calibrated_bce_stages(cfg: CalibratedBceConfig, run: RunConfig) -> list[Stage]:
    """One stage of BCE + lam * PAL-N (the paper's "Cal" rows of Table 2)."""
    return [Stage("train", CalibratedBceTask(cfg.lam, cfg.difficult, cfg.head_init),
                  calibration_head=cfg.lam > 0)]


def _distill_stages(cfg: KdConfig, task: DistillTask, student_calibration: bool
                    ) -> list[Stage]:
    teacher_task = CalibratedBceTask(cfg.lam, cfg.difficult, cfg.head_init)
    calibrated = cfg.lam > 0
    if cfg.self_distill:
        return [Stage("first_half", teacher_task, epochs=cfg.teacher_epochs,
                      calibration_head=calibrated, keep_best=cfg.keep_best),
                Stage("second_half", task, init="continue", teacher="first_half:best",
                      calibration_head=calibrated)]
    student = Stage("student", task, teacher=cfg.teacher_checkpoint or "teacher",
                    calibration_head=student_calibration)
    if cfg.teacher_checkpoint:
        return [student]
    return [Stage("teacher", teacher_task, epochs=cfg.teacher_epochs, model=cfg.teacher_model,
                  calibration_head=calibrated), student]


def kd_stages(cfg: KdConfig, run: RunConfig) -> list[Stage]:
    """Teacher (or first half), then a student distilled on the classification head only."""
    return _distill_stages(cfg, DistillTask(cfg), student_calibration=False)


def ud_stages(cfg: UdConfig, run: RunConfig) -> list[Stage]:
    """Teacher (or first half) with a calibration head, then the uncertainty-distilled student."""
    task = DistillTask(cfg, cfg.alpha, cfg.beta, cfg.cam_relu, cfg.attention)
    return _distill_stages(cfg, task, student_calibration=cfg.alpha > 0 or cfg.beta > 0)
