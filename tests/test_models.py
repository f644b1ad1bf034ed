"""The model zoo: every model builds, runs, returns its penultimate features, and keeps the
reference benchmark's parameter names so its published teachers load unchanged."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import dfkd.plugins
from dfkd.errors import UsageError
from dfkd.models import build_model, model_input_size

# name -> (input size in pixels, penultimate feature width)
BUILT_INS = {
    "lenet5": (32, 84),
    "lenet5_half": (32, 42),
    "lenet5_bn": (32, 84),
    "hinton1200": (28, 1200),
    "hinton800": (28, 800),
    "wrn16_1": (32, 64),
    "wrn16_2": (32, 128),
    "wrn40_1": (32, 64),
    "wrn40_2": (32, 128),
    "resnet18": (32, 512),
    "resnet34": (32, 512),
    "vgg11": (32, 512),
}

# Parameter and buffer names of zju-vipa/DataFree datafree/models/classifiers/*.py, with the
# shapes they have for 10 classes (LeNet on 1-channel input, the others on 3 channels).
REFERENCE_KEYS = {
    "lenet5": {
        "features.0.weight": (6, 1, 5, 5),
        "features.0.bias": (6,),
        "features.3.weight": (16, 6, 5, 5),
        "features.3.bias": (16,),
        "features.6.weight": (120, 16, 5, 5),
        "features.6.bias": (120,),
        "fc.0.weight": (84, 120),
        "fc.0.bias": (84,),
        "fc.2.weight": (10, 84),
        "fc.2.bias": (10,),
    },
    "lenet5_half": {
        "features.0.weight": (3, 1, 5, 5),
        "features.3.weight": (8, 3, 5, 5),
        "features.6.weight": (60, 8, 5, 5),
        "fc.0.weight": (42, 60),
        "fc.2.weight": (10, 42),
    },
    "wrn16_1": {
        "conv1.weight": (16, 3, 3, 3),
        "block1.layer.0.bn1.weight": (16,),
        "block1.layer.1.conv2.weight": (16, 16, 3, 3),
        "block2.layer.0.convShortcut.weight": (32, 16, 1, 1),
        "block3.layer.1.bn2.running_var": (64,),
        "bn1.weight": (64,),
        "fc.weight": (10, 64),
    },
    "wrn40_2": {
        "conv1.weight": (16, 3, 3, 3),
        "block1.layer.0.bn1.running_mean": (16,),
        "block1.layer.0.conv1.weight": (32, 16, 3, 3),
        "block1.layer.0.convShortcut.weight": (32, 16, 1, 1),
        "block2.layer.5.bn2.num_batches_tracked": (),
        "block3.layer.5.conv2.weight": (128, 128, 3, 3),
        "bn1.running_var": (128,),
        "fc.weight": (10, 128),
        "fc.bias": (10,),
    },
    "resnet18": {
        "conv1.weight": (64, 3, 3, 3),
        "bn1.weight": (64,),
        "layer1.0.conv1.weight": (64, 64, 3, 3),
        "layer1.1.bn2.running_mean": (64,),
        "layer2.0.shortcut.0.weight": (128, 64, 1, 1),
        "layer2.0.shortcut.1.running_var": (128,),
        "layer4.1.conv2.weight": (512, 512, 3, 3),
        "linear.weight": (10, 512),
        "linear.bias": (10,),
    },
    "resnet34": {
        "layer3.5.conv2.weight": (256, 256, 3, 3),
        "layer4.0.shortcut.0.weight": (512, 256, 1, 1),
        "layer4.2.bn2.weight": (512,),
        "linear.weight": (10, 512),
    },
    "vgg11": {
        "block0.0.weight": (64, 3, 3, 3),
        "block0.0.bias": (64,),
        "block0.1.running_mean": (64,),
        "block1.0.weight": (128, 64, 3, 3),
        "block2.3.weight": (256, 256, 3, 3),
        "block2.4.weight": (256,),
        "block4.3.weight": (512, 512, 3, 3),
        "classifier.weight": (10, 512),
    },
}
REFERENCE_TOP_LEVEL = {
    "lenet5": {"features", "fc"},
    "lenet5_half": {"features", "fc"},
    "wrn16_1": {"conv1", "block1", "block2", "block3", "bn1", "fc"},
    "wrn40_2": {"conv1", "block1", "block2", "block3", "bn1", "fc"},
    "resnet18": {"conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "linear"},
    "resnet34": {"conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "linear"},
    "vgg11": {"block0", "block1", "block2", "block3", "block4", "classifier"},
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Batches of two gain nothing from intra-op threads, and on a shared, loaded machine their
    spinning made this file eight times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def zoo(monkeypatch: pytest.MonkeyPatch) -> dfkd.plugins.Plugins:
    """A fresh manager holding only the model zoo, so these tests see no other package's
    models and fail only for the zoo's own faults."""
    monkeypatch.setattr(dfkd.plugins, "DEFAULT_PLUGINS", ("dfkd.models.plugin",))
    return dfkd.plugins.Plugins(autoload=False)


