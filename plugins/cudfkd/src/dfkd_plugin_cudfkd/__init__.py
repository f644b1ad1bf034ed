"""CuDFKD (Li et al., "How to Teach: Learning Data-Free Knowledge Distillation from Curriculum")
as a dfkd plugin. Torch-free: it only registers the method."""

from dfkd.api import default_preset, hookimpl
from dfkd_plugin_cudfkd.options import CuDFKDOptions

#: the reference's first commit (81b96d4), CIFAR-10 wrn40_2 → wrn16_1
#: (docs/methods/cudfkd.md#loop-and-hyperparameters). Neither
#: that commit nor 2f6f4ae ramps the adversarial weight, hence "constant": grad_adv and the
#: fractions only act with adv_schedule=linear.
CIFAR10 = {
    "epochs": 250,
    "ep_steps": 400,
    "kd_steps": 10,
    "g_steps": 1,
    "batch_size": 1024,
    "lr": 0.1,
    "momentum": 0.9,
    "weight_decay": 1e-4,
    "T": 20.0,
    "generator": "large",
    "nz": 512,
    "ngf": 64,
    "lr_g": 1e-3,
    "beta1": 0.9,
    "beta2": 0.99,
    "lambda_ent": -20.0,
    "oh": 1.0,
    "bn": 1.0,
    "act": 0.0,
    "adv": 0.5,
    "adv_type": "kl",
    "adv_mask": True,
    "adv_T": 3.0,
    "adv_schedule": "constant",
    "grad_adv": 0.05,
    "begin_fraction": 0.25,
    "end_fraction": 0.75,
    "loss": "kl",
    "curriculum": "log",
    "lambda_0": 2.0,
    "pace": 1e-4,
}

#: the reference's CIFAR-10 resnet34 → resnet18 script (at 14e6706, run with the "linear"
#: adversarial ramp from 0): L1 student loss. Its --seed 30 is a run option (--seed), not a
#: method option.
CIFAR10_R34_R18 = CIFAR10 | {
    "batch_size": 512,
    "adv": 0.0,
    "grad_adv": 0.5,
    "adv_schedule": "linear",
    "loss": "l1",
}

#: LeNet-5-BN → LeNet-5-Half on Fashion-MNIST, sized for 10 minutes on 2 CPU cores (README:
#: how it was found). T = 1: at T = 20 and lr 0.1 every sample's loss soon exceeds λ, all
#: weights fall to 0 and the self-paced loss stays 0 for good. The adversarial weight
#: ramps from 0, as in the reference's r34 → r18 script; the pace spans the run's 3,600 steps.
#: Generator size and speed as DFQ's preset (ngf 16, lr_g 1e-2), which measured best there.
FASHION_MNIST = {
    "epochs": 18,
    "ep_steps": 200,
    "kd_steps": 5,
    "g_steps": 1,
    "batch_size": 128,
    "lr": 0.1,
    "T": 1.0,
    "generator": "large",
    "nz": 128,
    "ngf": 16,
    "lr_g": 1e-2,
    "lambda_ent": -20.0,
    "oh": 1.0,
    "bn": 1.0,
    "act": 0.0,
    "adv": 0.0,
    "adv_type": "kl",
    "adv_schedule": "linear",
    "grad_adv": 0.05,
    "begin_fraction": 0.25,
    "end_fraction": 0.75,
    "loss": "kl",
    "curriculum": "log",
    "lambda_0": 2.0,
    "pace": 1.67e-3,
}

#: a run of seconds on a tiny dataset: what the method contract starts from
#: (docs/plugins.md#the-smoke-preset)
SMOKE = {"epochs": 2, "ep_steps": 4, "kd_steps": 2, "batch_size": 16, "nz": 16, "ngf": 8}


@hookimpl
def register_methods(register):
    register(
        "cudfkd",
        "dfkd_plugin_cudfkd.synthesizer:CuDFKDSynthesizer",
        "Persistent generator; the student learns easy samples first (self-paced curriculum)",
        paper="Li et al., How to Teach: Learning Data-Free Knowledge Distillation from "
        "Curriculum, arXiv:2208.13648",
        options=CuDFKDOptions,
        presets={
            "cifar10": CIFAR10,
            "cifar10-r34-r18": CIFAR10_R34_R18,
            "fashion-mnist": FASHION_MNIST,
            "default": default_preset(FASHION_MNIST),
            "smoke": SMOKE,
        },
    )
