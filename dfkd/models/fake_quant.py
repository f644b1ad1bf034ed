"""Fake-quantised students for quantisation-aware distillation (`dfkd run ... --quantize`).

DFQ (Choi et al., CVPR-W 2020) and GDFQ (Xu et al., ECCV 2020) distil from synthetic images into a
student that computes as its integer version will: every convolution and linear layer rounds its
weights (symmetric, per output channel) and its input (asymmetric, per tensor) to the scheme's
widths in the forward pass, while the backward pass lets gradients through the rounding where
the value was in range (the straight-through estimator) to float master weights. A layer's input
range is a running average of the batches' minimum and maximum (momentum ``RANGE_MOMENTUM``),
kept as buffers: it is saved with the weights and checkpointed, so a resumed run goes on from the
very same ranges. The conversion swaps the classes of ``nn.Conv2d`` and ``nn.Linear`` modules in
place, so parameter names and optimiser state stay as they were.

BatchNorm is not folded while training: a student with BatchNorm rounds its convolution weights
before the normalisation, and `dfkd quantize` folds it and recalibrates for the integer file
(docs/architecture.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: weight and activation bits of each scheme `dfkd run --quantize` takes
SCHEMES = {"w8a8": (8, 8), "w4a4": (4, 4)}
#: how fast a layer's input range follows its batches (the EMA observers' usual 0.01 is for
#: real data seen in order; synthetic batches change as the generator learns)
RANGE_MOMENTUM = 0.1


class InputRange(nn.Module):
    """Fake-quantises a tensor to ``bits`` unsigned levels over its running [min, max]
    (zero always inside, so that padding and ReLU's zeros stay exact)."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.levels = 2**bits - 1
        self.register_buffer("low", torch.zeros(()))
        self.register_buffer("high", torch.zeros(()))
        self.register_buffer("seen", torch.zeros((), dtype=torch.bool))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            with torch.no_grad():
                low, high = x.min().clamp(max=0).float(), x.max().clamp(min=0).float()
                if bool(self.seen):
                    low = torch.lerp(self.low, low, RANGE_MOMENTUM)
                    high = torch.lerp(self.high, high, RANGE_MOMENTUM)
                self.low.copy_(low)
                self.high.copy_(high)
                self.seen.fill_(True)
        scale = float((self.high - self.low).clamp(min=1e-8)) / self.levels
        zero_point = min(max(round(-float(self.low) / scale), 0), self.levels)
        return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, 0, self.levels)


def quantize_weight(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """Symmetric per-output-channel rounding to ``bits`` signed levels (-q..q)."""
    q = 2 ** (bits - 1) - 1
    scale = (weight.detach().abs().amax(dim=tuple(range(1, weight.dim()))) / q).clamp(min=1e-12)
    zero = torch.zeros_like(scale, dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(weight, scale.float(), zero, 0, -q, q)


class QuantConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` that computes on rounded inputs and weights."""

    input_range: InputRange
    weight_bits: int

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = quantize_weight(self.weight, self.weight_bits)
        return self._conv_forward(self.input_range(x), w, self.bias)


class QuantLinear(nn.Linear):
    """An ``nn.Linear`` that computes on rounded inputs and weights."""

    input_range: InputRange
    weight_bits: int

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = quantize_weight(self.weight, self.weight_bits)
        return F.linear(self.input_range(x), w, self.bias)


QUANTIZED = {nn.Conv2d: QuantConv2d, nn.Linear: QuantLinear}


def fake_quantize(model: nn.Module, scheme: str) -> nn.Module:
    """Make every ``nn.Conv2d`` and ``nn.Linear`` of ``model`` compute at ``scheme``'s widths, in
    place; the model is returned. Subclasses of them (a library's own convolutions) are refused:
    their forward is not the one rounded here."""
    weight_bits, input_bits = SCHEMES[scheme]
    for name, module in model.named_modules():
        if type(module) in QUANTIZED:
            module.__class__ = QUANTIZED[type(module)]
            module.weight_bits = weight_bits
            module.input_range = InputRange(input_bits).to(module.weight.device)
        elif isinstance(module, tuple(QUANTIZED)) and type(module) not in QUANTIZED.values():
            raise ValueError(f"{name} is a {type(module).__name__}, which --quantize cannot round")
    return model


def dequantize(model: nn.Module) -> nn.Module:
    """The float model under the rounding, in place: the master weights, as an exporter or a
    post-training quantiser takes them."""
    for module in model.modules():
        for plain, rounded in QUANTIZED.items():
            if type(module) is rounded:
                del module.input_range
                del module.weight_bits
                module.__class__ = plain
    return model


def is_fake_quantized(model: nn.Module) -> bool:
    return any(type(m) in QUANTIZED.values() for m in model.modules())
