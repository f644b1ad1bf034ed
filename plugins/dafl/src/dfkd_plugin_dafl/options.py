"""DAFL's options; the defaults are the DataFree script for CIFAR-10 wrn40_2 → wrn16_1
(docs/methods/dafl.md). Torch-free: `dfkd list-methods --options` reads it."""

from __future__ import annotations

from dataclasses import dataclass

from dfkd.api import GenerativeOptions, option


@dataclass
class DAFLOptions(GenerativeOptions):
    kd_steps: int = option(5, "Student steps after each generator step.")
    T: float = option(
        1.0,
        "Temperature of the student's KD loss. The reference forces T = 1 for DAFL whatever its "
        "script passes (docs/methods/framework.md#kd-engine).",
    )
    nz: int = option(512, "Latent size of the generator.")
    oh: float = option(1.0, "Weight of the one-hot loss CE(t, argmax t).")
    act: float = option(
        0.001, "Weight of the activation loss −mean|f_T| (the DAFL paper used 0.1)."
    )
    balance: float = option(
        20.0, "Weight of the class-balance loss Σ p̄ log p̄ (the DAFL paper's 'ie', 5)."
    )
