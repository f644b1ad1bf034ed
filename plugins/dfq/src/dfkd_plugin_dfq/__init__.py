"""DFQ (Choi et al., CVPR workshops 2020) as a dfkd plugin. Torch-free: it only registers the
method."""

from dfkd.api import default_preset, hookimpl
from dfkd_plugin_dfq.options import DFQOptions

#: the DataFree script for CIFAR-10 wrn40_2 → wrn16_1 (docs/methods/dfq.md#loop-and-hyperparameters)
CIFAR10 = {
    "epochs": 200,
    "ep_steps": 400,
    "kd_steps": 10,
    "g_steps": 1,
    "batch_size": 256,
    "lr": 0.1,
    "weight_decay": 1e-4,
    "T": 1.0,
    "generator": "large",
    "nz": 256,
    "ngf": 64,
    "lr_g": 1e-3,
    "bn": 1.0,
    "oh": 1.0,
    "adv": 1.0,
    "balance": 20.0,
}

#: LeNet-5-BN → LeNet-5-Half on Fashion-MNIST within 10 CPU minutes (README: how it was found)
FASHION_MNIST = {
    "epochs": 30,
    "ep_steps": 200,
    "kd_steps": 5,
    "g_steps": 1,
    "batch_size": 256,
    "lr": 0.1,
    "T": 1.0,
    "generator": "large",
    "nz": 128,
    "ngf": 16,
    "lr_g": 1e-2,
    "bn": 1.0,
    "oh": 1.0,
    "adv": 1.0,
    "balance": 5.0,
}

#: a run of seconds on a tiny dataset: what the method contract starts from
#: (docs/plugins.md#the-smoke-preset)
SMOKE = {"epochs": 2, "ep_steps": 4, "kd_steps": 2, "batch_size": 8, "nz": 8, "ngf": 4}


@hookimpl
def register_methods(register):
    register(
        "dfq",
        "dfkd_plugin_dfq.synthesizer:DFQSynthesizer",
        "Generator matching the teacher's BatchNorm statistics, adversarial to the student",
        paper="Choi et al., Data-Free Network Quantization with Adversarial Knowledge "
        "Distillation, CVPR Workshops 2020",
        options=DFQOptions,
        presets={
            "cifar10": CIFAR10,
            "fashion-mnist": FASHION_MNIST,
            "default": default_preset(FASHION_MNIST),
            "smoke": SMOKE,
        },
    )
