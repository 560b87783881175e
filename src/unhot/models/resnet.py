"""ResNet-18/34 (BasicBlock) and ResNet-50/101 (Bottleneck), He et al., CVPR 2016.

Standard layouts (stage depths 2-2-2-2, 3-4-6-3, 3-4-6-3, 3-4-23-3; stage widths w, 2w, 4w, 8w with
``w`` = 64 by default; the Bottleneck expands by 4 and strides on its 3x3 conv, "ResNet v1.5").
Two stems: ImageNet's 7x7/2 conv + 3x3/2 max-pool, or for small inputs (CIFAR style) a 3x3/1
conv without pooling, so a 28x28 image still has a 4x4 final map instead of 1x1.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from unhot.models.layers import conv_bn

DEFAULT_WIDTH = 64
SMALL_INPUT = 64
"""Inputs smaller than this many pixels a side get the CIFAR-style stem."""


class _Residual(nn.Module):
    """``relu(residual(x) + shortcut(x))``; the shortcut is a 1x1 conv-BN when shapes change."""

    expansion = 1

    def __init__(self, residual: nn.Sequential, in_planes: int, out_planes: int,
                 stride: int) -> None:
        super().__init__()
        self.residual = residual
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != out_planes:
            self.shortcut = conv_bn(in_planes, out_planes, kernel=1, stride=stride, relu=False)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.residual(x) + self.shortcut(x))


class BasicBlock(_Residual):
    """Two 3x3 convs; output has ``planes`` channels."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        residual = nn.Sequential(conv_bn(in_planes, planes, stride=stride),
                                 conv_bn(planes, planes, relu=False))
        super().__init__(residual, in_planes, planes, stride)


class Bottleneck(_Residual):
    """1x1 reduce, 3x3 (strided), 1x1 expand; output has ``4 * planes`` channels."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        out = planes * self.expansion
        residual = nn.Sequential(conv_bn(in_planes, planes, kernel=1),
                                 conv_bn(planes, planes, stride=stride),
                                 conv_bn(planes, out, kernel=1, relu=False))
        super().__init__(residual, in_planes, out, stride)


class ResNet(nn.Module):
    """Stem + four stages; ``forward`` returns the last feature map [B, 8w * expansion, h, w]."""

    def __init__(self, block: type[BasicBlock | Bottleneck], depths: tuple[int, ...],
                 in_channels: int, width: int = DEFAULT_WIDTH, small_input: bool = False) -> None:
        super().__init__()
        if small_input:
            self.stem = conv_bn(in_channels, width)
        else:
            self.stem = nn.Sequential(conv_bn(in_channels, width, kernel=7, stride=2),
                                      nn.MaxPool2d(3, stride=2, padding=1))
        stages: list[nn.Module] = []
        in_planes = width
        for i, depth in enumerate(depths):
            planes = width * 2**i
            blocks = []
            for j in range(depth):
                blocks.append(block(in_planes, planes, stride=2 if i > 0 and j == 0 else 1))
                in_planes = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.out_channels = in_planes
        self.apply(_kaiming_init)

    def forward(self, x: Tensor) -> Tensor:
        return self.stages(self.stem(x))


def _kaiming_init(module: nn.Module) -> None:
    """He et al. 2015 init, as torchvision's ResNet: conv weights ~ N(0, 2 / fan_out).

    BatchNorm keeps PyTorch's gamma = 1, beta = 0.
    """
    if isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")


def resnet_factory(block: type[BasicBlock | Bottleneck], depths: tuple[int, ...]
                   ) -> Callable[[int, int, int | None], ResNet]:
    """A ``(in_channels, width, input_size) -> ResNet`` builder for one depth.

    The small-input stem is used when ``input_size`` is given and below :data:`SMALL_INPUT`.
    """

    def build(in_channels: int, width: int, input_size: int | None) -> ResNet:
        small = input_size is not None and input_size < SMALL_INPUT
        return ResNet(block, depths, in_channels, width, small_input=small)

    return build
