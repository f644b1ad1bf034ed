"""Options of the persistent-generator methods (DAFL, ZSKT, DFQ, DFAD): the generator's size and
optimiser, and the weights of the shared loss terms its step minimises.

Torch-free, like every options module: `dfkd list-methods --options` reads it without torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dfkd.options import option
from dfkd.synthesis.options import DataFreeOptions

GeneratorKind = Literal["large", "base", "a", "b"]


@dataclass
class GenerativeOptions(DataFreeOptions):
    generator: GeneratorKind = option(
        "large",
        "Generator: 'large' (LargeGenerator, a 4·ngf-channel projection; DAFL, ZSKT, DFQ), "
        "'base' (Generator, 2·ngf; CMI's), 'a' (GeneratorA: Tanh + non-affine BatchNorm "
        "output fed to the networks unnormalised; DFAD's) or 'b' (GeneratorB: DCGAN-style "
        "transposed convolutions to a Tanh output, fed unnormalised; DFAD's segmentation one).",
    )
    nz: int = option(256, "Latent size of the generator.", ge=1)
    ngf: int = option(64, "Generator width: channels of its last hidden layer.", ge=1)
    lr_g: float = option(1e-3, "Generator learning rate (Adam; see schedule_g).", gt=0)
    schedule_g: bool = option(
        False,
        "The generator's rate follows the student's schedule (DFAD's reference decays both); "
        "off, it stays at lr_g.",
    )
    g_grad_clip: float = option(
        0.0,
        "Largest gradient norm of a generator step; 0: no clipping (the original ZSKT code "
        "clips at 5).",
        ge=0,
    )
    beta1: float = option(0.5, "Adam's first-moment decay for the generator.", ge=0, lt=1)
    beta2: float = option(0.999, "Adam's second-moment decay for the generator.", ge=0, lt=1)
    oh: float = option(0.0, "Weight of the one-hot loss CE(t, argmax t).", ge=0)
    act: float = option(0.0, "Weight of the activation loss −mean|f_T| (teacher features).", ge=0)
    balance: float = option(0.0, "Weight of the class-balance loss Σ p̄ log p̄ (−entropy).", ge=0)
    bn: float = option(0.0, "Weight of the teacher BatchNorm-statistics loss.", ge=0)
    adv: float = option(0.0, "Weight of the adversarial loss −KL(t‖s; T=1) (−L1 for DFAD).", ge=0)
