"""Single-positive multi-label learning (METHODS.md §4): Cole et al.'s baselines, the EM loss
and EM + asymmetric pseudo-labelling (Zhou et al., ECCV 2022), on one stage.

``loss``: ``bce_full`` (oracle, full labels), ``an`` (assume negative), ``an_ls`` (AN with label
smoothing), ``wan`` (weighted AN), ``epr`` (expected positive regulariser), ``em`` (entropy
maximisation), ``role`` (Cole et al.'s regularised online label estimation: a learned label
estimate per training entry, one process only) or ``em_apl`` (EM + ``beta`` x BCE on APL's soft
pseudo-negatives, refreshed from a label store at the end of every epoch after ``warmup``).

Example (Zhou et al.'s VOC settings: alpha 0.2, theta 0.9, warmup 5, beta 0.02)::

    method: {name: spml, loss: em_apl, alpha: 0.2, beta: 0.02, theta: 0.9, warmup: 5}
    data: {name: digit_grid, label_regime: single_positive}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from unhot.config import ConfigError, RunConfig, choice
from unhot.label_store import PseudoLabelStore, apl_update
from unhot.labels import COLE_SEED
from unhot.losses import (
    an_label_smoothing,
    entropy_maximisation,
    expected_positive_regulariser,
    masked_bce,
    role_initial_estimates,
    role_loss,
    soft_negative_bce,
    weighted_an,
)
from unhot.methods.base import HEAD_INITS, Stage, StepContext, TrainingTask
from unhot.runs import RunError

if TYPE_CHECKING:
    from unhot.data.base import Split
    from unhot.engine import StageRunner

LOSSES = ("bce_full", "an", "an_ls", "wan", "epr", "role", "em", "em_apl")
SELECT_LABELS = {"clean": "true", "single_positive": "observed"}
"""``select_labels`` values and the :class:`~unhot.methods.base.Stage` ``val_labels`` they mean."""


@dataclass
class SpmlConfig:
    """``method: {name: spml, loss, alpha, beta, theta, warmup, k, ls_coef, reduction, select,
    select_labels, patience, role_lr_mult, head_init}``.

    Defaults follow Cole et al.'s and Zhou et al.'s code (docs/spml.md, fidelity table):
    PyTorch's default head init (``head_init: minus_log_c`` is MILe's ``-log C``), AN-LS
    targets ``1 - ls_coef`` / ``ls_coef``, APL's first pseudo-negatives at the end of epoch
    ``warmup``.

    ``select``: a metric (e.g. ``mAP``) to pick the best epoch on ``train.eval_split`` (set it to
    ``val``), whose weights are then tested (Cole et al.'s model selection); None = last epoch.
    ``select_labels``: ``clean`` (the validation images' full label sets, Cole et al.'s
    default) or ``single_positive`` (only their observed single positives).
    ``role_lr_mult``: ROLE's label estimates learn at this multiple of the learning rate (Cole
    et al.'s code: 10; each estimate is updated only when its image is in the batch).
    ``patience``: with ``select``, stop when the metric has not improved for this many epochs
    (Zhou et al.'s code: 1, the first epoch without a gain); None trains every epoch and tests
    the best (Cole et al.'s code).
    """

    loss: str = "em_apl"
    alpha: float = 0.1
    beta: float = 0.9
    theta: float = 0.9
    warmup: int = 2
    k: float = 1.0
    ls_coef: float = 0.1
    reduction: str = choice("sum_over_bc", ("sum_over_bc", "mean_observed"))
    select: str | None = None
    select_labels: str = choice("clean", tuple(SELECT_LABELS))
    patience: int | None = None
    role_lr_mult: float = 10.0
    head_init: str = choice("default", HEAD_INITS)

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ConfigError(f"unknown method(spml).loss '{self.loss}'; valid: "
                              f"{', '.join(LOSSES)}")
        if not 0 <= self.theta <= 1:
            raise ConfigError(f"method(spml).theta must be in [0, 1], got {self.theta}")
        if not 0 <= self.ls_coef < 0.5:
            raise ConfigError(f"method(spml).ls_coef must be in [0, 0.5), got {self.ls_coef}")
        if self.patience is not None and (self.patience < 1 or self.select is None):
            raise ConfigError(f"method(spml).patience must be >= 1 and needs method.select, "
                              f"got patience {self.patience}, select {self.select}")


class SpmlTask(TrainingTask):
    """One of the SPML losses on the observed single positives (and APL's store)."""

    def __init__(self, cfg: SpmlConfig) -> None:
        self.cfg = cfg
        self.head_init = cfg.head_init
        self.store: PseudoLabelStore | None = None
        self.estimates: nn.Parameter | None = None

    def trainable(self, train: Split) -> list[dict[str, Any]]:
        """ROLE's label estimates: one logit per (training sample, class), trained at
        ``role_lr_mult`` times the model's learning rate (Cole et al.'s ``lr_mult``)."""
        if self.cfg.loss != "role":
            return []
        generator = torch.Generator().manual_seed(COLE_SEED)
        positive = torch.from_numpy(train.labels.positive)
        self.estimates = nn.Parameter(role_initial_estimates(positive, generator))
        return [{"params": [self.estimates], "lr_scale": self.cfg.role_lr_mult}]

    def losses(self, ctx: StepContext) -> dict[str, Tensor]:
        cfg, logits, batch = self.cfg, ctx.student_output().logits, ctx.batch
        positive = batch["positive"]
        unknown = ~(positive | batch["negative"])
        if cfg.loss == "bce_full":
            return {"bce_full": masked_bce(logits, batch["true"], ~batch["true"], cfg.reduction)}
        if cfg.loss == "an":
            return {"an": an_label_smoothing(logits, positive, 0.0, cfg.reduction)}
        if cfg.loss == "an_ls":
            return {"an_ls": an_label_smoothing(logits, positive, cfg.ls_coef, cfg.reduction)}
        if cfg.loss == "wan":
            return {"wan": weighted_an(logits, positive, cfg.reduction)}
        if cfg.loss == "epr":
            return {"epr": expected_positive_regulariser(logits, positive, cfg.k,
                                                         cfg.reduction)}
        if cfg.loss == "role":
            if self.estimates is None:
                raise RunError("method(spml).loss role: the label estimates were never created "
                               "(the engine calls trainable() before training)")
            rows = batch["index"].to(self.estimates.device)
            estimates = self.estimates[rows].to(logits.device)
            return {"role": role_loss(logits, estimates, positive, cfg.k)}
        if cfg.loss == "em" or self.store is None:
            return {"em": entropy_maximisation(logits, positive, unknown, cfg.alpha,
                                               cfg.reduction)}
        pseudo, target = (t.to(logits.device) for t in self.store.lookup(batch["index"]))
        pseudo = pseudo & unknown
        return {"em": entropy_maximisation(logits, positive, unknown & ~pseudo, cfg.alpha,
                                           cfg.reduction),
                "apl": cfg.beta * soft_negative_bce(logits, pseudo, target, cfg.reduction)}

    def on_epoch_end(self, runner: StageRunner) -> None:
        """APL: score the training set and mark this epoch's pseudo-negatives (all ranks hold
        the same gathered scores, so every rank's store stays identical)."""
        if self.cfg.loss != "em_apl":
            return
        train = runner.data.train
        if self.store is None:
            self.store = PseudoLabelStore.empty(len(train), train.num_classes)
        scores = runner.predict(train)
        apl_update(self.store, scores, train.labels.unknown, self.cfg.theta, runner.epochs,
                   self.cfg.warmup, runner.epoch)
        if runner.engine.is_main:
            self.store.save(runner.engine.folder.stage_dir(runner.stage.name) /
                            "label_store.npz")

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {}
        if self.store is not None:
            state["store"] = self.store.state_dict()
        if self.estimates is not None:
            state["estimates"] = self.estimates.detach().cpu().clone()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "estimates" in state and self.estimates is not None:
            with torch.no_grad():  # in place: the optimizer holds this very parameter
                self.estimates.copy_(state["estimates"])
        if "store" in state:
            self.store = PseudoLabelStore.empty(0, 0)
            self.store.load_state_dict(state["store"])


def spml_stages(cfg: SpmlConfig, run: RunConfig) -> list[Stage]:
    """One stage trained with the configured SPML loss (best epoch on validation if
    ``select``)."""
    return [Stage("train", SpmlTask(cfg), keep_best=cfg.select, test_best=cfg.select is not None,
                  val_labels=SELECT_LABELS[cfg.select_labels], patience=cfg.patience)]
