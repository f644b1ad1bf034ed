"""ZSKT's options; the defaults are the DataFree script for CIFAR-10 wrn40_2 → wrn16_1
(docs/methods/zskt.md). Torch-free: `dfkd list-methods --options` reads it."""

from __future__ import annotations

from dataclasses import dataclass

from dfkd.api import GenerativeOptions, option


@dataclass
class ZSKTOptions(GenerativeOptions):
    kd_steps: int = option(
        5, "Student steps after each synthesis round (the paper's n_S; it used 10)."
    )
    g_steps: int = option(1, "Generator steps per synthesis round (the paper's n_G; it used 1).")
    T: float = option(
        1.0,
        "Temperature of the student's KD loss. The reference forces T = 1 for ZSKT whatever its "
        "script passes (docs/methods/framework.md#kd-engine); the paper also used 1.",
    )
    adv: float = option(1.0, "Weight of the adversarial loss −KL(t‖s; T=1).")
    at_beta: float = option(
        0.0,
        "Weight β of the paper's attention-transfer term on the student loss "
        "(0: off, as in DataFree). See the README for the maps it pairs.",
        ge=0,
    )
