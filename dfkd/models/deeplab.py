"""DeepLabV3 (Chen et al. 2017) as DFAD (Fang et al. 2019) distils it, and torchvision's
segmentation networks, each returning per-pixel logits (B, K, H, W) at the input's size.

DFAD's CamVid and NYUv2 pair is a DeepLabV3-ResNet-50 teacher and a DeepLabV3-MobileNetV2
student, both at output stride 8 without an auxiliary head. Their module names are torchvision's
(``backbone.*`` through an IntermediateLayerGetter, ``classifier.0.convs.*`` for the ASPP), so the
reference checkpoints load unchanged, but they differ from torchvision's models in ways that change
what a checkpoint computes:

- the ASPP's atrous rates are 12, 24 and 32 (the reference hard-codes them), not 12, 24 and 36;
- the student's MobileNetV2 is the one of jfzhang95/pytorch-deeplab-xception, not torchvision's:
  only its ``features`` (320 channels, no 1280-channel convolution), and each inverted-residual
  block zero-pads its input by its dilation before the block, so the expansion convolution sees the
  padding and every convolution inside pads nothing (``InvertedResidual``);
- past stride 8 a whole stage lags behind the stride it replaces: every 64-channel block has
  dilation 1, the 96- and 160-channel blocks 2 and the 320-channel block 4, where DeepLab's rule
  (and torchvision's dilated ResNet) lags only the first block of a stage, giving the other
  64-channel blocks 2 and the other 160-channel blocks 4.

Both use the ASPP's dropout of 0.5: the reference trains its teacher and its student with it.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import resnet50
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation import deeplabv3, lraspp

#: The ASPP rates of DFAD's DeepLabV3 (torchvision's default is 12, 24, 36).
DFAD_ATROUS_RATES = (12, 24, 32)

# MobileNetV2's stages at output stride 8 in the reference: expansion t, width c, blocks n, stride
# of the first block, dilation of every block.
MOBILENET_V2_STAGES = (
    (1, 16, 1, 1, 1),
    (6, 24, 2, 2, 1),
    (6, 32, 3, 2, 1),
    (6, 64, 4, 1, 1),
    (6, 96, 3, 1, 2),
    (6, 160, 3, 1, 2),
    (6, 320, 1, 1, 4),
)


class DeepLabV3(deeplabv3.DeepLabV3):
    """torchvision's DeepLabV3, returning the logits rather than ``{"out": logits}``; its
    parameter names stay torchvision's (its published checkpoints load once their
    ``aux_classifier`` keys are dropped, as no model here has that head)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x)["out"]


