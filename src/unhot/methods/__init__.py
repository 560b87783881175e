"""Method registry: ``method: {name: X, ...knobs}`` -> (knob dataclass, stage builder).

Adding a method = one module with a config dataclass and ``stages(cfg, run) -> list[Stage]``,
plus one line in :mod:`unhot.registry` (``"name": "module:ConfigClass:stage_builder"``).
"""

from unhot.methods.base import EpochEnd, Stage, StepContext, TrainingTask
from unhot.registry import METHODS

__all__ = ["METHODS", "EpochEnd", "Stage", "StepContext", "TrainingTask"]
