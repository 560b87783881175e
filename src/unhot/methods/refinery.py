"""Label Refinery (Bagherinezhad et al., 2018; docs/label_refinery.md).

Generation 1 trains on the observed labels (softmax cross-entropy). Generation g+1 is a fresh
network trained for the full schedule on the labels of the frozen generation-g network (the
*refinery*) run on **the same augmented crop**: loss ``-sum_c q_c log softmax(z)_c`` with
``q = softmax(z_refinery)``; the ground truth is no longer used. Each generation is one stage, so
a killed run never retrains a finished generation.

Knobs (ablations of the paper): ``soft`` (q, or the one-hot argmax of q), ``dynamic`` (labels
per crop, or "static" labels from the whole un-augmented image, with the refinery's BN in eval
mode so they do not change between epochs), ``teacher_bn`` ("train": batch
statistics, as the authors' code; "eval"), ``teacher_checkpoint`` (a refinery of any
architecture from any run: then generation 1 is refined too), ``student_init`` (fresh or a
checkpoint path) and adversarial jittering: ``x' = x + eta * dKL(q || p)/dx`` (paper §3.4, one
ascent step, the jittered crops batched with the natural ones). ``adversarial_eta`` is in the
paper's units, pixels in [0, 255] (paper: 1); images here are ``u = x / 127.5 - 1``, where the same
step is ``u' = u + eta / 127.5^2 * dKL/du`` (the gradient scales by 127.5 too).

Example::

    method: {name: refinery, generations: 3, soft: true, dynamic: true, teacher_bn: train}
    augment: {crop_scale: [0.08, 1.0]}
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unhot.augment import PIXEL_SCALE
from unhot.config import ConfigError, RunConfig
from unhot.losses import soft_target_cross_entropy
from unhot.methods.base import Stage, StepContext, TrainingTask
from unhot.methods.baselines import SoftmaxTask


@dataclass
class RefineryConfig:
    """``method: {name: refinery, generations, soft, dynamic, teacher_bn, teacher_checkpoint,
    student_init, adversarial_eta}``."""

    generations: int = 3
    soft: bool = True
    dynamic: bool = True
    teacher_bn: str = "train"
    teacher_checkpoint: str | None = None
    student_init: str = "fresh"
    adversarial_eta: float = 0.0

    def __post_init__(self) -> None:
        if self.generations < 1:
            raise ConfigError(f"method(refinery).generations must be >= 1, got "
                              f"{self.generations}")
        if self.teacher_bn not in ("train", "eval"):
            raise ConfigError(f"method(refinery).teacher_bn must be train or eval, got "
                              f"'{self.teacher_bn}'")
        if self.adversarial_eta < 0:
            raise ConfigError(f"method(refinery).adversarial_eta must be >= 0, got "
                              f"{self.adversarial_eta}")


def refined_labels(teacher_logits: Tensor, soft: bool = True) -> Tensor:
    """The refinery's target distribution: ``softmax(z)``, or its argmax as one-hot."""
    probs = torch.softmax(teacher_logits.float(), dim=1)
    if soft:
        return probs
    return F.one_hot(probs.argmax(dim=1), probs.shape[1]).to(probs.dtype)


def adversarial_jitter(student: nn.Module, images: Tensor, target: Tensor, eta: float) -> Tensor:
    """One gradient-ascent step on the input (Bagherinezhad et al. 2018, §3.4): in pixel units
    ``x + eta * d/dx CE(q, softmax(student(x)))``, i.e. ``u + eta / 127.5^2 * d/du CE`` for the
    network's inputs ``u = x / 127.5 - 1``.

    The cross-entropy differs from KL(q || p) by H(q), which does not depend on x, so both have
    the same input gradient. Each image's step follows its own loss (summed over the batch, so
    ``eta`` does not depend on the batch size). Only the input gets a gradient; the result is
    detached.
    """
    x = images.detach().requires_grad_(True)
    loss = soft_target_cross_entropy(student(x).logits, target) * len(x)
    (grad,) = torch.autograd.grad(loss, x)
    return (x + eta / PIXEL_SCALE**2 * grad).detach()


class RefineryTask(TrainingTask):
    """Soft-target cross-entropy against the frozen refinery's labels of the same crop."""

    output = "softmax"

    def __init__(self, soft: bool, dynamic: bool, adversarial_eta: float) -> None:
        self.soft = soft
        self.dynamic = dynamic
        self.adversarial_eta = adversarial_eta

    def labels(self, teacher: nn.Module, images: Tensor) -> Tensor:
        with torch.no_grad():
            return refined_labels(teacher(images).logits, self.soft)

    def static_labels(self, teacher: nn.Module, images: Tensor) -> Tensor:
        """Labels of whole, un-augmented images with the teacher's BN in eval mode, so each
        image gets the same label at every epoch whatever batch it is in (paper's "static")."""
        was_training = teacher.training
        teacher.eval()
        try:
            return self.labels(teacher, images)
        finally:
            teacher.train(was_training)

    def losses(self, ctx: StepContext) -> dict[str, Tensor]:
        if ctx.teacher is None:
            raise RuntimeError("a refinery stage needs a teacher")
        if self.dynamic or ctx.raw_images is None:
            target = self.labels(ctx.teacher, ctx.images)
        else:
            target = self.static_labels(ctx.teacher, ctx.raw_images)
        if self.adversarial_eta == 0:
            return {"refined_ce": soft_target_cross_entropy(ctx.student_output().logits, target)}
        jittered = adversarial_jitter(ctx.model, ctx.images, target, self.adversarial_eta)
        images = torch.cat([ctx.images, jittered])
        targets = torch.cat([target, self.labels(ctx.teacher, jittered)])
        return {"refined_ce": soft_target_cross_entropy(ctx.model(images).logits, targets)}


def refinery_stages(cfg: RefineryConfig, run: RunConfig) -> list[Stage]:
    """Stages ``gen1 .. genN``: gen1 on the labels (or refined by ``teacher_checkpoint``), each
    later generation a fresh network refined by the previous one."""
    stages = []
    for g in range(1, cfg.generations + 1):
        teacher = cfg.teacher_checkpoint if g == 1 else f"gen{g - 1}"
        task: TrainingTask = (SoftmaxTask() if teacher is None else
                              RefineryTask(cfg.soft, cfg.dynamic, cfg.adversarial_eta))
        stages.append(Stage(f"gen{g}", task, init=cfg.student_init, teacher=teacher,
                            teacher_bn=cfg.teacher_bn))
    return stages
