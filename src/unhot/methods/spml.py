"""Single-positive multi-label learning (docs/spml.md): Cole et al.'s baselines,
the EM loss and EM + asymmetric pseudo-labelling (Zhou et al., ECCV 2022), the large-loss
methods (Kim et al., CVPR 2022) with BoostLU (Kim et al., CVPR 2023) and the GR loss (Chen et
al., IJCAI 2024), on one stage.

``loss`` (the table :data:`LOSS_TERMS`): ``bce_full`` (oracle, full labels), ``an`` (assume
negative), ``an_ls`` (AN with label smoothing), ``wan`` (weighted AN), ``epr`` (expected
positive regulariser), ``em`` (entropy maximisation), ``role`` (Cole et al.'s regularised
online label estimation: a learned label estimate per training entry, one process only),
``em_apl`` (EM + ``beta`` x BCE on APL's soft pseudo-negatives, refreshed from a label store at
the end of every epoch after ``warmup``), ``ll_r`` / ``ll_ct`` / ``ll_cp`` (AN with the batch's
largest losses on unknown entries rejected / corrected / corrected for good, a share growing by
``delta_rel`` an epoch), ``gr`` (generalized robust loss with scheduled soft pseudo-labels).
``boost_lu`` > 1 composes any of them with BoostLU (positive class activations scaled before
pooling, in training and evaluation).

Example (Zhou et al.'s VOC settings: alpha 0.2, theta 0.9, warmup 5, beta 0.02)::

    method: {name: spml, loss: em_apl, alpha: 0.2, beta: 0.02, theta: 0.9, warmup: 5}
    data: {name: digit_grid, label_regime: single_positive}

LL-R + BoostLU (Kim et al. 2023's defaults)::

    method: {name: spml, loss: ll_r, delta_rel: 0.005, boost_lu: 5, select: mAP,
             stop_drop: 0.03}
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from unhot.config import ConfigError, RunConfig, choice
from unhot.label_store import PseudoLabelStore, apl_update
from unhot.labels import COLE_SEED
from unhot.losses import (
    an_label_smoothing,
    entropy_maximisation,
    expected_positive_regulariser,
    gr_loss,
    gr_schedule,
    large_loss,
    large_loss_mask,
    masked_bce,
    role_initial_estimates,
    role_loss,
    soft_negative_bce,
    weighted_an,
)
from unhot.methods.base import HEAD_INITS, EpochEnd, Stage, StepContext, TrainingTask
from unhot.row_adam import RowwiseAdam
from unhot.runs import RunError

if TYPE_CHECKING:
    from unhot.data.base import Split

SELECT_LABELS = {"clean": "true", "single_positive": "observed"}
"""``select_labels`` values and the :class:`~unhot.methods.base.Stage` ``val_labels`` they mean."""

DELTA_REL = {"ll_r": 0.005, "ll_ct": 0.002, "ll_cp": 0.001}
"""Kim et al.'s rates as fractions (their follow-up code's table, BridgeGapExplanationPAMC
config.py; the LargeLossMatters CLI takes percent: 0.5, 0.2, 0.1)."""


@dataclass
class SpmlConfig:
    """``method: {name: spml, loss, alpha, beta, theta, warmup, k, ls_coef, reduction,
    delta_rel, gr_beta, gr_alpha, gr_q, boost_lu, select, select_labels, patience, stop_drop,
    role_lr_mult, head_init}``.

    Defaults follow each loss's authors' code (docs/spml.md, fidelity tables): PyTorch's
    default head init (``head_init: minus_log_c`` is MILe's ``-log C``), AN-LS targets
    ``1 - ls_coef`` / ``ls_coef``, APL's first pseudo-negatives at the end of epoch ``warmup``.

    ``delta_rel``: the large-loss share's growth per epoch (LL-R, LL-Ct; LL-Cp's constant
    share), as a fraction; None = :data:`DELTA_REL`. ``gr_beta = (w_0, w_T, b_0, b_T)``,
    ``gr_alpha = (mu_0, sigma_0, mu_T, sigma_T)``, ``gr_q = (q2, q3)``: the GR loss's
    schedules (GRLoss config.py:100-102). ``boost_lu``: BoostLU's alpha (Kim et al. 2023: 5);
    1 = no boosting.
    ``select``: a metric (e.g. ``mAP``) to pick the best epoch on ``train.eval_split`` (set it to
    ``val``), whose weights are then tested (Cole et al.'s model selection); None = last epoch.
    ``select_labels``: ``clean`` (the validation images' full label sets, Cole et al.'s
    default) or ``single_positive`` (only their observed single positives).
    ``role_lr_mult``: ROLE's label estimates learn at this multiple of the learning rate (Cole
    et al.'s code: 10), always with Adam (``optim.betas``, no weight decay: Cole et al.'s
    optimiser) whatever ``optim.name`` trains the model.
    ``patience``: with ``select``, stop when the metric has not improved for this many epochs
    (Zhou et al.'s code: 1, the first epoch without a gain); ``stop_drop``: with ``select``,
    stop when it falls more than this below its best (Kim et al.'s code: 0.03 mAP, GR's 0.02);
    None for both trains every epoch and tests the best (Cole et al.'s code).
    """

    loss: str = "em_apl"
    alpha: float = 0.1
    beta: float = 0.9
    theta: float = 0.9
    warmup: int = 2
    k: float = 1.0
    ls_coef: float = 0.1
    reduction: str = choice("sum_over_bc", ("sum_over_bc", "mean_observed"))
    delta_rel: float | None = None
    gr_beta: tuple[float, float, float, float] = (0.0, 2.0, -2.0, -2.0)
    gr_alpha: tuple[float, float, float, float] = (0.5, 2.0, 0.8, 0.5)
    gr_q: tuple[float, float] = (0.01, 1.0)
    boost_lu: float = 1.0
    select: str | None = None
    select_labels: str = choice("clean", tuple(SELECT_LABELS))
    patience: int | None = None
    stop_drop: float | None = None
    role_lr_mult: float = 10.0
    head_init: str = choice("default", HEAD_INITS)

    def __post_init__(self) -> None:
        if self.loss not in LOSS_TERMS:
            raise ConfigError(f"unknown method(spml).loss '{self.loss}'; valid: "
                              f"{', '.join(LOSS_TERMS)}")
        checks = [("theta", 0 <= self.theta <= 1, "in [0, 1]"),
                  ("ls_coef", 0 <= self.ls_coef < 0.5, "in [0, 0.5)"),
                  ("delta_rel", self.delta_rel is None or 0 <= self.delta_rel <= 1,
                   "in [0, 1] (a fraction: 0.005 is Kim et al.'s 0.5 %)"),
                  ("gr_alpha", min(self.gr_alpha[1], self.gr_alpha[3]) > 0,
                   "(mu_0, sigma_0, mu_T, sigma_T) with sigmas > 0"),
                  ("gr_q", min(self.gr_q) > 0, "(q2, q3), both > 0"),
                  ("boost_lu", self.boost_lu >= 1, ">= 1 (1 = no boosting)"),
                  ("stop_drop", self.stop_drop is None or (self.stop_drop >= 0 and
                                                           self.select is not None),
                   ">= 0 and needs method.select")]
        for name, ok, want in checks:
            if not ok:
                raise ConfigError(f"method(spml).{name} must be {want}, got "
                                  f"{getattr(self, name)}")
        if self.patience is not None and (self.patience < 1 or self.select is None):
            raise ConfigError(f"method(spml).patience must be >= 1 and needs method.select, "
                              f"got patience {self.patience}, select {self.select}")

    @property
    def large_loss_rate(self) -> float:
        return self.delta_rel if self.delta_rel is not None else DELTA_REL.get(self.loss, 0.0)


class SpmlTask(TrainingTask):
    """One of the SPML losses on the observed single positives, with its per-sample state
    (APL's store, ROLE's estimates, LL-Cp's corrections)."""

    def __init__(self, cfg: SpmlConfig, betas: tuple[float, float] = (0.9, 0.999),
                 epochs: int = 1) -> None:
        self.cfg = cfg
        self.betas = betas
        self.epochs = epochs
        self.corrected: np.ndarray | None = None
        self.head_init = cfg.head_init
        self.store: PseudoLabelStore | None = None
        self.estimates: RowwiseAdam | None = None
        self._batch_estimates: tuple[Tensor, Tensor] | None = None

    @property
    def batch_fields(self) -> tuple[str, ...]:  # type: ignore[override]
        """The oracle reads the full label sets; every other loss the observed labels."""
        return ("true",) if self.cfg.loss == "bce_full" else ("positive", "negative")

    @property
    def single_process(self) -> bool:  # type: ignore[override]
        """ROLE's estimates and LL-Cp's corrections are per-sample state each process would
        update for its own batches only."""
        return self.cfg.loss in ("role", "ll_cp")

    def setup(self, train: Split) -> None:
        """LL-Cp's corrections (none yet) and ROLE's label estimates: one logit per (training
        sample, class), trained by Adam at ``role_lr_mult`` times the model's learning rate
        (Cole et al.'s ``lr_mult``), only the batch's rows per step
        (:class:`~unhot.row_adam.RowwiseAdam`)."""
        if self.cfg.loss == "ll_cp":
            self.corrected = np.zeros(train.labels.positive.shape, dtype=bool)
        if self.cfg.loss != "role":
            return
        generator = torch.Generator().manual_seed(COLE_SEED)
        positive = torch.from_numpy(train.labels.positive)
        self.estimates = RowwiseAdam(role_initial_estimates(positive, generator), self.betas)

    def after_step(self, lr: float) -> None:
        if self._batch_estimates is not None and self.estimates is not None:
            rows, leaf = self._batch_estimates
            if leaf.grad is not None:
                self.estimates.step(rows, leaf.grad.cpu(), lr * self.cfg.role_lr_mult)
            self._batch_estimates = None

    def losses(self, ctx: StepContext) -> dict[str, Tensor]:
        return LOSS_TERMS[self.cfg.loss](self, ctx)

    def _role(self, ctx: StepContext) -> dict[str, Tensor]:
        if self.estimates is None:
            raise RunError("method(spml).loss role: the label estimates were never created "
                           "(the engine calls setup() before training)")
        rows = ctx.batch["index"].cpu()
        leaf = self.estimates.gather(rows)
        self._batch_estimates = rows, leaf
        logits = ctx.student_output().logits
        return {"role": role_loss(logits, leaf.to(logits.device), ctx.batch["positive"],
                                  self.cfg.k)}

    def _em(self, ctx: StepContext) -> dict[str, Tensor]:
        cfg, logits, batch = self.cfg, ctx.student_output().logits, ctx.batch
        positive = batch["positive"]
        unknown = ~(positive | batch["negative"])
        if self.store is None:
            return {"em": entropy_maximisation(logits, positive, unknown, cfg.alpha,
                                               cfg.reduction)}
        pseudo, target = (t.to(logits.device) for t in self.store.lookup(batch["index"]))
        pseudo = pseudo & unknown
        return {"em": entropy_maximisation(logits, positive, unknown & ~pseudo, cfg.alpha,
                                           cfg.reduction),
                "apl": cfg.beta * soft_negative_bce(logits, pseudo, target, cfg.reduction)}

    def _large_loss(self, ctx: StepContext) -> dict[str, Tensor]:
        """LL-R / LL-Ct / LL-Cp: the share of modified entries is ``epochs done x
        delta_rel`` (LL-R, LL-Ct: none in the first epoch) or ``delta_rel`` from the second
        epoch on (LL-Cp); LL-Cp's corrections become observed positives for good."""
        cfg, logits, batch = self.cfg, ctx.student_output().logits, ctx.batch
        positive = batch["positive"]
        if self.corrected is not None:
            positive = positive | torch.from_numpy(
                self.corrected[batch["index"].cpu().numpy()]).to(positive.device)
        unknown = ~(positive | batch["negative"])
        rate = cfg.large_loss_rate * (min(ctx.epoch, 1) if cfg.loss == "ll_cp" else ctx.epoch)
        modified = large_loss_mask(logits, positive, unknown, rate)
        if self.corrected is not None and modified.any():
            rows, cols = modified.nonzero(as_tuple=True)
            self.corrected[batch["index"].cpu().numpy()[rows.cpu().numpy()],
                           cols.cpu().numpy()] = True
        return {cfg.loss: large_loss(logits, positive, modified, correct=cfg.loss != "ll_r")}

    def _gr(self, ctx: StepContext) -> dict[str, Tensor]:
        cfg, logits, batch = self.cfg, ctx.student_output().logits, ctx.batch
        w, b, mu, sigma = gr_schedule(cfg.gr_beta, cfg.gr_alpha, ctx.epoch + 1, self.epochs)
        return {"gr": gr_loss(logits, batch["positive"], batch["negative"], w, b, mu, sigma,
                              *cfg.gr_q)}

    def on_epoch_end(self, end: EpochEnd) -> None:
        """APL: score the training set and mark this epoch's pseudo-negatives (all ranks hold
        the same gathered scores, so every rank's store stays identical)."""
        if self.cfg.loss != "em_apl":
            return
        train = end.train
        if self.store is None:
            self.store = PseudoLabelStore.empty(len(train), train.num_classes)
        scores = end.predict(train)
        apl_update(self.store, scores, train.labels, self.cfg.theta, end.epochs,
                   self.cfg.warmup, end.epochs_done)
        if end.is_main:
            self.store.save(end.stage_dir / "label_store.npz")

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {}
        if self.store is not None:
            state["store"] = self.store.state_dict()
        if self.estimates is not None:
            state["estimates"] = self.estimates.state_dict()
        if self.corrected is not None:
            state["corrected"] = torch.from_numpy(self.corrected)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "estimates" in state and self.estimates is not None:
            self.estimates.load_state_dict(state["estimates"])
        if "store" in state:
            self.store = PseudoLabelStore.empty(0, 0)
            self.store.load_state_dict(state["store"])
        if "corrected" in state:
            self.corrected = state["corrected"].numpy()


def spml_stages(cfg: SpmlConfig, run: RunConfig) -> list[Stage]:
    """One stage trained with the configured SPML loss (best epoch on validation if
    ``select``)."""
    return [Stage("train", SpmlTask(cfg, run.optim.betas, run.optim.epochs),
                  keep_best=cfg.select, test_best=cfg.select is not None,
                  val_labels=SELECT_LABELS[cfg.select_labels], patience=cfg.patience,
                  stop_drop=cfg.stop_drop, cam_boost=cfg.boost_lu)]


def _single(function: Callable[..., Tensor], *knobs: str, **fixed: float
            ) -> Callable[[SpmlTask, StepContext], dict[str, Tensor]]:
    """A loss term of the logits, the batch's positives, config ``knobs`` and ``fixed``
    arguments, reduced as configured."""
    def term(task: SpmlTask, ctx: StepContext) -> dict[str, Tensor]:
        values = [getattr(task.cfg, name) for name in knobs]
        return {task.cfg.loss: function(ctx.student_output().logits, ctx.batch["positive"],
                                        *values, reduction=task.cfg.reduction, **fixed)}
    return term


def _oracle(task: SpmlTask, ctx: StepContext) -> dict[str, Tensor]:
    true = ctx.batch["true"]
    return {"bce_full": masked_bce(ctx.student_output().logits, true, ~true, task.cfg.reduction)}


LOSS_TERMS: dict[str, Callable[[SpmlTask, StepContext], dict[str, Tensor]]] = {
    "bce_full": _oracle,
    "an": _single(an_label_smoothing, coef=0.0),
    "an_ls": _single(an_label_smoothing, "ls_coef"),
    "wan": _single(weighted_an),
    "epr": _single(expected_positive_regulariser, "k"),
    "role": SpmlTask._role,
    "em": SpmlTask._em,
    "em_apl": SpmlTask._em,
    "ll_r": SpmlTask._large_loss,
    "ll_ct": SpmlTask._large_loss,
    "ll_cp": SpmlTask._large_loss,
    "gr": SpmlTask._gr,
}
"""``loss`` name -> the function of (task, step) that returns its named loss terms."""
