"""Evaluate a finished run's model without retraining (``unhot eval``)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from unhot.config import ConfigError, RunConfig, apply_overrides, parse_config
from unhot.data import build_data
from unhot.engine import Engine, make_accelerator, predict
from unhot.metrics import compute_metrics
from unhot.runs import RunError, RunFolder, read_yaml
from unhot.weights import load_weights


def run_config(run: Path) -> dict[str, Any]:
    """The resolved config stored in a run folder."""
    folder = RunFolder(run)
    if not folder.config_path.exists():
        raise RunError(f"{run} is not an unhot run folder (no config.yaml)")
    return read_yaml(folder.config_path)


def inference_accelerator(cfg: RunConfig) -> Accelerator:
    """:func:`make_accelerator` for scoring: a run trained with mixed precision on a GPU is
    scored in full precision where there is no CUDA device (or ``train.device`` is cpu)."""
    if cfg.train.device == "cpu" or not torch.cuda.is_available():
        cfg = replace(cfg, train=replace(cfg.train, mixed_precision="no"))
    return make_accelerator(cfg)


def load_run(run: Path, data_file: str | None = None,
             overrides: list[str] | None = None) -> RunConfig:
    """A run's config, with its data block optionally replaced (``--data``) or overridden."""
    raw = run_config(run)
    if data_file is not None:
        path = Path(data_file)
        if not path.is_file():
            raise ConfigError(f"--data: file not found: {path}")
        block = read_yaml(path)
        raw["data"] = block.get("data", block) if isinstance(block, dict) else block
    return parse_config(apply_overrides(raw, overrides or []))


def evaluate_run(run: Path, data_file: str | None = None, overrides: list[str] | None = None,
                 stage_name: str | None = None) -> dict[str, float]:
    """Test metrics of a run's stage (default: the last) on its data or on ``--data``."""
    cfg = load_run(run, data_file, overrides)
    data = build_data(cfg.data)
    engine = Engine(cfg, run, data=data, accelerator=inference_accelerator(cfg))
    stages = {s.name: s for s in engine.stages}
    if stage_name and stage_name not in stages:
        raise RunError(f"no stage '{stage_name}' in {run}; stages: {', '.join(stages)}")
    stage = stages[stage_name] if stage_name else engine.stages[-1]
    model, _ = load_weights(RunFolder(run).weights_path(stage.name), engine.architecture(stage))
    model = model.to(engine.accelerator.device)
    scores = predict(engine.accelerator, model, data.test, stage.task.scores,
                     cfg.train.eval_batch_size, num_workers=cfg.train.num_workers)
    test = data.test
    target = test.target if (test.target >= 0).any() else None
    return compute_metrics(scores, test.true, target, cfg.train.threshold, test.difficult_or_none,
                           stage.task.output)
