"""The zoo's segmentation models: per-pixel logits at the input's size, DFAD's reference pair with
the reference's parameter names, ASPP rates and padding, and their registrations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import dfkd.plugins
from dfkd.models import build_model
from dfkd.tasks import CLASSIFICATION, SEGMENTATION
from dfkd.weights import load_weights

# name -> (family, parameters for 11 classes on 3 channels)
SEGMENTATION_MODELS = {
    "deeplabv3_resnet50": ("deeplab", 39_636_299),
    "deeplabv3_mobilenetv2": ("deeplab", 5_111_307),
    "tv_deeplabv3_resnet50": ("torchvision", 39_636_299),
    "tv_deeplabv3_mobilenet_v3_large": ("torchvision", 11_022_907),
    "tv_lraspp_mobilenet_v3_large": ("torchvision", 3_219_838),
    "segnet_small": ("segnet", 334_542),
    "segnet_small_half": ("segnet", 84_482),
}
# The sizes DFAD reports for its CamVid pair (11 classes).
DFAD_PARAMETERS = {"deeplabv3_resnet50": 39.6e6, "deeplabv3_mobilenetv2": 5.11e6}


@pytest.fixture
def zoo(monkeypatch: pytest.MonkeyPatch) -> dfkd.plugins.Plugins:
    """Only the model zoo, so that no other package's models are counted."""
    monkeypatch.setattr(dfkd.plugins, "DEFAULT_PLUGINS", ("dfkd.models.plugin",))
    return dfkd.plugins.Plugins(autoload=False)


def _randomise_batchnorm(model: torch.nn.Module) -> None:
    """Statistics and affine parameters away from 0 and 1, so that eval-mode BN is not a near
    identity and a wrongly placed padding shows."""
    generator = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=generator) * 0.2)
            m.running_var.copy_(torch.rand(c, generator=generator) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=generator) + 0.5)
            m.bias.data.copy_(torch.rand(c, generator=generator) + 0.1)


def test_registrations(zoo: dfkd.plugins.Plugins) -> None:
    """Every segmentation entry is tested here and takes any size; no other entry claims the
    task."""
    segmenters = {e.name: e for e in zoo.models if e.info.get("task") == SEGMENTATION}
    assert set(segmenters) == set(SEGMENTATION_MODELS)
    for name, entry in segmenters.items():
        assert entry.summary
        assert entry.info["family"] == SEGMENTATION_MODELS[name][0]
        assert entry.info["input_size"] is None
    others = [e for e in zoo.models if e.name not in segmenters]
    assert others and all(e.info.get("task", CLASSIFICATION) == CLASSIFICATION for e in others)


def test_the_default_plugins_register_the_teacher_for_segmentation() -> None:
    models = dfkd.plugins.Plugins(autoload=False).models
    assert models.get("deeplabv3_resnet50").info["task"] == "segmentation"
    assert models.get("wrn40_2").info.get("task", CLASSIFICATION) != SEGMENTATION


@pytest.mark.parametrize("name", sorted(SEGMENTATION_MODELS))
def test_logits_at_the_input_size(zoo: dfkd.plugins.Plugins, name: str) -> None:
    """A tensor, not torchvision's dict, at a non-square size that no stride divides; two input
    channels make every model replace its stem."""
    model = build_model(name, num_classes=5, in_channels=2, plugins=zoo).eval()
    assert (model.num_classes, model.in_channels, model.input_size) == (5, 2, None)
    with torch.no_grad():
        out = model(torch.randn(1, 2, 65, 97))
    assert isinstance(out, torch.Tensor)
    assert out.shape == (1, 5, 65, 97)


@pytest.mark.parametrize("name", sorted(SEGMENTATION_MODELS))
def test_parameter_counts(zoo: dfkd.plugins.Plugins, name: str) -> None:
    model = build_model(name, num_classes=11, in_channels=3, plugins=zoo)
    count = sum(p.numel() for p in model.parameters())
    assert count == SEGMENTATION_MODELS[name][1]
    if name in DFAD_PARAMETERS:
        assert count == pytest.approx(DFAD_PARAMETERS[name], rel=0.01)


