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



class FeatureInput(nn.Module):
    """Precomputed feature vectors, given as [B, D, 1, 1] "images", passed to the head as they
    are: the ``linear`` backbone, i.e. Cole et al.'s linear-on-frozen-features mode."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.out_channels = in_channels

    def forward(self, x):  # type: ignore[no-untyped-def]
        return x


def feature_mlp(in_channels: int, width: int) -> nn.Module:
    """One hidden layer (1x1 conv = linear, BN, ReLU) on [B, D, 1, 1] feature vectors."""
    mlp = conv_bn(in_channels, width, kernel=1)
    mlp.out_channels = width  # type: ignore[assignment]
    return mlp
