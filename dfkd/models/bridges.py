"""``timm:<name>`` and ``torchvision:<name>``: any model of those libraries as a dfkd model.

The library's model object is kept as it is, parameter names included, so weights trained with
the library (or the reference benchmark's ImageNet teachers, which are torchvision models) load
unchanged. Only its class is swapped for a subclass that adds ``FeatureClassifier``'s
``forward(x, return_features)``; a wrapper module would have prefixed every key. The subclass is
made once per architecture; such a model is saved as a state dict, not pickled whole.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Iterable

from torch import Tensor, nn

from dfkd.errors import UsageError
from dfkd.models.base import FeatureClassifier


class _TimmFeatures(FeatureClassifier):
    """timm splits every model into ``forward_features`` and ``forward_head``; with
    ``pre_logits=True`` the head stops right before its classifier."""

    def logits_and_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        spatial = self.forward_features(x)
        return self.forward_head(spatial), self.forward_head(spatial, pre_logits=True)


class _TorchvisionFeatures(FeatureClassifier):
    """torchvision has no common split, so the input of the final linear layer is caught with a
    forward pre-hook that lives only for the call."""

    _architecture: type[nn.Module]
    head_name: str

    def logits_and_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        caught: list[Tensor] = []
        head = self.get_submodule(self.head_name)
        handle = head.register_forward_pre_hook(lambda _module, args: caught.append(args[0]))
        try:
            logits = self._architecture.forward(self, x)
        finally:
            handle.remove()
        return logits, caught[-1]


@functools.cache
def _adopting_class(mixin: type, architecture: type[nn.Module]) -> type[nn.Module]:
    return type(architecture.__name__, (mixin, architecture), {"_architecture": architecture})


def _adopt(model: nn.Module, mixin: type, num_classes: int, in_channels: int) -> nn.Module:
    model.__class__ = _adopting_class(mixin, type(model))
    model.num_classes, model.in_channels, model.input_size = num_classes, in_channels, None
    return model


def _unknown(library: str, name: str, known: Iterable[str]) -> UsageError:
    message = f"Unknown {library} model '{name}'."
    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.6)
    if close:
        message += " Did you mean " + " or ".join(f"'{library}:{c}'" for c in close) + "?"
    return UsageError(message)


def _require(library: str, arg: str | None) -> str:
    if not arg:
        raise UsageError(f"Name the {library} model after the colon, e.g. '{library}:resnet18'.")
    return arg


def _timm_name(arg: str | None) -> str:
    """``arg`` if timm has such a model; otherwise the closest of its names (a cheap list)."""
    import timm

    name = _require("timm", arg)
    if not timm.is_model(name):
        raise _unknown("timm", name, timm.list_models())
    return name


def _torchvision_name(arg: str | None) -> str:
    """``arg`` if torchvision has such a classifier (not a detection or segmentation model)."""
    from torchvision import models

    name = _require("torchvision", arg)
    known = models.list_models(module=models)
    if name not in known:
        raise _unknown("torchvision", name, known)
    return name


def timm_model(
    num_classes: int = 10, in_channels: int = 3, *, arg: str | None = None, pretrained: bool = False
) -> nn.Module:
    """``timm.create_model(arg, ...)``; timm adapts the stem to ``in_channels`` itself."""
    import timm

    name = _timm_name(arg)
    model = timm.create_model(
        name, pretrained=pretrained, num_classes=num_classes, in_chans=in_channels
    )
    return _adopt(model, _TimmFeatures, num_classes, in_channels)


def _last_linear(model: nn.Module) -> str:
    """The classifier of a torchvision model is its last registered ``nn.Linear``."""
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not names:
        raise UsageError(
            f"torchvision model {type(model).__name__} has no linear classifier to read features "
            "from; use a timm: model instead."
        )
    return names[-1]


def torchvision_model(
    num_classes: int = 10, in_channels: int = 3, *, arg: str | None = None, pretrained: bool = False
) -> nn.Module:
    """``torchvision.models.get_model(arg, ...)``; its 1000-class head is replaced by a fresh one
    when ``num_classes`` differs."""
    from torchvision import models

    name = _torchvision_name(arg)
    if in_channels != 3:
        raise UsageError(
            f"torchvision:{name} takes 3-channel images, not {in_channels}; "
            f"timm:{name} can adapt its stem to other channel counts (in_chans)."
        )
    model = models.get_model(name, weights="DEFAULT" if pretrained else None)
    head_name = _last_linear(model)
    head = model.get_submodule(head_name)
    if head.out_features != num_classes:
        parent, _, child = head_name.rpartition(".")
        replacement = nn.Linear(head.in_features, num_classes, bias=head.bias is not None)
        setattr(model.get_submodule(parent), child, replacement)
    model.head_name = head_name
    return _adopt(model, _TorchvisionFeatures, num_classes, in_channels)


#: what `dfkd.models.check_model_name` calls to learn, without building a model, whether the
#: library has the one named after the colon
timm_model.check_name = _timm_name
torchvision_model.check_name = _torchvision_name
