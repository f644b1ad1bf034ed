"""DFAD (Fang et al., 2019) as a dfkd plugin. Torch-free: it only registers the method."""

from dfkd.api import default_preset, hookimpl
from dfkd_plugin_dfad.options import DFADOptions

#: VainF's DFAD_cifar.py as run in its README (ResNet-34 → ResNet-18,
#: docs/methods/dfad.md#loop-and-hyperparameters); one
#: reference "epoch" is 50 iterations of (5 student steps, 1 generator step); `--scheduler`
#: divides both rates by 10 at epochs 100 and 200
CIFAR10 = {
    "epochs": 500,
    "ep_steps": 250,
    "kd_steps": 5,
    "g_steps": 1,
    "batch_size": 256,
    "lr": 0.1,
    "weight_decay": 5e-4,
    "schedule": "multistep",
    "milestones": (100, 200),
    "schedule_g": True,
    "generator": "a",
    "nz": 256,
    "ngf": 64,
    "lr_g": 1e-3,
    "beta1": 0.9,
    "adv": 1.0,
}

#: VainF's run_mnist.sh: LeNet-5 → LeNet-5-Half, GeneratorA with nz 100, no schedule
MNIST = {
    "epochs": 40,
    "ep_steps": 250,
    "kd_steps": 5,
    "g_steps": 1,
    "batch_size": 512,
    "lr": 0.01,
    "weight_decay": 1e-4,
    "schedule": "constant",
    "generator": "a",
    "nz": 100,
    "ngf": 64,
    "lr_g": 1e-3,
    "beta1": 0.9,
    "adv": 1.0,
}

#: LeNet-5 → LeNet-5-Half on Fashion-MNIST within 10 CPU minutes (README: how it was found)
FASHION_MNIST = {
    "epochs": 18,
    "ep_steps": 200,
    "kd_steps": 5,
    "g_steps": 1,
    "batch_size": 512,
    "lr": 0.01,
    "weight_decay": 1e-4,
    "schedule": "cosine",
    "schedule_g": True,
    "generator": "a",
    "nz": 100,
    "ngf": 16,
    "lr_g": 1e-3,
    "beta1": 0.9,
    "adv": 1.0,
}


#: VainF's DFAD_camvid_deeplab.py as its README runs it (DeepLabV3-ResNet-50 → DeepLabV3-
#: MobileNetV2, docs/methods/dfad.md#segmentation): GeneratorB at the teacher's 128-pixel
#: training crop, batch 64, 300 epochs of 50 × (5 student steps, 1 generator step), the
#: generator maximising log(1 + L1), and StepLR(100) on both players (milestones 100 and 200)
CAMVID = {
    "epochs": 300,
    "ep_steps": 250,
    "kd_steps": 5,
    "g_steps": 1,
    "batch_size": 64,
    "lr": 0.1,
    "weight_decay": 5e-4,
    "schedule": "multistep",
    "milestones": (100, 200),
    "gamma": 0.1,
    "schedule_g": True,
    "generator": "b",
    "nz": 256,
    "ngf": 64,
    "lr_g": 1e-3,
    "beta1": 0.9,
    "adv": 1.0,
    "adv_loss": "log_l1",
}

#: DFAD_nyu_deeplab.py: the CamVid script with weight decay 5e-5 and StepLR's γ 0.3
NYUV2 = CAMVID | {"weight_decay": 5e-5, "gamma": 0.3}


#: segnet_small → segnet_small_half on `dfkd make-scenes` (64 px, 1 channel) within about ten
#: CPU minutes: the segmentation scripts' game (GeneratorB, log(1 + L1), batch 64, SGD 0.1, 5
#: student steps per generator step) on a narrower generator, 12 epochs of 20 iterations, both
#: rates on one cosine (benchmarks/scenes_fmnist.py)
FASHION_MNIST_SCENES = CAMVID | {
    "epochs": 12,
    "ep_steps": 100,
    "schedule": "cosine",
    "milestones": (),
    "ngf": 32,
}

#: a run of seconds on a tiny dataset: what the method contract starts from
#: (docs/plugins.md#the-smoke-preset)
SMOKE = {
    "epochs": 2,
    "ep_steps": 4,
    "kd_steps": 2,
    "batch_size": 8,
    "nz": 8,
    "ngf": 4,
    "milestones": (),  # the defaults (100, 200) need 201 epochs
}

#: dfad-bn, dfkd's variant and not the paper's method: the adversarial game alone never pulls a
#: segmentation generator towards real images (its samples stay mid-grey where 78 % of the
#: Fashion-MNIST scenes' pixels are black), so the generator also matches the teacher's
#: BatchNorm statistics, as inversion methods (DeepInversion, Fast) and DFQ do
#: (docs/methods/dfad.md#dfad-bn)
BN_PRIOR = {"bn": 1.0}
DFAD_BN_PRESETS = {
    "default": default_preset(FASHION_MNIST),
    "default-segmentation": FASHION_MNIST_SCENES,
    "smoke": SMOKE,
    "camvid": CAMVID,
    "nyuv2": NYUV2,
    "fashion-mnist-scenes": FASHION_MNIST_SCENES,
}


@hookimpl
def register_methods(register):
    register(
        "dfad",
        "dfkd_plugin_dfad.synthesizer:DFADSynthesizer",
        "Adversarial L1 game: a generator seeks inputs where student and teacher logits differ",
        paper="Fang et al., Data-Free Adversarial Distillation, arXiv:1912.11006, 2019",
        options=DFADOptions,
        presets={
            "cifar10": CIFAR10,
            "mnist": MNIST,
            "fashion-mnist": FASHION_MNIST,
            "default": default_preset(FASHION_MNIST),
            # for a segmentation teacher: the segmentation scripts' game, the one measured
            "default-segmentation": FASHION_MNIST_SCENES,
            "smoke": SMOKE,
            "camvid": CAMVID,
            "nyuv2": NYUV2,
            "fashion-mnist-scenes": FASHION_MNIST_SCENES,
        },
        tasks=("classification", "segmentation"),
    )
    register(
        "dfad-bn",
        "dfkd_plugin_dfad.synthesizer:DFADSynthesizer",
        "dfkd's DFAD variant: the same game, the generator also matching the teacher's BN stats",
        paper="dfkd's variant of Fang et al. 2019 (the BN term of DeepInversion, Yin et al. 2020)",
        options=DFADOptions,
        presets={name: values | BN_PRIOR for name, values in DFAD_BN_PRESETS.items()},
        tasks=("classification", "segmentation"),
    )
