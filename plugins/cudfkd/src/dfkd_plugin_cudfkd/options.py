"""CuDFKD's options. Defaults follow the reference at 2022-09-21 (ljrprocc/DFKD@2f6f4ae) and its
CIFAR-10 scripts (docs/methods/cudfkd.md), except ``pace``, which is the reference's value for
datasets other than CIFAR-10. Torch-free: `dfkd list-methods --options` reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dfkd.api import GenerativeOptions, UsageError, option


@dataclass
class CuDFKDOptions(GenerativeOptions):
    kd_steps: int = option(10, "Student steps after each generator step.")
    T: float = option(
        20.0,
        "Temperature of the student's KL loss, and of the batch-mean prediction p̄ whose entropy "
        "the generator maximises (the reference uses its one --T for both).",
    )
    nz: int = option(512, "Latent size of the generator (the reference: 512 for CIFAR).")
    beta1: float = option(0.9, "Adam's first-moment decay for the generator.")
    beta2: float = option(0.99, "Adam's second-moment decay for the generator.")
    oh: float = option(1.0, "Weight of the one-hot loss CE(t, argmax t).")
    bn: float = option(1.0, "Weight of the teacher BatchNorm-statistics loss.")
    adv: float = option(
        0.5,
        "Starting weight adv₀ of the adversarial term; adv_schedule changes it after each epoch.",
    )
    lambda_ent: float = option(
        -20.0,
        "Weight of the entropy H(p̄) of the batch-mean teacher prediction at temperature T. "
        "Negative: the generator maximises it, spreading its batches over the classes.",
    )
    adv_type: Literal["kl", "js"] = option(
        "kl",
        "Adversarial term: 'kl' = −(1/B) Σ m_i·KL_i(t‖s; adv_T); "
        "'js' = 1 − clamp(JS(adv_T), 0, 1).",
    )
    adv_mask: bool = option(
        True,
        "With adv_type 'kl', count only samples on which student and teacher agree (CMI's mask, "
        "as at 2f6f4ae); false drops the mask, as the reference's HEAD does.",
    )
    adv_T: float = option(3.0, "Temperature of the adversarial divergence.", gt=0)
    loss: Literal["kl", "l1"] = option(
        "kl",
        "Per-sample student loss: 'kl' = Σ_c KL_ic(t‖s; T)·T²; "
        "'l1' = mean_c |s_ic − t_ic| on logits.",
    )
    curriculum: Literal["log", "hard", "soft"] = option(
        "log",
        "Self-paced sample weights v(ℓ, λ): 'log' = (1 + e^−λ)/(1 + e^(ℓ−λ)); "
        "'hard' = 1[ℓ < λ]; 'soft' = 1[ℓ < λ]·(1 − ℓ/λ).",
    )
    lambda_0: float = option(
        2.0, "Starting pace λ₀: the loss below which a sample counts as easy.", gt=0
    )
    pace: float = option(
        2e-5,
        "Growth α of the pace per student step, λ(k) = λ₀ + α·k. The reference hard-codes 1e-4 "
        "for CIFAR-10 and 2e-5 for every other dataset.",
        ge=0,
    )
    adv_schedule: Literal["constant", "linear"] = option(
        "constant",
        "Adversarial-weight curriculum after each epoch: 'constant' keeps adv₀ (2f6f4ae); "
        "'linear' adds grad_adv per epoch between begin_fraction and end_fraction of the epochs "
        "(the reference from 2022-11 on).",
    )
    grad_adv: float = option(0.05, "Increase of the adversarial weight per epoch ('linear').", ge=0)
    begin_fraction: float = option(
        0.25,
        "Fraction of the epochs after which the adversarial weight starts to grow.",
        ge=0,
        le=1,
    )
    end_fraction: float = option(
        0.75,
        "Fraction of the epochs after which the adversarial weight stays constant.",
        ge=0,
        le=1,
    )

    def check(self) -> None:
        """The adversarial weight's window must not end before it begins."""
        super().check()
        if self.end_fraction < self.begin_fraction:
            raise UsageError(
                f"CuDFKD: end_fraction ({self.end_fraction}) must not be below "
                f"begin_fraction ({self.begin_fraction})."
            )
