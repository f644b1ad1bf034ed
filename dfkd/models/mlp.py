"""The fully connected MNIST nets of Hinton et al. (2015) used by Lopes et al. (2017).

Lopes trains hinton1200 with dropout (keep 0.8 on the input, 0.5 on the hidden layers). Here the
rates are constructor arguments that default to 0.0: a model built by name behaves the same in
train and eval mode, which is what the distillation loop expects of a student, and the teacher is
only ever run in eval mode, where dropout is off anyway. Build ``HintonMLP(...,
input_dropout=0.2, hidden_dropout=0.5)`` directly to train a teacher with the paper's recipe.
"""

from __future__ import annotations

from torch import Tensor, nn

from dfkd.models.base import FeatureClassifier


class HintonMLP(FeatureClassifier, nn.Module):
    """in_channels*28*28 - hidden - hidden - classes, ReLU; it flattens (N, C, 28, 28) itself."""

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        hidden: int = 1200,
        input_dropout: float = 0.0,
        hidden_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_classes, self.in_channels, self.input_size = num_classes, in_channels, 28
        self.input_dropout = nn.Dropout(input_dropout)
        self.fc1 = nn.Linear(in_channels * 28 * 28, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, num_classes)
        self.relu = nn.ReLU()
        self.hidden_dropout = nn.Dropout(hidden_dropout)

    def logits_and_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = self.input_dropout(x.flatten(1))
        x = self.hidden_dropout(self.relu(self.fc1(x)))
        features = self.hidden_dropout(self.relu(self.fc2(x)))
        return self.fc3(features), features


def hinton1200(num_classes: int = 10, in_channels: int = 3) -> HintonMLP:
    """784-1200-1200-10, the Lopes et al. teacher."""
    return HintonMLP(num_classes, in_channels, hidden=1200)


def hinton800(num_classes: int = 10, in_channels: int = 3) -> HintonMLP:
    """784-800-800-10, the Lopes et al. student."""
    return HintonMLP(num_classes, in_channels, hidden=800)
