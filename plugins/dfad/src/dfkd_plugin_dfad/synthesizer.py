"""DFAD's synthesizer: the shared persistent generator playing an L1 game against the student
(docs/methods/dfad.md). What is DFAD's own is the L1 on logits, for both players, and that its
generator and student stay in train mode throughout."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from dfkd.api import GenerativeSynthesizer, adversarial_l1


class DFADSynthesizer(GenerativeSynthesizer):
    """The student minimises mean|s − t| on fresh samples; the generator maximises it."""

    method = "DFAD"
    sample_in_train_mode = True
    adversary_in_train_mode = True

    def adversarial(self, s_logits: Tensor, t_logits: Tensor) -> Tensor:
        return adversarial_l1(s_logits, t_logits)

    def student_loss(
        self, s_logits: Tensor, t_logits: Tensor, step: int
    ) -> tuple[Tensor, dict[str, Any]]:
        return -adversarial_l1(s_logits, t_logits), {}
