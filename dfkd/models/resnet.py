"""ResNet-18/34 with a CIFAR stem (3x3 stride-1 convolution, no max-pool), as in DAFL and DFAD.

Module names (``conv1``, ``bn1``, ``layer1``..``layer4``, ``shortcut``, ``linear``) match the
reference benchmark so its published teachers load unchanged.
"""

from __future__ import annotations

from torch import Tensor, nn

from dfkd.models.base import FeatureClassifier


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus a (1x1 conv, BN) projection when the shape changes."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(out + self.shortcut(x))


def _stage(in_planes: int, planes: int, count: int, stride: int) -> nn.Sequential:
    """``count`` blocks of one width; only the first one strides or projects."""
    rest = (BasicBlock(planes, planes, 1) for _ in range(count - 1))
    return nn.Sequential(BasicBlock(in_planes, planes, stride), *rest)


class CifarResNet(FeatureClassifier, nn.Module):
    """Four stages of 64/128/256/512 channels with strides 1/2/2/2, average pool, linear."""

    def __init__(
        self, blocks: tuple[int, int, int, int], num_classes: int = 10, in_channels: int = 3
    ) -> None:
        super().__init__()
        self.num_classes, self.in_channels, self.input_size = num_classes, in_channels, 32
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.layer1 = _stage(64, 64, blocks[0], stride=1)
        self.layer2 = _stage(64, 128, blocks[1], stride=2)
        self.layer3 = _stage(128, 256, blocks[2], stride=2)
        self.layer4 = _stage(256, 512, blocks[3], stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(512, num_classes)

    def logits_and_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        features = self.pool(x).flatten(1)
        return self.linear(features), features


def resnet18(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """ResNet-18 (BasicBlock 2-2-2-2), the DAFL/DFAD/CMI CIFAR student."""
    return CifarResNet((2, 2, 2, 2), num_classes, in_channels)


def resnet34(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """ResNet-34 (BasicBlock 3-4-6-3), the DAFL/DFAD/CMI CIFAR teacher."""
    return CifarResNet((3, 4, 6, 3), num_classes, in_channels)