@pytest.mark.parametrize(
    "name, rates",
    [
        ("deeplabv3_resnet50", (12, 24, 32)),
        ("deeplabv3_mobilenetv2", (12, 24, 32)),
        ("tv_deeplabv3_resnet50", (12, 24, 36)),
    ],
)
def test_aspp_rates(zoo: dfkd.plugins.Plugins, name: str, rates: tuple[int, ...]) -> None:
    """DFAD's head dilates by 12, 24 and 32; torchvision's by 12, 24 and 36."""
    aspp = build_model(name, 11, 3, plugins=zoo).classifier[0]
    atrous = [branch[0] for branch in aspp.convs[1:4]]
    assert [(c.dilation, c.padding) for c in atrous] == [((r, r), (r, r)) for r in rates]
    assert aspp.project[3].p == 0.5


def test_mobilenet_strides_and_dilations() -> None:
    """Output stride 8; the dilations lag a stage: 64 channels d=1, 96 and 160 d=2, 320 d=4."""
    from dfkd.models.deeplab import deeplabv3_mobilenetv2

    blocks = list(deeplabv3_mobilenetv2(11).backbone.features)[1:]
    depthwise = [next(c for c in b.conv if getattr(c, "groups", 1) > 1) for b in blocks]
    widths = [b.conv[-1].num_features for b in blocks]
    assert widths == [16, 24, 24, 32, 32, 32, 64, 64, 64, 64, 96, 96, 96, 160, 160, 160, 320]
    strides = [c.stride[0] for c in depthwise]
    assert strides == [1, 2, 1, 2, 1, 1] + [1] * 11
    assert [c.dilation[0] for c in depthwise] == [1] * 10 + [2] * 6 + [4]
    assert all(b.dilation == c.dilation[0] for b, c in zip(blocks, depthwise, strict=True))
    convs = [m for b in blocks for m in b.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.padding == (0, 0) for c in convs)


def _bn(x: torch.Tensor, bn: torch.nn.BatchNorm2d) -> torch.Tensor:
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


def test_mobilenet_block_pads_its_input_before_the_expansion() -> None:
    """The reference pads the block's input by the dilation, so the expansion convolution, its BN
    and ReLU6 see the padding, and adds the unpadded input: a block computed that way by hand."""
    from dfkd.models.deeplab import deeplabv3_mobilenetv2

    torch.manual_seed(0)
    block = deeplabv3_mobilenetv2(11).backbone.features[12]  # 96 -> 96, dilation 2, residual
    _randomise_batchnorm(block)
    block.eval()
    expand, depthwise, project = block.conv[0], block.conv[3], block.conv[6]
    x = torch.randn(2, 96, 9, 11)

    def tail(y: torch.Tensor) -> torch.Tensor:
        y = F.conv2d(y, depthwise.weight, dilation=2, groups=depthwise.groups)
        y = F.relu6(_bn(y, block.conv[4]))
        return x + _bn(F.conv2d(y, project.weight), block.conv[7])

    with torch.no_grad():
        out = block(x)
        expanded = F.relu6(_bn(F.conv2d(F.pad(x, (2, 2, 2, 2)), expand.weight), block.conv[1]))
        by_hand = tail(expanded)
        # torchvision's order: expand, then pad the depthwise convolution's input with zeros
        zero_padded = F.pad(F.relu6(_bn(F.conv2d(x, expand.weight), block.conv[1])), (2, 2, 2, 2))
        conventional = tail(zero_padded)
    assert out.shape == x.shape
    torch.testing.assert_close(out, by_hand)
    assert not torch.allclose(out, conventional, atol=1e-3)


def _batchnorm_keys(prefix: str, c: int) -> dict[str, tuple[int, ...]]:
    shapes = {"weight": (c,), "bias": (c,), "running_mean": (c,), "running_var": (c,)}
    return {f"{prefix}.{k}": s for k, s in shapes.items()} | {f"{prefix}.num_batches_tracked": ()}


