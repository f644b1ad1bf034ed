"""dfkd-plugin-cmi: Contrastive Model Inversion. Torch-free: registers a record only."""

from dfkd.api import default_preset, hookimpl
from dfkd_plugin_cmi.options import CMIOptions

# The reference's CIFAR-10 wrn40_2 -> wrn16_1 scripts, scratch_cmi and adv_cmi
# (docs/methods/cmi.md#loop-and-hyperparameters); adv_cmi continues from a pre-inverted image set
# given as -o init_images=folder:PATH.
_CIFAR10 = {
    "epochs": 200,
    "batch_size": 128,
    "synthesis_batch_size": 256,
    "ep_steps": 400,
    "kd_steps": 400,
    "g_steps": 200,
    "lr_g": 1e-3,
    "adv": 0.5,
    "bn": 1.0,
    "oh": 1.0,
    "cr": 0.8,
    "cr_T": 0.1,
    "T": 20.0,
    "lr": 0.1,
    "nz": 256,
    "ngf": 64,
}
_CIFAR10_ADV = _CIFAR10 | {"epochs": 40, "ep_steps": 2000, "kd_steps": 2000, "oh": 0.5}

# Found by benchmark runs on the CPU; see the README. Many small rounds (64 images, 15 steps each,
# from a fresh generator) make a more diverse pool than fewer large ones for the same time, lr
# 0.05 keeps T = 20 KD on confident images stable, and 50 epochs fill half the 10-minute budget.
_FASHION_MNIST = {
    "epochs": 50,
    "batch_size": 128,
    "synthesis_batch_size": 64,
    "ep_steps": 100,
    "kd_steps": 25,
    "g_steps": 15,
    "lr_g": 0.02,
    "adv": 0.5,
    "bn": 1.0,
    "oh": 1.0,
    "cr": 0.8,
    "cr_T": 0.1,
    "T": 20.0,
    "lr": 0.05,
    "nz": 64,
    "ngf": 8,
    "head_dim": 64,
    "n_negatives": 1024,
    "flip": False,
}

#: a run of seconds on a tiny dataset: what the method contract starts from
#: (docs/plugins.md#the-smoke-preset)
SMOKE = {
    "epochs": 2,
    "ep_steps": 4,
    "kd_steps": 2,
    "g_steps": 3,
    "batch_size": 16,
    "synthesis_batch_size": 8,
    "nz": 16,
    "ngf": 8,
    "head_dim": 16,
    "bank_size": 64,
    "n_negatives": 12,
}


@hookimpl
def register_methods(register):
    register(
        "cmi",
        "dfkd_plugin_cmi.synthesizer:CMISynthesizer",
        "Re-initialised generator per batch with a contrastive loss; student learns from the pool",
        paper="Fang et al., Contrastive Model Inversion for Data-Free Knowledge Distillation, "
        "IJCAI 2021",
        options=CMIOptions,
        presets={
            "cifar10": _CIFAR10,
            "cifar10-adv": _CIFAR10_ADV,
            "fashion-mnist": _FASHION_MNIST,
            "default": default_preset(_FASHION_MNIST),
            "smoke": SMOKE,
        },
    )
