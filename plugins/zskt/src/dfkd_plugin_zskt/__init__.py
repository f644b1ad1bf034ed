"""ZSKT (Micaelli & Storkey, NeurIPS 2019) as a dfkd plugin. Torch-free: it only registers the
method."""

from dfkd.api import default_preset, hookimpl
from dfkd_plugin_zskt.options import ZSKTOptions

#: the DataFree script for CIFAR-10 wrn40_2 → wrn16_1
#: (docs/methods/zskt.md#loop-and-hyperparameters)
CIFAR10 = {
    "epochs": 200,
    "ep_steps": 400,
    "kd_steps": 5,
    "g_steps": 1,
    "batch_size": 256,
    "lr": 0.1,
    "weight_decay": 1e-4,
    "T": 1.0,
    "generator": "large",
    "nz": 256,
    "ngf": 64,
    "lr_g": 1e-3,
    "adv": 1.0,
    "at_beta": 0.0,
}

#: LeNet-5 → LeNet-5-Half on Fashion-MNIST within 10 CPU minutes (README: how it was found)
FASHION_MNIST = {
    "epochs": 12,
    "ep_steps": 200,
    "kd_steps": 5,
    "g_steps": 1,
    "batch_size": 512,
    "lr": 0.1,
    "T": 1.0,
    "generator": "large",
    "nz": 128,
    "ngf": 16,
    "lr_g": 1e-3,
    "adv": 1.0,
}

#: a run of seconds on a tiny dataset: what the method contract starts from
#: (docs/plugins.md#the-smoke-preset)
SMOKE = {"epochs": 2, "ep_steps": 4, "kd_steps": 2, "batch_size": 8, "nz": 8, "ngf": 4}


@hookimpl
def register_methods(register):
    register(
        "zskt",
        "dfkd_plugin_zskt.synthesizer:ZSKTSynthesizer",
        "Generator trained adversarially to maximise student-teacher disagreement",
        paper="Micaelli & Storkey, Zero-shot Knowledge Transfer via Adversarial Belief "
        "Matching, NeurIPS 2019",
        options=ZSKTOptions,
        presets={
            "cifar10": CIFAR10,
            "fashion-mnist": FASHION_MNIST,
            "default": default_preset(FASHION_MNIST),
            "smoke": SMOKE,
        },
    )
