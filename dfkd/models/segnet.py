"""Small segmentation networks for the Fashion-MNIST-scenes benchmark (64x64 grey canvases,
11 classes), cheap enough to train teacher and student on two CPU cores in minutes.

Not Badrinarayanan et al.'s SegNet: a DeepLab-flavoured encoder with an LR-ASPP-like decoder.

- Encoder. A 3x3 stride-2 stem and a 3x3 convolution at 1/2 resolution (width ``c1``), then a 3x3
  stride-2 convolution, a 3x3 convolution and two 3x3 convolutions dilated by 2 and 4 at 1/4
  resolution (width ``c2``): the dilations widen the receptive field to the whole 64-pixel canvas
  without a third downsampling, as DeepLab's atrous convolutions do (Chen et al. 2017). Every
  convolution is followed by BatchNorm and ReLU, so the BN-statistics methods have statistics to
  match.
- Decoder. A 1x1 classifier on the 1/4-resolution context, upsampled bilinearly to 1/2 resolution
  and added to a 1x1 classifier on the 1/2-resolution features (the skip recovers the item
  outlines the context blurs, as in LR-ASPP, Howard et al. 2019), then upsampled to the input size.

There is no full-resolution convolution: at batch 64 a training step (forward and backward) of the
teacher takes about 0.4 s on one CPU thread, the student's about 0.15 s.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def _conv_bn_relu(c_in: int, c_out: int, stride: int = 1, dilation: int = 1) -> list[nn.Module]:
    conv = nn.Conv2d(c_in, c_out, 3, stride, padding=dilation, dilation=dilation, bias=False)
    return [conv, nn.BatchNorm2d(c_out), nn.ReLU()]


class SmallSegNet(nn.Module):
    """Encoder to 1/4 resolution with dilated context, classifiers at 1/4 and 1/2 resolution."""

    def __init__(self, num_classes: int, in_channels: int, widths: tuple[int, int]) -> None:
        super().__init__()
        self.num_classes, self.in_channels, self.input_size = num_classes, in_channels, None
        c1, c2 = widths
        self.stem = nn.Sequential(*_conv_bn_relu(in_channels, c1, stride=2), *_conv_bn_relu(c1, c1))
        self.context = nn.Sequential(
            *_conv_bn_relu(c1, c2, stride=2),
            *_conv_bn_relu(c2, c2),
            *_conv_bn_relu(c2, c2, dilation=2),
            *_conv_bn_relu(c2, c2, dilation=4),
        )
        self.skip_classifier = nn.Conv2d(c1, num_classes, 1)
        self.classifier = nn.Conv2d(c2, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        half = self.stem(x)
        context = self.classifier(self.context(half))
        up = F.interpolate(context, size=half.shape[-2:], mode="bilinear", align_corners=False)
        logits = self.skip_classifier(half) + up
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def segnet_small(num_classes: int = 11, in_channels: int = 3) -> SmallSegNet:
    """The Fashion-MNIST-scenes teacher: widths 32 and 104, 0.33 M parameters."""
    return SmallSegNet(num_classes, in_channels, (32, 104))


def segnet_small_half(num_classes: int = 11, in_channels: int = 3) -> SmallSegNet:
    """Its student, at half the widths (16 and 52): 0.08 M parameters."""
    return SmallSegNet(num_classes, in_channels, (16, 52))