def _head_keys(c_in: int, num_classes: int) -> dict[str, tuple[int, ...]]:
    """The reference's DeepLabHead: ``classifier.0`` the ASPP (1x1 branch, three atrous branches,
    pooling branch with the pool at index 0, projection), then conv3x3, BN, ReLU, conv1x1."""
    aspp = "classifier.0"
    keys = {
        f"{aspp}.convs.0.0.weight": (256, c_in, 1, 1),
        **_batchnorm_keys(f"{aspp}.convs.0.1", 256),
    }
    for i in (1, 2, 3):
        keys |= {f"{aspp}.convs.{i}.0.weight": (256, c_in, 3, 3)}
        keys |= _batchnorm_keys(f"{aspp}.convs.{i}.1", 256)
    keys |= {
        f"{aspp}.convs.4.1.weight": (256, c_in, 1, 1),
        **_batchnorm_keys(f"{aspp}.convs.4.2", 256),
    }
    keys |= {
        f"{aspp}.project.0.weight": (256, 1280, 1, 1),
        **_batchnorm_keys(f"{aspp}.project.1", 256),
    }
    keys |= {"classifier.1.weight": (256, 256, 3, 3), **_batchnorm_keys("classifier.2", 256)}
    return keys | {
        "classifier.4.weight": (num_classes, 256, 1, 1),
        "classifier.4.bias": (num_classes,),
    }


def _reference_student_keys(num_classes: int) -> dict[str, tuple[int, ...]]:
    """Every key of DFAD's ``deeplabv3_mobilenet(num_classes)``: the IntermediateLayerGetter keeps
    MobileNetV2's ``features`` only (index 0 the stem, then one index per block, whose ``conv`` is
    dw, BN, ReLU6, pw, BN for expansion 1 and pw, BN, ReLU6, dw, BN, ReLU6, pw, BN otherwise)."""
    keys = {"backbone.features.0.0.weight": (32, 3, 3, 3)}
    keys |= _batchnorm_keys("backbone.features.0.1", 32)
    c_in, index = 32, 1
    for t, c, n in ((1, 16, 1), (6, 24, 2), (6, 32, 3), (6, 64, 4), (6, 96, 3), (6, 160, 3)) + (
        (6, 320, 1),
    ):
        for _ in range(n):
            p, hidden = f"backbone.features.{index}.conv", c_in * t
            if t == 1:
                keys |= {f"{p}.0.weight": (hidden, 1, 3, 3), **_batchnorm_keys(f"{p}.1", hidden)}
                keys |= {f"{p}.3.weight": (c, hidden, 1, 1), **_batchnorm_keys(f"{p}.4", c)}
            else:
                keys |= {f"{p}.0.weight": (hidden, c_in, 1, 1), **_batchnorm_keys(f"{p}.1", hidden)}
                keys |= {f"{p}.3.weight": (hidden, 1, 3, 3), **_batchnorm_keys(f"{p}.4", hidden)}
                keys |= {f"{p}.6.weight": (c, hidden, 1, 1), **_batchnorm_keys(f"{p}.7", c)}
            c_in, index = c, index + 1
    return keys | _head_keys(320, num_classes)


