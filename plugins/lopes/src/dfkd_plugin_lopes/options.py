"""Lopes et al.'s options (docs/methods/lopes.md). Torch-free: `dfkd list-methods --options`
reads it.

The defaults are the reference's MNIST settings where the shared loop allows them: 1000 Adam
steps per reconstructed batch, inputs initialised N(0.15, 0.1) in pixel space, temperature 8.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dfkd.api import DataFreeOptions, option

Objective = Literal[
    "top_layer", "all_layers", "all_layers_dropout", "spectral_all_layers", "spectral_layer_pairs"
]


@dataclass
class LopesOptions(DataFreeOptions):
    records: str = option("", "Activation records of the teacher (made by `dfkd lopes record`).")
    objective: Objective = option(
        "all_layers", "What the reconstructed inputs must reproduce (README: Objectives)."
    )
    g_steps: int = option(1000, "Adam steps on the pixels of each reconstructed batch.")
    lr_g: float = option(0.07, "Adam learning rate of the pixels.", gt=0)
    pool_size: int = option(
        64000,
        "Images to reconstruct in all; synthesis rounds stop adding once there are as many.",
        ge=1,
    )
    init_mean: float = option(0.15, "Mean of the initial pixels (in [0, 1]).", ge=0, le=1)
    init_std: float = option(0.1, "Standard deviation of the initial pixels.", ge=0)
    top_relu: bool = option(
        True, "Compare the logits/T layer after a ReLU, as the reference does for every layer."
    )
    dropout_keep: float = option(
        0.5,
        "all_layers_dropout: keep probability of the fixed masks on the hidden layers.",
        gt=0,
        le=1,
    )
    T: float = option(8.0, "Temperature of the student's soft cross-entropy.")
