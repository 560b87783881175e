"""The backbone registry and :func:`build_model`."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from unhot.errors import ModelConfigError
from unhot.models import resnet, small_cnn
from unhot.models.heads import Classifier
from unhot.models.layers import FeatureInput, feature_mlp


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone: ``build(in_channels, width, input_size)`` returns a module
    with an ``out_channels`` attribute whose forward gives the last feature map [B, F, h, w].
    ``memory_format`` is the layout measured fastest for a CPU training step."""

    build: Callable[[int, int, int | None], nn.Module]
    default_width: int
    memory_format: torch.memory_format


# CPU layouts. channels_last trains small_cnn 1.1-1.3x faster (batch 128, 2 threads). It sped
# up the ResNets too, but torch 2.13's CPU channels_last convolution backward corrupts memory
# (double free, hang) on some AMD EPYC hosts for small ResNets, e.g. resnet18 width 4 on 32x32,
# so they stay contiguous on CPU; on CUDA the engine uses channels_last for every backbone.
BACKBONES: dict[str, BackboneSpec] = {
    "small_cnn": BackboneSpec(lambda c, w, _size: small_cnn.SmallCNN(c, w),
                              small_cnn.DEFAULT_WIDTH, torch.channels_last),
    "resnet18": BackboneSpec(resnet.resnet_factory(resnet.BasicBlock, (2, 2, 2, 2)),
                             resnet.DEFAULT_WIDTH, torch.contiguous_format),
    "resnet34": BackboneSpec(resnet.resnet_factory(resnet.BasicBlock, (3, 4, 6, 3)),
                             resnet.DEFAULT_WIDTH, torch.contiguous_format),
    "resnet50": BackboneSpec(resnet.resnet_factory(resnet.Bottleneck, (3, 4, 6, 3)),
                             resnet.DEFAULT_WIDTH, torch.contiguous_format),
    "resnet101": BackboneSpec(resnet.resnet_factory(resnet.Bottleneck, (3, 4, 23, 3)),
                              resnet.DEFAULT_WIDTH, torch.contiguous_format),
    # On precomputed features ([N, D, 1, 1], e.g. data: cole_features): a linear probe or an MLP.
    "linear": BackboneSpec(lambda c, _w, _size: FeatureInput(c), 0, torch.contiguous_format),
    "mlp": BackboneSpec(lambda c, w, _size: feature_mlp(c, w), 512, torch.contiguous_format),
}


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ModelConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


def build_model(backbone: str, in_channels: int, num_classes: int, *, width: int = 0,
                calibration_head: bool = False, head_bias: float | None = None,
                input_size: int | None = None, cam_boost: float = 1.0,
                input_norm: tuple[tuple[float, ...], tuple[float, ...]] | None = None
                ) -> Classifier:
    """A freshly initialised :class:`Classifier` (ResNets: Kaiming init; small_cnn: PyTorch's).

    ``width`` 0 = the backbone's default base width; ``input_size`` (pixels a side) picks the
    ResNet stem (CIFAR style below 64, else ImageNet; None = ImageNet) and is ignored by
    ``small_cnn``. ``head_bias`` fills the classification head's bias, e.g. ``-log(C)`` so the
    initial sigmoid is about 1/C (MILe code's ``adjust_bias``). ``cam_boost``: BoostLU's alpha
    (:class:`Classifier`); ``input_norm`` the (mean, std) per input channel pretrained weights
    expect (:class:`Classifier`). Draws from torch's global RNG.
    """
    if backbone not in BACKBONES:
        raise ModelConfigError(f"unknown backbone {backbone!r}; valid: {', '.join(BACKBONES)}")
    _check_int("in_channels", in_channels, 1)
    _check_int("num_classes", num_classes, 1)
    _check_int("width", width, 0)
    if input_size is not None:
        _check_int("input_size", input_size, 1)
    if head_bias is not None and not math.isfinite(head_bias):
        raise ModelConfigError(f"head_bias must be finite, got {head_bias!r}")
    if not cam_boost >= 1:
        raise ModelConfigError(f"cam_boost must be >= 1, got {cam_boost!r}")
    spec = BACKBONES[backbone]
    net = spec.build(in_channels, width or spec.default_width, input_size)
    if input_norm is not None and (len(input_norm[0]) != in_channels
                                   or len(input_norm[1]) != in_channels or min(input_norm[1]) <= 0):
        raise ModelConfigError(f"input_norm needs {in_channels} means and {in_channels} "
                               f"positive stds, got {input_norm!r}")
    model = Classifier(net, net.out_channels, num_classes, with_calibration=calibration_head,
                       preferred_memory_format=spec.memory_format, cam_boost=cam_boost,
                       input_norm=input_norm)
    if head_bias is not None:
        nn.init.constant_(model.head.bias, head_bias)
    return model
