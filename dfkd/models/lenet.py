"""LeNet-5 and its half-width student, the MNIST pair of DAFL, DFAD and Lopes et al.

Parameter names follow the reference benchmark (a ``features`` and an ``fc`` Sequential), so its
checkpoints load unchanged. ReLUs are not in-place: methods that record pre-activations with
forward hooks on the convolutions would otherwise see them overwritten.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dfkd.models.base import FeatureClassifier


class MaxPool2x2(nn.MaxPool2d):
    """2x2 max pooling, stride 2. Where no gradient is wanted (a frozen teacher, evaluation) it
    takes the maximum of four strided views: the same values without the indices a backward pass
    would need, which ``max_pool2d`` works out on the CPU regardless. That makes a DFAD student
    step 1.3 times faster (docs/architecture.md)."""

    def __init__(self) -> None:
        super().__init__(kernel_size=2, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        if (torch.is_grad_enabled() and x.requires_grad) or torch.compiler.is_exporting():
            return super().forward(x)
        rows = torch.maximum(x[..., 0:-1:2, :], x[..., 1::2, :])
        return torch.maximum(rows[..., 0:-1:2], rows[..., 1::2])


class LeNet5(FeatureClassifier, nn.Module):
    """Three 5x5 convolutions and two linear layers on a 32x32 input.

    ``widths`` are the three convolution widths and the hidden linear width; ``batch_norm`` adds a
    BatchNorm2d after each convolution so the BN-statistics methods have a small teacher.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        widths: tuple[int, int, int, int] = (6, 16, 120, 84),
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        self.num_classes, self.in_channels, self.input_size = num_classes, in_channels, 32
        conv1, conv2, conv3, hidden = widths
        layers: list[nn.Module] = []
        for c_in, c_out in ((in_channels, conv1), (conv1, conv2), (conv2, conv3)):
            layers.append(nn.Conv2d(c_in, c_out, kernel_size=5, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(c_out))
            layers += [nn.ReLU(), MaxPool2x2()]
        self.features = nn.Sequential(*layers[:-1])  # no pool after the third convolution
        self.fc = nn.Sequential(nn.Linear(conv3, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def logits_and_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        hidden = self.fc[1](self.fc[0](self.features(x).flatten(1)))
        return self.fc[2](hidden), hidden


def lenet5(num_classes: int = 10, in_channels: int = 3) -> LeNet5:
    """LeNet-5: conv 6, 16, 120 and linear 84."""
    return LeNet5(num_classes, in_channels)


def lenet5_half(num_classes: int = 10, in_channels: int = 3) -> LeNet5:
    """LeNet-5-Half, the student of the MNIST benchmarks: conv 3, 8, 60 and linear 42."""
    return LeNet5(num_classes, in_channels, widths=(3, 8, 60, 42))


def lenet5_bn(num_classes: int = 10, in_channels: int = 3) -> LeNet5:
    """LeNet-5 with BatchNorm between each convolution and its ReLU, for BN-statistics priors."""
    return LeNet5(num_classes, in_channels, batch_norm=True)
