"""dfkd-plugin-deepinv: DeepInversion / ADI as a data-free method, and the `dfkd invert` command.

Torch-free: the entry point only registers records and the command; the synthesizer and the
inversion load torch when they are used.
"""

from dfkd.api import default_preset, hookimpl
from dfkd_plugin_deepinv.options import DeepInvOptions

PRESETS = {
    # DataFree's scripts/deepinv/deepinv_cifar10_wrn402_wrn161.sh
    # (docs/methods/deepinv.md#loop-and-hyperparameters).
    "cifar10": {
        "bn": 10.0,
        "oh": 1.0,
        "adv": 1.0,
        "tv": 0.001,
        "l2": 0.0,
        "g_steps": 1000,
        "lr_g": 0.1,
        "batch_size": 256,
        "synthesis_batch_size": 256,
        "lr": 0.1,
        "T": 20.0,
        "epochs": 200,
        "ep_steps": 400,
        "kd_steps": 400,
    },
    # lenet5_bn -> lenet5_half on Fashion-MNIST, sized for about 6 CPU minutes (README,
    # "Benchmarks"): short pixel optimisations at a higher LR, two pool batches per epoch and
    # 100 student steps after each; the loss weights and T stay the reference's.
    "fashion-mnist": {
        "epochs": 12,
        "ep_steps": 200,
        "kd_steps": 100,
        "g_steps": 80,
        "lr_g": 0.25,
        "batch_size": 128,
        "lr": 0.05,
        "T": 20.0,
    },
}
PRESETS["default"] = default_preset(PRESETS["fashion-mnist"])
# segnet_small -> segnet_small_half on `dfkd make-scenes` (64 px, 11 classes;
# benchmarks/scenes_fmnist.py, docs/segmentation.md): the Fashion-MNIST preset's rounds and pixel
# steps, batches of 64 scenes as DFAD's segmentation preset and KD on the scenes use, the
# per-pixel KL at KD's T 4 on the scenes (at T 20 the soft maps of 11 classes are nearly flat),
# and DFAD's 1,200 student steps, about 20 CPU minutes.
PRESETS["fashion-mnist-scenes"] = PRESETS["fashion-mnist"] | {
    "epochs": 6,
    "batch_size": 64,
    "lr": 0.05,
    "T": 4.0,
}
#: `default` for a segmentation teacher: the scenes preset, the one segmentation setting measured
#: (its T 20 for classifiers would flatten the per-pixel maps)
PRESETS["default-segmentation"] = PRESETS["fashion-mnist-scenes"]

#: a run of seconds on a tiny dataset: what the method contract starts from
#: (docs/plugins.md#the-smoke-preset)
PRESETS["smoke"] = {"epochs": 2, "ep_steps": 4, "kd_steps": 2, "g_steps": 3, "batch_size": 8}


@hookimpl
def register_methods(register):
    register(
        "deepinv",
        "dfkd_plugin_deepinv.synthesizer:DeepInvSynthesizer",
        "Pixels optimised against BatchNorm statistics, with the ADI competition term",
        paper="Yin et al., Dreaming to Distill: Data-free Knowledge Transfer via DeepInversion, "
        "CVPR 2020",
        options=DeepInvOptions,
        presets=PRESETS,
        tasks=("classification", "segmentation"),
    )


@hookimpl
def register_commands(app, plugins):
    from dfkd_plugin_deepinv.cli import add_invert_command

    add_invert_command(app, plugins)
