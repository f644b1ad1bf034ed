"""DAFL (Chen et al., ICCV 2019) as a dfkd plugin. Torch-free: it only registers the method."""

from dfkd.api import default_preset, hookimpl
from dfkd_plugin_dafl.options import DAFLOptions

#: the DataFree script for CIFAR-10 wrn40_2 → wrn16_1
#: (docs/methods/dafl.md#loop-and-hyperparameters)
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
    "nz": 512,
    "ngf": 64,
    "lr_g": 1e-3,
    "oh": 1.0,
    "act": 0.001,
    "balance": 20.0,
}

#: LeNet-5 → LeNet-5-Half on Fashion-MNIST within 10 CPU minutes (README: how it was found)
FASHION_MNIST = {
    "epochs": 30,
    "ep_steps": 200,
    "kd_steps": 5,
    "g_steps": 1,
    "batch_size": 128,
    "lr": 0.05,
    "T": 20.0,
    "generator": "large",
    "nz": 128,
    "ngf": 16,
    "lr_g": 1e-3,
    "oh": 1.0,
    "act": 0.1,
    "balance": 5.0,
}

#: a run of seconds on a tiny dataset: what the method contract starts from
#: (docs/plugins.md#the-smoke-preset)
SMOKE = {"epochs": 2, "ep_steps": 4, "kd_steps": 2, "batch_size": 8, "nz": 8, "ngf": 4}


@hookimpl
def register_methods(register):
    register(
        "dafl",
        "dfkd_plugin_dafl.synthesizer:DAFLSynthesizer",
        "Generator trained on one-hot, activation and class-balance losses",
        paper="Chen et al., Data-Free Learning of Student Networks, ICCV 2019",
        options=DAFLOptions,
        presets={
            "cifar10": CIFAR10,
            "fashion-mnist": FASHION_MNIST,
            "default": default_preset(FASHION_MNIST),
            "smoke": SMOKE,
        },
    )
