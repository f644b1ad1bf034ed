"""Pre-activation Wide-ResNets (Zagoruyko & Komodakis 2016) as used by ZSKT and CMI on CIFAR.

Module names (``conv1``, ``block1.layer.0.bn1``, ``convShortcut``, ``bn1``, ``fc``) match the
reference benchmark so its published teachers load unchanged.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from dfkd.models.base import FeatureClassifier


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-dropout-conv3x3, with a 1x1 shortcut when the width changes.

    As in the reference, a block that changes width feeds its shortcut the pre-activated input,
    while a block that keeps it adds the raw input.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.equal_in_out = in_planes == out_planes
        self.convShortcut = (  # noqa: N815 - the reference checkpoints' key name
            None
            if self.equal_in_out
            else nn.Conv2d(in_planes, out_planes, 1, stride=stride, padding=0, bias=False)
        )

    def forward(self, x: Tensor) -> Tensor:
        activated = self.relu1(self.bn1(x))
        out = self.conv2(self.dropout(self.relu2(self.bn2(self.conv1(activated)))))
        shortcut = x if self.convShortcut is None else self.convShortcut(activated)
        return shortcut + out


class BlockGroup(nn.Module):
    """``n`` blocks at one width; only the first one strides (the reference's NetworkBlock)."""

    def __init__(self, n: int, in_planes: int, out_planes: int, stride: int, dropout: float):
        super().__init__()
        rest = (PreActBlock(out_planes, out_planes, 1, dropout) for _ in range(n - 1))
        self.layer = nn.Sequential(PreActBlock(in_planes, out_planes, stride, dropout), *rest)

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


class WideResNet(FeatureClassifier, nn.Module):
    """WRN-depth-k: a 3x3 stem, three groups of widths 16k/32k/64k, BN-ReLU, pool, linear."""

    def __init__(
        self,
        depth: int,
        widen_factor: int,
        num_classes: int = 10,
        in_channels: int = 3,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"Wide-ResNet depth must be 6n+4, got {depth}.")
        self.num_classes, self.in_channels, self.input_size = num_classes, in_channels, 32
        n = (depth - 4) // 6
        widths = (16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.block1 = BlockGroup(n, widths[0], widths[1], 1, dropout)
        self.block2 = BlockGroup(n, widths[1], widths[2], 2, dropout)
        self.block3 = BlockGroup(n, widths[2], widths[3], 2, dropout)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[3], num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
                nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def logits_and_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        features = self.pool(self.relu(self.bn1(x))).flatten(1)
        return self.fc(features), features


def wrn16_1(num_classes: int = 10, in_channels: int = 3) -> WideResNet:
    """WRN-16-1 (0.2 M parameters), the usual CIFAR student."""
    return WideResNet(16, 1, num_classes, in_channels)


def wrn16_2(num_classes: int = 10, in_channels: int = 3) -> WideResNet:
    """WRN-16-2 (0.7 M parameters)."""
    return WideResNet(16, 2, num_classes, in_channels)


def wrn40_1(num_classes: int = 10, in_channels: int = 3) -> WideResNet:
    """WRN-40-1 (0.6 M parameters)."""
    return WideResNet(40, 1, num_classes, in_channels)


def wrn40_2(num_classes: int = 10, in_channels: int = 3) -> WideResNet:
    """WRN-40-2 (2.2 M parameters), the usual CIFAR teacher."""
    return WideResNet(40, 2, num_classes, in_channels)