def _random_state(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    return {
        k: torch.tensor(3) if k.endswith("num_batches_tracked") else torch.randn(shape)
        for k, shape in shapes.items()
    }


def test_student_keys_are_exactly_the_reference(tmp_path) -> None:
    """A checkpoint of DFAD's student loads strictly through dfkd's loader, every key used."""
    from dfkd.models.deeplab import deeplabv3_mobilenetv2

    model = deeplabv3_mobilenetv2(11)
    expected = _reference_student_keys(11)
    assert len(expected) == 350
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == expected
    state = _random_state(expected)
    torch.save(state, tmp_path / "camvid-deeplabv3_mobilenet.pt")
    load_weights(model, tmp_path / "camvid-deeplabv3_mobilenet.pt")
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_teacher_keys_are_the_reference(tmp_path) -> None:
    """DFAD's teacher is torchvision's ResNet-50 under ``backbone`` (without avgpool and fc) and
    the reference head; a state dict with those names loads strictly."""
    from dfkd.models.deeplab import deeplabv3_resnet50

    model = deeplabv3_resnet50(11)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    spot = {
        "backbone.conv1.weight": (64, 3, 7, 7),
        "backbone.bn1.running_var": (64,),
        "backbone.layer1.0.downsample.0.weight": (256, 64, 1, 1),
        "backbone.layer3.5.bn2.num_batches_tracked": (),
        "backbone.layer4.0.conv2.weight": (512, 512, 3, 3),
        "backbone.layer4.2.conv3.weight": (2048, 512, 1, 1),
    }
    assert {k: shapes.get(k) for k in spot} == spot
    assert {k: v for k, v in shapes.items() if k.startswith("classifier.")} == _head_keys(2048, 11)
    assert {k.split(".")[0] for k in shapes} == {"backbone", "classifier"}
    assert not any(k.startswith(("backbone.fc", "backbone.avgpool")) for k in shapes)
    assert len(shapes) == 362
    torch.save(_random_state(shapes), tmp_path / "camvid-deeplabv3_resnet50.pt")
    load_weights(model, tmp_path / "camvid-deeplabv3_resnet50.pt")


def test_mobilenet_is_he_initialised_on_fan_in() -> None:
    """The reference's kaiming_normal_ defaults: std sqrt(2 / fan_in), not fan_out or
    PyTorch's default (std 1/sqrt(3 fan_in))."""
    from dfkd.models.deeplab import deeplabv3_mobilenetv2

    torch.manual_seed(0)
    weight = deeplabv3_mobilenetv2(11).backbone.features[17].conv[0].weight  # 160 -> 960
    assert weight.std().item() == pytest.approx((2 / 160) ** 0.5, rel=0.05)


@pytest.mark.parametrize(
    "name, architecture",
    [
        ("tv_deeplabv3_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large"),
        ("tv_lraspp_mobilenet_v3_large", "lraspp_mobilenet_v3_large"),
        ("tv_deeplabv3_resnet50", "deeplabv3_resnet50"),
    ],
)
def test_torchvision_models_keep_their_names_and_outputs(
    zoo: dfkd.plugins.Plugins, name: str, architecture: str
) -> None:
    """torchvision's checkpoints load without a prefix, and the logits are its ``out``."""
    from torchvision.models import segmentation

    torch.manual_seed(0)
    model = build_model(name, 5, 3, plugins=zoo).eval()
    kwargs = {} if architecture.startswith("lraspp") else {"aux_loss": False}
    factory = getattr(segmentation, architecture)
    original = factory(weights=None, weights_backbone=None, num_classes=5, **kwargs).eval()
    assert list(model.state_dict()) == list(original.state_dict())
    original.load_state_dict(model.state_dict())
    if name.endswith("resnet50"):
        return  # the names are the point; a ResNet-50 forward adds seconds and nothing else
    x = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        torch.testing.assert_close(model(x), original(x)["out"])


def test_small_segmenters() -> None:
    """The teacher is BN after every convolution, 0.3-0.6 M parameters; the student halves every
    width; both train (every parameter gets a gradient)."""
    from dfkd.models.segnet import segnet_small, segnet_small_half

    teacher, student = segnet_small(11, 1), segnet_small_half(11, 1)
    assert 0.3e6 <= sum(p.numel() for p in teacher.parameters()) <= 0.6e6
    for model in (teacher, student):
        layers = list(model.stem) + list(model.context)
        convs = [i for i, m in enumerate(layers) if isinstance(m, torch.nn.Conv2d)]
        assert all(isinstance(layers[i + 1], torch.nn.BatchNorm2d) for i in convs)
    widths = [
        [m.out_channels for m in net.modules() if isinstance(m, torch.nn.Conv2d)][:-2]
        for net in (teacher, student)
    ]
    assert widths[1] == [w // 2 for w in widths[0]]
    x = torch.randn(2, 1, 64, 64)
    target = torch.randint(0, 11, (2, 64, 64))
    for model in (teacher, student):
        F.cross_entropy(model(x), target).backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
