"""dfkd-plugin-fast: FastDFKD (Fast-2/5/10). Torch-free: registers a record only."""

from dfkd.api import default_preset, hookimpl
from dfkd_plugin_fast.options import FastOptions

# fast_cifar.sh (docs/methods/fast.md#loop-and-hyperparameters), written for CIFAR-100; CIFAR-10
# takes the same values ("change --dataset"). Everything but adv/oh and the step settings is shared.
_SCRIPT = {
    "epochs": 220,
    "warmup": 20,
    "ep_steps": 400,
    "kd_steps": 400,
    "batch_size": 256,
    "synthesis_batch_size": 256,
    "lr": 0.2,
    "T": 20.0,
    "bn": 10.0,
    "bn_mmt": 0.9,
    "nz": 256,
    "ngf": 64,
    "meta": "maml",
    "reset_l0": True,
}
# adv and oh per teacher: ResNet-34 -> ResNet-18, VGG-11 -> ResNet-18, WRN-40-2 -> any WRN student
TEACHERS = {
    "resnet34": {"adv": 1.33, "oh": 0.5},
    "vgg11": {"adv": 1.0, "oh": 0.5},
    "wrn40_2": {"adv": 1.1, "oh": 0.4},
}
# Fast-k: inner steps with their generator and latent rates
STEPS = {
    2: {"g_steps": 2, "lr_g": 5e-3, "lr_z": 0.015},
    5: {"g_steps": 5, "lr_g": 3e-3, "lr_z": 0.01},
    10: {"g_steps": 10, "lr_g": 2e-3, "lr_z": 0.01},
}


def _script_presets() -> dict[str, dict]:
    """cifar10 and cifar100 (Fast-10, WRN-40-2 teacher: the benchmark's pair), and
    <dataset>-<teacher>[-fast2|-fast5] for every published teacher and step setting."""
    presets = {}
    for dataset in ("cifar10", "cifar100"):
        presets[dataset] = _SCRIPT | _tuned_for("wrn40_2") | STEPS[10]
        for teacher in TEACHERS:
            for k, steps in STEPS.items():
                suffix = "" if k == 10 else f"-fast{k}"
                presets[f"{dataset}-{teacher}{suffix}"] = _SCRIPT | _tuned_for(teacher) | steps
    return presets


def _tuned_for(teacher: str) -> dict:
    """A published teacher's adv and oh, and its name, so that a run with another teacher says
    that they were not tuned for it."""
    return TEACHERS[teacher] | {"preset_teacher": teacher}


# lenet5_bn -> lenet5_half, found by short benchmark runs on the CPU (README, "Benchmarks"):
# Fast-5's rates on a small generator (nz 64, ngf 16), four rounds of 128 images per epoch, 200
# student steps per epoch at lr 0.05 (T 20 is unstable at 0.1, as for CMI), the script's loss
# weights; reset_l0's epoch (120 after warm-up) lies beyond the 40 epochs.
_FASHION_MNIST = {
    "epochs": 40,
    "warmup": 4,
    "ep_steps": 200,
    "kd_steps": 50,
    "batch_size": 128,
    "synthesis_batch_size": 128,
    "g_steps": 5,
    "lr_g": 3e-3,
    "lr_z": 0.01,
    "lr": 0.05,
    "T": 20.0,
    "bn": 10.0,
    "oh": 0.5,
    "adv": 1.33,
    "nz": 64,
    "ngf": 16,
}

#: a run of seconds on a tiny dataset: what the method contract starts from
#: (docs/plugins.md#the-smoke-preset)
SMOKE = {
    "epochs": 2,
    "warmup": 1,
    "ep_steps": 4,
    "kd_steps": 2,
    "g_steps": 2,
    "batch_size": 16,
    "synthesis_batch_size": 8,
    "nz": 16,
    "ngf": 8,
}

PRESETS = {
    **_script_presets(),
    "fashion-mnist": _FASHION_MNIST,
    "default": default_preset(_FASHION_MNIST),
    "smoke": SMOKE,
}


@hookimpl
def register_methods(register):
    register(
        "fast",
        "dfkd_plugin_fast.synthesizer:FastSynthesizer",
        "A meta-learned generator adapted in a few inner steps per batch (Fast-k); pool",
        paper="Fang et al., Up to 100x Faster Data-free Knowledge Distillation, AAAI 2022",
        options=FastOptions,
        presets=PRESETS,
    )
