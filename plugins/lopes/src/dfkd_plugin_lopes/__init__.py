"""Lopes, Fenu & Starner 2017 as a dfkd plugin: the `lopes` method and `dfkd lopes record`.

Torch-free: it registers the method record and the command group; the work imports torch when
it runs.
"""

from dfkd.api import default_preset, hookimpl
from dfkd_plugin_lopes.options import LopesOptions

#: the reference's MNIST pipeline where the shared loop can express it
#: (docs/methods/lopes.md#loop-and-hyperparameters): 1000
#: Adam steps per batch of 64, 100 batches per class, T = 8; the student's Adam(1e-3) becomes
#: the loop's SGD with a cosine schedule, at the lr that kept the student alive on Fashion-MNIST
MNIST = {
    "epochs": 30,
    "warmup": 1,
    "ep_steps": 1000,
    "kd_steps": 10,
    "batch_size": 64,
    "synthesis_batch_size": 640,
    "pool_size": 64000,
    "g_steps": 1000,
    "lr_g": 0.07,
    "lr": 0.01,
    "T": 8.0,
}

#: LeNet-5 → LeNet-5-Half and hinton1200 → hinton800 on Fashion-MNIST in 1-1.5 CPU minutes:
#: 3000 images of 100 steps, reconstructed in the warm-up epoch, then 4 student epochs (README)
FASHION_MNIST = {
    "epochs": 5,
    "warmup": 1,
    "ep_steps": 300,
    "kd_steps": 50,
    "batch_size": 128,
    "synthesis_batch_size": 500,
    "pool_size": 3000,
    "g_steps": 100,
    "lr_g": 0.1,
    "lr": 0.01,
    "T": 8.0,
}

#: a run of seconds on a tiny dataset: what the method contract starts from
#: (docs/plugins.md#the-smoke-preset). The pool fills over both epochs (4 rounds of 10), so a
#: resumed run must reload the first epoch's images and continue both random streams.
SMOKE = {
    "epochs": 2,
    "ep_steps": 4,
    "kd_steps": 2,
    "batch_size": 8,
    "synthesis_batch_size": 10,
    "pool_size": 40,
    "g_steps": 3,
    "objective": "all_layers_dropout",
}


@hookimpl
def register_methods(register):
    register(
        "lopes",
        "dfkd_plugin_lopes.synthesizer:LopesSynthesizer",
        "Inputs reconstructed from the teacher's per-class activation records",
        paper="Lopes, Fenu, Starner, Data-Free Knowledge Distillation for Deep Neural Networks, "
        "NIPS-W 2017 (arXiv:1710.07535)",
        options=LopesOptions,
        presets={
            "mnist": MNIST,
            "fashion-mnist": FASHION_MNIST,
            "default": default_preset(FASHION_MNIST),
            "smoke": SMOKE,
        },
    )


@hookimpl
def register_commands(app, plugins):
    from dfkd_plugin_lopes.cli import add_commands

    add_commands(app, plugins)
