"""The conv-BN(-ReLU) unit every backbone is built from."""

from __future__ import annotations

from torch import nn


def conv_bn(in_channels: int, out_channels: int, kernel: int = 3, stride: int = 1, *,
            relu: bool = True) -> nn.Sequential:
    """``Conv2d(kernel, stride, padding=kernel//2, no bias) -> BatchNorm2d [-> ReLU]``."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(out_channels),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)

