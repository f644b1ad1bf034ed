"""The `noise` method: what a complete dfkd method plugin looks like (docs/plugins.md).

This module is the entry point. It registers the method's record and imports nothing heavy, so
`dfkd --help` stays fast; the synthesizer is named by an import string and loaded on first use.
"""

from dataclasses import dataclass

from dfkd.api import DataFreeOptions, hookimpl, option


@dataclass
class NoiseOptions(DataFreeOptions):
    """Every hyperparameter typed, defaulted and documented: `-o key=value` sets it."""

    kd_steps: int = option(10, "Student steps on each synthesized batch.")
    g_steps: int = option(20, "Adam steps that push each noise batch towards its target classes.")
    lr_g: float = option(0.1, "Adam learning rate of the pixels.", gt=0)


@hookimpl
def register_methods(register):
    register(
        "noise",
        "dfkd_plugin_noise.synthesizer:NoiseSynthesizer",
        "Noise images nudged towards balanced teacher classes (an example plugin)",
        paper="In the spirit of Nayak et al., Zero-Shot Knowledge Distillation, ICML 2019",
        options=NoiseOptions,
        presets={
            "quick": {"epochs": 5, "ep_steps": 100, "batch_size": 64},
            "smoke": {"epochs": 2, "ep_steps": 4, "kd_steps": 2, "batch_size": 8, "g_steps": 2},
        },
    )