def test_zoo_is_a_default_plugin() -> None:
    assert "dfkd.models.plugin" in dfkd.plugins.DEFAULT_PLUGINS


def test_every_registered_model_is_tested_here(zoo: dfkd.plugins.Plugins) -> None:
    """A model added to the zoo without a line in BUILT_INS fails here, not in a user's run
    (segmentation models in tests/test_segmentation_models.py)."""
    classifiers = {e.name for e in zoo.models if e.info["task"] == "classification"}
    assert classifiers == set(BUILT_INS) | {"timm:", "torchvision:"}
    for entry in zoo.models:
        assert entry.summary and entry.info["family"]


@pytest.mark.parametrize("in_channels, num_classes", [(1, 10), (1, 100), (3, 10), (3, 100)])
@pytest.mark.parametrize("name", sorted(BUILT_INS))
def test_builds_and_returns_features(
    zoo: dfkd.plugins.Plugins, name: str, in_channels: int, num_classes: int
) -> None:
    """Grey and colour data, 10 and 100 classes; the features must be exactly what the
    classifier consumes, since DAFL and CMI build their losses on them."""
    size, width = BUILT_INS[name]
    model = build_model(name, num_classes, in_channels, plugins=zoo)
    assert (model.num_classes, model.in_channels) == (num_classes, in_channels)
    assert model.input_size == model_input_size(name, zoo) == size
    x = torch.randn(2, in_channels, size, size)
    logits, features = model(x, return_features=True)
    assert logits.shape == (2, num_classes)
    assert features.shape == (2, width)
    model.eval()
    classifier = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        logits, features = model(x, return_features=True)
        assert torch.equal(model(x), logits)
        torch.testing.assert_close(classifier(features), logits)  # features feed the classifier


@pytest.mark.parametrize("name", sorted(REFERENCE_KEYS))
def test_reference_parameter_names(zoo: dfkd.plugins.Plugins, name: str) -> None:
    """Teachers trained by the reference benchmark load only if every key and shape matches."""
    in_channels = 1 if name.startswith("lenet") else 3
    state = build_model(name, 10, in_channels, plugins=zoo).state_dict()
    shapes = {key: tuple(value.shape) for key, value in state.items()}
    assert {key: shapes.get(key) for key in REFERENCE_KEYS[name]} == REFERENCE_KEYS[name]
    assert {key.split(".")[0] for key in state} == REFERENCE_TOP_LEVEL[name]


def test_lenet5_keys_are_exactly_the_reference() -> None:
    """LeNet-5's reference layout is small enough to pin completely: no extra key may creep in."""
    from dfkd.models.lenet import lenet5

    assert set(lenet5(10, 1).state_dict()) == set(REFERENCE_KEYS["lenet5"])


def test_lenet5_bn_has_batchnorm_after_each_convolution() -> None:
    from dfkd.models.lenet import lenet5_bn

    kinds = [type(m).__name__ for m in lenet5_bn(10, 1).features]
    assert [kinds[i + 1] for i, kind in enumerate(kinds) if kind == "Conv2d"] == ["BatchNorm2d"] * 3


@pytest.mark.parametrize("size", [(28, 28), (7, 9)])
def test_lenet_pooling_without_autograd_matches_max_pool2d(size: tuple[int, int]) -> None:
    from dfkd.models.lenet import MaxPool2x2

    x = torch.randn(4, 3, *size)
    with torch.no_grad():
        fast = MaxPool2x2()(x)
    assert torch.equal(fast, torch.nn.functional.max_pool2d(x, 2))
    channels_last = x.contiguous(memory_format=torch.channels_last).bfloat16()
    with torch.no_grad():
        assert torch.equal(
            MaxPool2x2()(channels_last), torch.nn.functional.max_pool2d(channels_last, 2)
        )


def test_lenet_pooling_with_autograd_is_max_pool2d() -> None:
    """Where the gradient matters the pooling is max_pool2d's: on a tie the whole gradient goes to
    one input (the strided maximum would split it)."""
    from dfkd.models.lenet import MaxPool2x2

    x = torch.zeros(2, 3, 8, 8, requires_grad=True)
    MaxPool2x2()(x).sum().backward()
    reference = torch.zeros(2, 3, 8, 8, requires_grad=True)
    torch.nn.functional.max_pool2d(reference, 2).sum().backward()
    assert torch.equal(x.grad, reference.grad)
    assert x.grad.max() == 1


