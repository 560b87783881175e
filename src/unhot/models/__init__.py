"""Image classifiers in plain torch: a small CNN and the ResNet family, with a linear head and
uncertainty distillation's optional calibration head. Build them with :func:`build_model`."""

from unhot.models.build import BACKBONES, BackboneSpec, ModelConfigError, build_model
from unhot.models.heads import Classifier, ModelOutput, head_parameters

__all__ = [
    "BACKBONES",
    "BackboneSpec",
    "Classifier",
    "ModelConfigError",
    "ModelOutput",
    "build_model",
    "head_parameters",
]
