"""dfkd-plugin-nayer: NAYER, and the `dfkd nayer embed-labels` command. Torch-free: the entry
point registers a record and the command; the synthesizer loads torch when it is used."""

from dfkd.api import default_preset, hookimpl
from dfkd_plugin_nayer.options import NayerOptions

# nayer_100.sh (docs/methods/nayer.md#loop-and-hyperparameters), written for CIFAR-100. The same
# values for every published pair; CIFAR-10 differs only in g_steps (30 instead of 40).
_SCRIPT = {
    "warmup": 20,
    "ep_steps": 400,
    "kd_steps": 400,
    "batch_size": 512,
    "synthesis_batch_size": 400,
    "lr": 0.2,
    "T": 20.0,
    "bn": 10.0,
    "oh": 0.5,
    "adv": 1.33,
    "bn_mmt": 0.9,
    "lr_g": 4e-3,
    "g_life": 10,
    "g_loops": 2,
    "gwp_loops": 10,
    "ngf": 64,
    "le_emb_size": 1000,
    # the paper's CLIP label-text embeddings: refused without them unless -o embeddings=random
    "embeddings": "text",
}
G_STEPS = {"cifar10": 30, "cifar100": 40}
#: NAYER-100/200/300: the total epochs of nayer_{100,200,300}.sh
EPOCHS = {100: 120, 200: 220, 300: 320}


def _script_presets() -> dict[str, dict]:
    """cifar10 / cifar100 (NAYER-100) and <dataset>-nayer200 / -nayer300."""
    presets = {}
    for dataset, g_steps in G_STEPS.items():
        for budget, epochs in EPOCHS.items():
            name = dataset if budget == 100 else f"{dataset}-nayer{budget}"
            presets[name] = _SCRIPT | {"g_steps": g_steps, "epochs": epochs}
    return presets


# lenet5_bn -> lenet5_half, found by short benchmark runs on the CPU (README, "Benchmarks"): the
# script's loss weights, lr_g and g_life on a small trunk (ngf 16, noisy layers of 128), 100
# images and 20 steps per loop, two rounds per epoch of one loop (of four in the 3 warm-up epochs),
# and 100 student steps per epoch at lr 0.05 (T 20 is unstable at 0.1, as for CMI).
_FASHION_MNIST = {
    "epochs": 45,
    "warmup": 3,
    "ep_steps": 100,
    "kd_steps": 50,
    "batch_size": 128,
    "synthesis_batch_size": 100,
    "g_steps": 20,
    "g_loops": 1,
    "gwp_loops": 4,
    "g_life": 10,
    "lr_g": 4e-3,
    "lr": 0.05,
    "T": 20.0,
    "ngf": 16,
    "le_emb_size": 128,
}

# The `default` preset: the student learns only from the pool, and the pool, not the steps, is
# what holds it back on the demo pair. Distilled from scratch on one finished run's pool (about
# 10,800 images), a student reaches 80.3 % in 20 epochs and 82.3 % in 100; on three runs' pools
# together (32,400) it reaches 84.3 % in 40 (docs/methods/nayer.md#the-default-preset). So each
# round adds 400 images instead of 100, at 8 generator steps instead of 20 (the generator lives
# g_life epochs and starts each loop trained), and the student takes three times the steps to
# learn them: 83.94 +- 0.95 % against 82.08 +- 0.77 % over seeds 0-2, in DFQ's CPU time.
_LARGER_POOL = _FASHION_MNIST | {
    "synthesis_batch_size": 400,
    "g_steps": 8,
    "ep_steps": 300,
    "kd_steps": 150,
}

#: a run of seconds on a tiny dataset: what the method contract starts from
#: (docs/plugins.md#the-smoke-preset)
SMOKE = {
    "epochs": 2,
    "warmup": 1,
    "ep_steps": 4,
    "kd_steps": 2,
    "g_steps": 2,
    "g_loops": 1,
    "gwp_loops": 2,
    "g_life": 2,
    "batch_size": 16,
    "synthesis_batch_size": 12,
    "ngf": 8,
    "le_emb_size": 16,
    "le_size": 8,
    "embeddings": "random",  # no label-embedding file to make first
}

PRESETS = {
    **_script_presets(),
    "fashion-mnist": _FASHION_MNIST,
    "default": default_preset(_LARGER_POOL),
    "smoke": SMOKE,
}


@hookimpl
def register_methods(register):
    register(
        "nayer",
        "dfkd_plugin_nayer.synthesizer:NayerSynthesizer",
        "Noisy layers on label-text embeddings feed a generator re-created every few epochs; pool",
        paper="Tran et al., NAYER: Noisy Layer Data Generation for Efficient and Effective "
        "Data-free Knowledge Distillation, CVPR 2024",
        options=NayerOptions,
        presets=PRESETS,
    )


@hookimpl
def register_commands(app, plugins):
    from dfkd_plugin_nayer.cli import add_commands

    add_commands(app, plugins)
