"""DFQ's options; the defaults are the DataFree script for CIFAR-10 wrn40_2 → wrn16_1
(docs/methods/dfq.md). Torch-free: `dfkd list-methods --options` reads it."""

from __future__ import annotations

from dataclasses import dataclass

from dfkd.api import GenerativeOptions, option


@dataclass
class DFQOptions(GenerativeOptions):
    kd_steps: int = option(10, "Student steps after each generator step.")
    T: float = option(
        1.0,
        "Temperature of the student's KD loss. The reference forces T = 1 for DFQ whatever its "
        "script passes (docs/methods/framework.md#kd-engine).",
    )
    bn: float = option(1.0, "Weight of the teacher BatchNorm-statistics loss.")
    oh: float = option(1.0, "Weight of the one-hot loss CE(t, argmax t).")
    adv: float = option(1.0, "Weight of the adversarial loss −KL(t‖s; T=1).")
    balance: float = option(20.0, "Weight of the class-balance loss Σ p̄ log p̄ (−entropy).")
