"""Method registry: ``method: {name: X, ...knobs}`` -> (knob dataclass, stage builder).

Adding a method = one module with a config dataclass and ``stages(cfg, run) -> list[Stage]``,
plus one line here (``"name": "module:ConfigClass:stage_builder"``).
"""

from unhot.config import Registry
from unhot.methods.base import EpochEnd, Stage, StepContext, TrainingTask

METHODS = Registry({
    "softmax": "unhot.methods.baselines:SoftmaxConfig:softmax_stages",
    "sigmoid": "unhot.methods.baselines:SigmoidConfig:sigmoid_stages",
    "bce": "unhot.methods.baselines:BceConfig:bce_stages",
    "bce_full": "unhot.methods.baselines:BceFullConfig:bce_full_stages",
    "mile": "unhot.methods.mile:MileConfig:mile_stages",
    "refinery": "unhot.methods.refinery:RefineryConfig:refinery_stages",
    "spml": "unhot.methods.spml:SpmlConfig:spml_stages",
    "bce_cal": "unhot.methods.ud:CalibratedBceConfig:calibrated_bce_stages",
    "kd": "unhot.methods.ud:KdConfig:kd_stages",
    "ud": "unhot.methods.ud:UdConfig:ud_stages",
})

__all__ = ["METHODS", "EpochEnd", "Stage", "StepContext", "TrainingTask"]
