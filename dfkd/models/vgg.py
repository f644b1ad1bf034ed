"""VGG with BatchNorm for CIFAR, as in RepDistiller and the reference benchmark.

Five convolution blocks (``block0``..``block4``), max-pools between them (``pool0``..``pool3``),
an adaptive average pool and one linear ``classifier``: the reference's names, so its published
teachers load unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from dfkd.models.base import FeatureClassifier

# Convolution widths per block, configuration "A" of Simonyan & Zisserman.
VGG11_BLOCKS = ((64,), (128,), (256, 256), (512, 512), (512, 512))


def _block(in_channels: int, widths: Sequence[int]) -> nn.Sequential:
    """conv3x3-BN(-ReLU) per width; the block's last ReLU is left to ``forward``, as in the
    reference, so a hook on the block's last module sees the pre-activation."""
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
        in_channels = width
    return nn.Sequential(*layers[:-1])


class VGG(FeatureClassifier, nn.Module):
    """Pools after blocks 0-2; ``pool3`` runs only on 64-pixel inputs (Tiny-ImageNet), as in the
    reference, so a 32-pixel CIFAR image reaches block 4 at 4x4."""

    def __init__(
        self, blocks: Sequence[Sequence[int]], num_classes: int = 10, in_channels: int = 3
    ) -> None:
        super().__init__()
        self.num_classes, self.in_channels, self.input_size = num_classes, in_channels, 32
        self.block0 = _block(in_channels, blocks[0])
        self.block1 = _block(blocks[0][-1], blocks[1])
        self.block2 = _block(blocks[1][-1], blocks[2])
        self.block3 = _block(blocks[2][-1], blocks[3])
        self.block4 = _block(blocks[3][-1], blocks[4])
        self.pool0 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool1 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool2 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool3 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool4 = nn.AdaptiveAvgPool2d(1)
        self.relu = nn.ReLU()
        self.classifier = nn.Linear(blocks[4][-1], num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
                nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.01)
                nn.init.zeros_(module.bias)

    def logits_and_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        height = x.shape[-2]
        x = self.pool0(self.relu(self.block0(x)))
        x = self.pool1(self.relu(self.block1(x)))
        x = self.pool2(self.relu(self.block2(x)))
        x = self.relu(self.block3(x))
        if height == 64:
            x = self.pool3(x)
        features = self.pool4(self.relu(self.block4(x))).flatten(1)
        return self.classifier(features), features


def vgg11(num_classes: int = 10, in_channels: int = 3) -> VGG:
    """VGG-11 with BatchNorm (configuration A), a CIFAR teacher of the reference benchmark."""
    return VGG(VGG11_BLOCKS, num_classes, in_channels)
