"""ZSKT's synthesizer: the shared persistent generator, trained only to make the student
disagree with the teacher, plus the paper's optional attention transfer (docs/methods/zskt.md)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from dfkd.api import GenerativeSynthesizer, SynthesisContext, UsageError, kd_kl
from dfkd_plugin_zskt.attention import AttentionTransfer
from dfkd_plugin_zskt.options import ZSKTOptions


class ZSKTSynthesizer(GenerativeSynthesizer):
    """L_G = adv·(−KL(t‖s; 1)) with the student in eval mode; the student learns KL(t‖s; T)
    on fresh samples, plus at_beta · attention transfer when at_beta > 0."""

    method = "ZSKT"

    def __init__(self, ctx: SynthesisContext, options: ZSKTOptions) -> None:
        super().__init__(ctx, options)
        self.attention: AttentionTransfer | None = None
        if options.at_beta:
            student_size = ctx.student_size or ctx.image_size
            try:
                self.attention = AttentionTransfer(
                    ctx.teacher, ctx.student, ctx.channels, ctx.image_size, student_size
                )
            except ValueError as exc:
                raise UsageError(f"ZSKT: {exc}. Set at_beta=0 for this pair.") from None

    def student_loss(
        self, s_logits: Tensor, t_logits: Tensor, step: int
    ) -> tuple[Tensor, dict[str, Any]]:
        kd = kd_kl(s_logits, t_logits, T=self.options.T)
        if self.attention is None:
            return kd, {}
        at = self.attention.loss()
        return kd + self.options.at_beta * at, {"kd": kd.item(), "at": at.item()}
