"""CuDFKD's synthesizer (docs/methods/cudfkd.md): the core's persistent generator with CuDFKD's
own terms, an adversarial weight that follows a per-epoch schedule, and a self-paced student loss.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor

from dfkd.api import (
    GenerativeSynthesizer,
    Generator,
    SynthesisContext,
    adversarial_kl,
    agreement_mask,
    entropy,
    js_divergence,
    kd_kl,
    reset_parameters_dcgan,
)
from dfkd_plugin_cudfkd.curriculum import adversarial_weight, pace, spl_weights
from dfkd_plugin_cudfkd.options import CuDFKDOptions


class CuDFKDSynthesizer(GenerativeSynthesizer):
    """L_G = λ_ent·H(p̄) + adv·L_adv + oh·CE(t, argmax t) + act·(−mean|f_T|) + bn·Σ_l r_l, one
    generator step per round; the student learns on fresh samples of the generator in eval mode,
    each sample's loss weighted by how easy it is at the current pace."""

    method = "CuDFKD"

    def __init__(self, ctx: SynthesisContext, options: CuDFKDOptions) -> None:
        super().__init__(ctx, options)
        self._set_adv(options.adv)

    def init_generator(self, generator: Generator) -> None:
        """CMI's DCGAN initialisation, applied once, before a multi-process run shares process
        0's weights: the generator then persists for the whole run."""
        reset_parameters_dcgan(generator)

    def _set_adv(self, value: float) -> None:
        """The base computes only the terms present in ``weights``, so a zero weight drops the
        student's forward pass from the generator step, as the reference's ``adv > 0`` test does."""
        self.adv = value
        if value:
            self.weights["adv"] = value
        else:
            self.weights.pop("adv", None)

    def adversarial(self, s_logits: Tensor, t_logits: Tensor) -> Tensor:
        o = self.options
        if o.adv_type == "js":
            return 1.0 - js_divergence(s_logits, t_logits, T=o.adv_T).clamp(0.0, 1.0)
        mask = agreement_mask(s_logits, t_logits) if o.adv_mask else None
        return adversarial_kl(s_logits, t_logits, T=o.adv_T, mask=mask)

    def term_weights(self, options: CuDFKDOptions) -> dict[str, float]:
        return {**super().term_weights(options), "ent": options.lambda_ent}

    def teacher_terms(self, t_logits: Tensor) -> dict[str, Tensor]:
        """H(p̄), the entropy of the batch-mean prediction at the KD temperature."""
        return {"ent": entropy(F.softmax(t_logits / self.options.T, dim=1).mean(dim=0))}

    def student_loss(
        self, s_logits: Tensor, t_logits: Tensor, step: int
    ) -> tuple[Tensor, dict[str, float]]:
        """(1/B) Σ_i v_i·ℓ_i with self-paced weights v_i of each sample's own loss ℓ_i.

        Weighting each sample, not the batch mean, is the point: an easy sample counts fully while
        a hard one in the same batch is damped. (The reference's first commit and its HEAD apply v
        to the already-averaged loss, which reduces the curriculum to a global loss scale.)
        """
        o = self.options
        if o.loss == "kl":
            losses = kd_kl(s_logits, t_logits, T=o.T, reduction="none")
        else:
            losses = (s_logits - t_logits).abs().mean(dim=1)
        lam = pace(step, o.lambda_0, o.pace)
        v = spl_weights(losses.detach(), lam, o.curriculum)
        weighted = v * losses
        loss = weighted.sum() / losses.numel()
        # Σ vℓ / Σ v: the loss of what the student actually learns from (0 when nothing is easy).
        total = v.sum().item()
        difficulty = weighted.detach().sum().item() / total if total > 0 else 0.0
        return loss, {"difficulty": difficulty, "lambda": lam, "spl_weight": v.mean().item()}

    def end_epoch(self, epoch: int) -> dict[str, float]:
        o = self.options
        logs = super().end_epoch(epoch)
        self._set_adv(
            adversarial_weight(
                epoch,
                o.epochs,
                o.adv,
                o.grad_adv,
                o.begin_fraction,
                o.end_fraction,
                o.adv_schedule,
            )
        )
        return {**logs, "adv": self.adv}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "adv": self.adv}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._set_adv(float(state["adv"]))
