"""Options every data-free method shares: the loop's budget and the student's optimiser.

Method plugins subclass `DataFreeOptions` and add their own coefficients; this module must
stay torch-free because `dfkd list-methods --options` reads it.
"""

from __future__ import annotations

from dataclasses import dataclass

from dfkd.options import option


@dataclass
class DataFreeOptions:
    epochs: int = option(200, "Training epochs; test accuracy is measured after each.")
    ep_steps: int = option(400, "Student steps per epoch.")
    kd_steps: int = option(400, "Student steps after each synthesis round.")
    g_steps: int = option(1, "Generator or pixel optimisation steps per synthesis round.")
    batch_size: int = option(256, "Student batch size (per process).")
    synthesis_batch_size: int = option(0, "Images per synthesis round (0: same as batch_size).")
    lr: float = option(0.1, "Student learning rate (SGD, cosine schedule).")
    momentum: float = option(0.9, "Student SGD momentum.")
    weight_decay: float = option(1e-4, "Student SGD weight decay.")
    T: float = option(1.0, "Temperature of the student's KD loss.")
    warmup: int = option(0, "Epochs of synthesis only, before the student trains.")

    @property
    def syn_batch(self) -> int:
        return self.synthesis_batch_size or self.batch_size
