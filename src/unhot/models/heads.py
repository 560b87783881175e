"""The classifier around a backbone: global average pooling, a linear classification head and
the optional calibration head of uncertainty distillation (docs/uncertainty_distillation.md)."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn


class ModelOutput(NamedTuple):
    """What every classifier returns.

    ``logits`` [B, C] classification head (pre-sigmoid/softmax); ``calibration`` [B, C]
    calibration-head logits or None; ``feature_map`` [B, F, h, w] the last conv map, the very
    tensor ``pooled`` is computed from (Grad-CAM differentiates through it); ``pooled`` [B, F].
    """

    logits: Tensor
    calibration: Tensor | None
    feature_map: Tensor
    pooled: Tensor


def calibration_head(feature_dim: int, num_classes: int) -> nn.Sequential:
    """UD's calibration branch: ``Linear(F, F) -> BatchNorm1d(F) -> ReLU -> Linear(F, C)``."""
    return nn.Sequential(nn.Linear(feature_dim, feature_dim), nn.BatchNorm1d(feature_dim),
                         nn.ReLU(inplace=True), nn.Linear(feature_dim, num_classes))


class Classifier(nn.Module):
    """``backbone -> feature map -> global average pool -> head`` (+ calibration head).

    ``preferred_memory_format`` is the layout that trains fastest on CPU for this backbone;
    the caller moves model and inputs to it (``model.to(memory_format=...)``).
    ``cam_boost`` alpha > 1 is BoostLU (Kim et al., CVPR 2023, BridgeGapExplanationPAMC
    models.py:33-45): the head is applied at every location (the class activation map
    ``M = W f + b``), positive activations are scaled, ``M' = alpha M`` where ``M > 0``, and
    ``logits = mean_hw M'``; in training and evaluation. With alpha 1 this equals the head on
    the pooled features.

    ``input_norm`` (mean, std) per channel: the normalisation pretrained weights expect, e.g.
    ImageNet's; inputs arrive in [-1, 1] (``x / 127.5 - 1``, :func:`unhot.augment.to_float`) and
    become ``(x01 - mean) / std`` with ``x01 = (x + 1) / 2``, so every model (a teacher too)
    sees its own normalisation in train, eval, relabel and features. None: inputs as given.
    """

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int, *,
                 with_calibration: bool = False,
                 preferred_memory_format: torch.memory_format = torch.contiguous_format,
                 cam_boost: float = 1.0,
                 input_norm: tuple[tuple[float, ...], tuple[float, ...]] | None = None) -> None:
        super().__init__()
        self.input_norm = input_norm
        if input_norm is not None:
            mean, std = (torch.tensor(v, dtype=torch.float32)[None, :, None, None]
                         for v in input_norm)
            # x01 = (x + 1) / 2, (x01 - mean) / std = x * scale + shift
            self.register_buffer("input_scale", 0.5 / std, persistent=False)
            self.register_buffer("input_shift", (0.5 - mean) / std, persistent=False)
        self.backbone = backbone
        self.feature_dim = feature_dim
        self.head = nn.Linear(feature_dim, num_classes)
        self.calibration_head: nn.Module | None = (
            calibration_head(feature_dim, num_classes) if with_calibration else None)
        self.preferred_memory_format = preferred_memory_format
        self.cam_boost = cam_boost
        self.register_state_dict_post_hook(_pack_contiguous)

    def forward(self, x: Tensor) -> ModelOutput:
        if self.input_norm is not None:
            x = x * self.input_scale + self.input_shift
        feature_map = self.backbone(x)
        pooled = feature_map.mean(dim=(2, 3))
        calibration = None if self.calibration_head is None else self.calibration_head(pooled)
        logits = self.head(pooled) if self.cam_boost == 1 else self._boosted_logits(feature_map)
        return ModelOutput(logits, calibration, feature_map, pooled)

    def _boosted_logits(self, feature_map: Tensor) -> Tensor:
        cam = torch.einsum("bfhw,cf->bchw", feature_map, self.head.weight)
        cam = cam + self.head.bias[None, :, None, None]
        return torch.where(cam > 0, self.cam_boost * cam, cam).mean(dim=(2, 3))


def _pack_contiguous(module: nn.Module, state: dict[str, Any], prefix: str,
                     local_metadata: dict[str, Any]) -> None:
    """Store channels_last conv weights as contiguous copies: safetensors refuses strided
    tensors, and a model in its preferred memory format must still save."""
    for key, value in state.items():
        if key.startswith(prefix) and not value.is_contiguous():
            state[key] = value.detach().contiguous()


def head_parameters(model: Classifier) -> list[nn.Parameter]:
    """Parameters of the classification head and, if present, the calibration head (everything
    that is not the backbone: what a linear probe on frozen features trains)."""
    heads = [model.head] if model.calibration_head is None else [model.head,
                                                                   model.calibration_head]
    return [p for head in heads for p in head.parameters()]
