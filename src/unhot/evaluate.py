"""Evaluate a finished run's model without retraining (``unhot eval``)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from accelerate import Accelerator

from unhot.config import RunConfig
from unhot.data import build_data
from unhot.engine import Engine, make_accelerator, predict
from unhot.finished import load_run, open_run, run_config
from unhot.metrics import compute_metrics
from unhot.weights import load_weights


def inference_accelerator(cfg: RunConfig) -> Accelerator:
    """:func:`make_accelerator` for scoring: a run trained with mixed precision on a GPU is
    scored in full precision where there is no CUDA device (or ``train.device`` is cpu)."""
    if cfg.train.device == "cpu" or not torch.cuda.is_available():
        cfg = replace(cfg, train=replace(cfg.train, mixed_precision="no"))
    return make_accelerator(cfg)


def evaluate_run(run: Path, data_file: str | None = None, overrides: list[str] | None = None,
                 stage_name: str | None = None) -> dict[str, float]:
    """Test metrics of a run's stage (default: the final one, see :mod:`unhot.finished`) on
    its data or on ``--data``."""
    opened = open_run(run, stage_name, data_file, overrides)
    cfg = opened.config
    data = build_data(cfg.data)
    engine = Engine(cfg, run, data=data, accelerator=inference_accelerator(cfg))
    stage = opened.method_stage
    model, _ = load_weights(opened.weights_path, engine.architecture(stage))
    model = model.to(engine.accelerator.device)
    scores = predict(engine.accelerator, model, data.test, stage.task.scores,
                     cfg.train.eval_batch_size, num_workers=cfg.train.num_workers)
    test = data.test
    target = test.target if (test.target >= 0).any() else None
    return compute_metrics(scores, test.true, target, cfg.train.threshold, test.difficult_or_none,
                           stage.task.output)


__all__ = ["evaluate_run", "inference_accelerator", "load_run", "run_config"]