def _with_max_pool2d(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of a LeNet that pools with nn.MaxPool2d, as LeNets were built before MaxPool2x2."""
    import copy

    from dfkd.models.lenet import MaxPool2x2

    plain = copy.deepcopy(model)
    for i, layer in enumerate(plain.features):
        if isinstance(layer, MaxPool2x2):
            plain.features[i] = torch.nn.MaxPool2d(kernel_size=2, stride=2)
    return plain


@pytest.mark.parametrize("name", ["lenet5", "lenet5_half", "lenet5_bn"])
def test_every_lenet_pools_with_maxpool2x2_and_loads_checkpoints_of_max_pool2d(name: str) -> None:
    from dfkd.models.lenet import MaxPool2x2

    torch.manual_seed(0)
    model = build_model(name, 10, 1)
    pools = [type(m) for m in model.modules() if isinstance(m, torch.nn.MaxPool2d)]
    assert pools == [MaxPool2x2, MaxPool2x2]
    plain = _with_max_pool2d(model)
    assert plain.state_dict().keys() == model.state_dict().keys()
    model.load_state_dict(plain.state_dict(), strict=True)
    x = torch.randn(8, 1, 32, 32)
    model.eval()
    plain.eval()
    with torch.no_grad():
        assert torch.equal(model(x), plain(x))
    assert torch.equal(model(x), plain(x))


def test_a_lenet_teacher_pools_without_max_pool2d_only_where_no_gradient_flows(monkeypatch) -> None:
    calls: list[bool] = []
    max_pool2d = torch.nn.functional.max_pool2d

    def counting(*args, **kwargs):
        calls.append(torch.is_grad_enabled())
        return max_pool2d(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "max_pool2d", counting)
    teacher = build_model("lenet5", 10, 1).eval().requires_grad_(False)
    x = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        teacher(x)
    assert calls == []
    teacher(x.requires_grad_())  # a generator step: the gradient reaches the images
    assert calls == [True, True]


def test_wrn_widening_shortcut_takes_the_preactivated_input() -> None:
    """The reference's quirk: a block that widens projects BN-ReLU(x), not x; a reference
    checkpoint computes something else if this differs."""
    from dfkd.models.wrn import wrn16_1

    block = wrn16_1(10, 3).block2.layer[0]
    seen: dict[str, torch.Tensor] = {}
    block.relu1.register_forward_hook(lambda _m, _args, out: seen.update(activated=out))
    block.convShortcut.register_forward_pre_hook(lambda _m, args: seen.update(projected=args[0]))
    block(torch.randn(2, 16, 8, 8))
    assert seen["projected"] is seen["activated"]


def test_vgg_pools_block3_only_at_64_pixels() -> None:
    """Tiny-ImageNet (64 px) gets pool3 and CIFAR (32 px) does not, so both reach block 4 at 4x4."""
    from dfkd.models.vgg import vgg11

    model = vgg11(10, 3)
    sizes: list[int] = []
    model.block4.register_forward_hook(lambda _m, _args, out: sizes.append(out.shape[-1]))
    model(torch.randn(2, 3, 32, 32))
    model(torch.randn(2, 3, 64, 64))
    assert sizes == [4, 4]


def test_timm_bridge(zoo: dfkd.plugins.Plugins) -> None:
    model = build_model("timm:test_resnet", 100, 1, plugins=zoo).eval()
    assert (model.num_classes, model.in_channels, model.input_size) == (100, 1, None)
    assert model_input_size("timm:test_resnet", zoo) is None
    with torch.no_grad():
        logits, features = model(torch.randn(2, 1, 32, 32), return_features=True)
        assert logits.shape == (2, 100) and features.ndim == 2
        torch.testing.assert_close(model.get_classifier()(features), logits)
    assert "fc.weight" in model.state_dict()  # timm's own names, no wrapper prefix


def test_torchvision_bridge(zoo: dfkd.plugins.Plugins) -> None:
    model = build_model("torchvision:resnet18", 10, 3, plugins=zoo).eval()
    assert (model.num_classes, model.in_channels, model.input_size) == (10, 3, None)
    with torch.no_grad():
        logits, features = model(torch.randn(2, 3, 32, 32), return_features=True)
        assert logits.shape == (2, 10) and features.shape == (2, 512)
        torch.testing.assert_close(model.fc(features), logits)
    assert model.state_dict()["fc.weight"].shape == (10, 512)
    assert not model.fc._forward_pre_hooks  # the capturing hook lives only for one call


@pytest.mark.parametrize(
    "name, in_channels, message",
    [
        ("wrn40-2", 3, "Did you mean 'wrn40_2'"),
        ("timm:", 3, "after the colon"),
        ("timm:test_resnat", 3, "Did you mean 'timm:test_resnet'"),
        ("torchvision:resnet81", 3, "Did you mean 'torchvision:resnet18'"),
        ("torchvision:resnet18", 1, "3-channel"),
    ],
)
def test_bad_requests_are_usage_errors(
    zoo: dfkd.plugins.Plugins, name: str, in_channels: int, message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        build_model(name, 10, in_channels, plugins=zoo)


def test_pretrained_needs_a_library_model(zoo: dfkd.plugins.Plugins) -> None:
    with pytest.raises(UsageError, match="no pretrained weights"):
        build_model("wrn40_2", 10, 3, plugins=zoo, pretrained=True)


def test_listing_the_zoo_imports_no_torch() -> None:
    """`dfkd --help` and `dfkd list-models` must stay fast: the zoo's names cost no torch import."""
    code = (
        "import sys, dfkd.plugins as p\n"
        "p.DEFAULT_PLUGINS = ('dfkd.models.plugin',)\n"
        "from dfkd.models import model_input_size\n"
        "assert model_input_size('wrn40_2', p.Plugins(autoload=False)) == 32\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
