"""DFQ's synthesizer: the shared persistent generator on BN statistics, one-hot, adversarial
and class-balance terms (docs/methods/dfq.md). Everything but the weights is the core's."""

from __future__ import annotations

from dfkd.api import GenerativeSynthesizer


class DFQSynthesizer(GenerativeSynthesizer):
    """L_G = bn·Σ_l r_l + oh·CE(t, argmax t) + adv·(−KL(t‖s; 1)) + balance·Σ p̄ log p̄. A teacher
    without BatchNorm gets a warning and loses only the BN term."""

    method = "DFQ"
