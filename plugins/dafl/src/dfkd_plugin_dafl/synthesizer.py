"""DAFL's synthesizer: the shared persistent generator with one-hot, activation and
class-balance terms (docs/methods/dafl.md). Everything but the weights is the core's."""

from __future__ import annotations

from dfkd.api import GenerativeSynthesizer


class DAFLSynthesizer(GenerativeSynthesizer):
    """L_G = oh·CE(t, argmax t) + act·(−mean|f_T|) + balance·Σ p̄ log p̄; the student learns
    on fresh samples of the generator in eval mode."""

    method = "DAFL"