class LRASPP(lraspp.LRASPP):
    """torchvision's Lite R-ASPP network, returning the logits rather than ``{"out": logits}``."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x)["out"]


class InvertedResidual(nn.Module):
    """MobileNetV2's block (Sandler et al. 2018) as the reference writes it: [1x1 expand-BN-ReLU6]
    - 3x3 depthwise-BN-ReLU6 - 1x1 project-BN, with the whole block's input padded by the dilation
    first and no padding in any convolution. Padding before the expansion is not the same as
    padding the depthwise convolution: the padded zeros come out of the expansion's BN and ReLU6 as
    nonzero values. The residual adds the unpadded input."""

    def __init__(self, c_in: int, c_out: int, stride: int, dilation: int, expand: int) -> None:
        super().__init__()
        hidden = c_in * expand
        self.dilation = dilation
        self.use_res_connect = stride == 1 and c_in == c_out
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(c_in, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride, 0, dilation, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(),
            nn.Conv2d(hidden, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(F.pad(x, (self.dilation,) * 4))
        return x + out if self.use_res_connect else out


class MobileNetV2(nn.Module):
    """The reference's MobileNetV2 features at output stride 8: a 3x3 stride-2 stem (32 channels,
    BN, ReLU6) and the inverted-residual stages of ``MOBILENET_V2_STAGES``, ending at 320
    channels. Convolutions are He-initialised (fan_in) as in the reference."""

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        stem = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6()
        )
        blocks: list[nn.Module] = [stem]
        c_in = 32
        for expand, c_out, n, stride, dilation in MOBILENET_V2_STAGES:
            for i in range(n):
                blocks.append(
                    InvertedResidual(c_in, c_out, stride if i == 0 else 1, dilation, expand)
                )
                c_in = c_out
        self.features = nn.Sequential(*blocks)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)


def _described(model: nn.Module, num_classes: int, in_channels: int) -> nn.Module:
    model.num_classes, model.in_channels, model.input_size = num_classes, in_channels, None
    return model


def _take_channels(model: nn.Module, in_channels: int) -> None:
    """Replace a torchvision model's first convolution with one taking ``in_channels`` inputs,
    He-initialised (fan_out) as torchvision initialises its ResNets and MobileNetV3s."""
    name, conv = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    if conv.in_channels == in_channels:
        return
    stem = nn.Conv2d(
        in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        bias=conv.bias is not None,
    )
    nn.init.kaiming_normal_(stem.weight, mode="fan_out", nonlinearity="relu")
    if stem.bias is not None:
        nn.init.zeros_(stem.bias)
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, stem)


def deeplabv3_resnet50(num_classes: int = 11, in_channels: int = 3) -> DeepLabV3:
    """DFAD's teacher: DeepLabV3 on a ResNet-50 dilated to output stride 8, ASPP rates 12/24/32."""
    resnet = resnet50(weights=None, replace_stride_with_dilation=[False, True, True])
    backbone = IntermediateLayerGetter(resnet, return_layers={"layer4": "out"})
    model = DeepLabV3(backbone, deeplabv3.DeepLabHead(2048, num_classes, DFAD_ATROUS_RATES))
    _take_channels(model, in_channels)
    return _described(model, num_classes, in_channels)


def deeplabv3_mobilenetv2(num_classes: int = 11, in_channels: int = 3) -> DeepLabV3:
    """DFAD's student: DeepLabV3 on the reference's MobileNetV2 features (output stride 8, 320
    channels), ASPP rates 12/24/32."""
    backbone = IntermediateLayerGetter(MobileNetV2(in_channels), return_layers={"features": "out"})
    model = DeepLabV3(backbone, deeplabv3.DeepLabHead(320, num_classes, DFAD_ATROUS_RATES))
    return _described(model, num_classes, in_channels)


def _tensor_output(model: nn.Module, num_classes: int, in_channels: int) -> nn.Module:
    """Narrow a torchvision segmentation model's class to the subclass that returns a tensor."""
    model.__class__ = {deeplabv3.DeepLabV3: DeepLabV3, lraspp.LRASPP: LRASPP}[type(model)]
    _take_channels(model, in_channels)
    return _described(model, num_classes, in_channels)


def tv_deeplabv3_resnet50(num_classes: int = 21, in_channels: int = 3) -> DeepLabV3:
    """torchvision's DeepLabV3-ResNet-50 (output stride 8, ASPP rates 12/24/36), no aux head."""
    model = deeplabv3.deeplabv3_resnet50(
        weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False
    )
    return _tensor_output(model, num_classes, in_channels)


def tv_deeplabv3_mobilenet_v3_large(num_classes: int = 21, in_channels: int = 3) -> DeepLabV3:
    """torchvision's DeepLabV3 on a dilated MobileNetV3-Large (output stride 16), no aux head."""
    model = deeplabv3.deeplabv3_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False
    )
    return _tensor_output(model, num_classes, in_channels)


def tv_lraspp_mobilenet_v3_large(num_classes: int = 21, in_channels: int = 3) -> LRASPP:
    """torchvision's Lite R-ASPP (Howard et al. 2019) on a dilated MobileNetV3-Large."""
    model = lraspp.lraspp_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=num_classes
    )
    return _tensor_output(model, num_classes, in_channels)
