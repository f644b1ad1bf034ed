"""The one ``forward(x, return_features)`` every zoo model and bridge shares."""

from __future__ import annotations

from torch import Tensor


class FeatureClassifier:
    """Mixin placed before ``nn.Module``: a model supplies ``logits_and_features`` once.

    Methods such as DAFL and CMI need the penultimate vector, the input of the final linear
    layer, alongside the logits. Computing both in one pass and choosing what to return here keeps
    that behaviour identical across the zoo and the timm/torchvision bridges.
    """

    num_classes: int
    in_channels: int
    input_size: int | None  # pixels the model expects; None when any size works

    def logits_and_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def forward(self, x: Tensor, return_features: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        logits, features = self.logits_and_features(x)
        return (logits, features) if return_features else logits
