"""DFAD's synthesizer: the shared persistent generator playing an L1 game against the student
(docs/methods/dfad.md). What is DFAD's own is the L1 on logits, for both players, and that its
generator and student stay in train mode throughout. For a segmentation teacher the logits are
per pixel, the L1 is their mean over batch, classes and pixels, and the reference's generator
maximises log(1 + L1) instead of L1 (docs/methods/dfad.md#segmentation)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from dfkd.api import GenerativeSynthesizer, SynthesisContext, adversarial_l1
from dfkd_plugin_dfad.options import DFADOptions


class DFADSynthesizer(GenerativeSynthesizer):
    """The student minimises mean|s − t| on fresh samples; the generator maximises it."""

    method = "DFAD"
    sample_in_train_mode = True
    adversary_in_train_mode = True

    def __init__(self, ctx: SynthesisContext, options: DFADOptions) -> None:
        super().__init__(ctx, options)
        form = options.adv_loss
        self.log_game = form == "log_l1" or (form == "auto" and ctx.task == "segmentation")

    def adversarial(self, s_logits: Tensor, t_logits: Tensor) -> Tensor:
        l1 = adversarial_l1(s_logits, t_logits)  # −mean|s − t|
        return -torch.log1p(-l1) if self.log_game else l1

    def student_loss(
        self, s_logits: Tensor, t_logits: Tensor, step: int
    ) -> tuple[Tensor, dict[str, Any]]:
        return -adversarial_l1(s_logits, t_logits), {}
