"""Built-in plugin: the model zoo, registered by import string so that listing it needs no torch.

Each entry carries ``input_size`` (the pixels the model expects, None for any size),
``family`` and ``task`` in its info.
"""

from collections.abc import Callable

from dfkd import hookimpl
from dfkd.tasks import CLASSIFICATION, SEGMENTATION


@hookimpl
def register_models(register: Callable[..., None]) -> None:
    def zoo(
        name: str,
        factory: str,
        summary: str,
        input_size: int | None,
        family: str,
        task: str = CLASSIFICATION,
    ) -> None:
        info = {"input_size": input_size, "family": family, "task": task}
        register(name, f"dfkd.models.{factory}", summary, **info)

    def segmentation(name: str, factory: str, summary: str, family: str) -> None:
        """Segmentation models take any image size."""
        zoo(name, factory, summary, None, family, SEGMENTATION)

    zoo("lenet5", "lenet:lenet5", "LeNet-5 (LeCun 1998)", 32, "lenet")
    zoo("lenet5_half", "lenet:lenet5_half", "LeNet-5 with half the filters", 32, "lenet")
    zoo("lenet5_bn", "lenet:lenet5_bn", "LeNet-5 with BatchNorm", 32, "lenet")
    zoo("hinton1200", "mlp:hinton1200", "784-1200-1200 MLP (Hinton 2015)", 28, "mlp")
    zoo("hinton800", "mlp:hinton800", "784-800-800 MLP (Hinton 2015)", 28, "mlp")
    for depth, width, size in ((16, 1, "0.2M"), (16, 2, "0.7M"), (40, 1, "0.6M"), (40, 2, "2.2M")):
        summary = f"WRN-{depth}-{width} (Zagoruyko 2016), {size} params"
        zoo(f"wrn{depth}_{width}", f"wrn:wrn{depth}_{width}", summary, 32, "wrn")
    zoo("resnet18", "resnet:resnet18", "ResNet-18 (He 2016), CIFAR stem", 32, "resnet")
    zoo("resnet34", "resnet:resnet34", "ResNet-34 (He 2016), CIFAR stem", 32, "resnet")
    zoo("vgg11", "vgg:vgg11", "VGG-11 with BatchNorm (Simonyan 2015)", 32, "vgg")
    segmentation(
        "deeplabv3_resnet50",
        "deeplab:deeplabv3_resnet50",
        "DeepLabV3-ResNet-50 (Chen 2017), DFAD's teacher: output stride 8, ASPP 12/24/32",
        "deeplab",
    )
    segmentation(
        "deeplabv3_mobilenetv2",
        "deeplab:deeplabv3_mobilenetv2",
        "DeepLabV3-MobileNetV2, DFAD's student: output stride 8, ASPP 12/24/32",
        "deeplab",
    )
    for name, summary in (
        ("deeplabv3_resnet50", "torchvision's DeepLabV3-ResNet-50, ASPP 12/24/36"),
        ("deeplabv3_mobilenet_v3_large", "torchvision's DeepLabV3-MobileNetV3-Large"),
        ("lraspp_mobilenet_v3_large", "torchvision's LR-ASPP-MobileNetV3-Large (Howard 2019)"),
    ):
        segmentation(f"tv_{name}", f"deeplab:tv_{name}", summary, "torchvision")
    segmentation(
        "segnet_small", "segnet:segnet_small", "small CPU segmenter, 0.33M params", "segnet"
    )
    segmentation(
        "segnet_small_half", "segnet:segnet_small_half", "segnet_small at half width", "segnet"
    )
    zoo("timm:", "bridges:timm_model", "any timm model", None, "bridge")
    zoo("torchvision:", "bridges:torchvision_model", "any torchvision classifier", None, "bridge")
