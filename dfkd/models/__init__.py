"""The model zoo's front door: build any registered model by name.

Importing this package imports no torch; a model's module (and torch) load when it is built.
Every classifier's ``forward(x, return_features=False)`` returns logits, or
``(logits, features)`` with the penultimate vector; a segmentation model's (registered with
``task="segmentation"``) ``forward(x)`` returns per-pixel logits (B, K, H, W) at the input's size.
Every model carries ``num_classes``, ``in_channels`` and ``input_size`` (None when any size works).
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING

from dfkd.errors import UsageError

if TYPE_CHECKING:
    from torch import nn

    from dfkd.plugins import Plugins
    from dfkd.registry import Entry

__all__ = ["build_model", "check_model_name", "model_input_size"]


def _entry(name: str, plugins: Plugins | None) -> Entry:
    if plugins is None:
        from dfkd.plugins import get_plugins

        plugins = get_plugins()
    return plugins.models.get(name)


def build_model(
    name: str,
    num_classes: int,
    in_channels: int,
    *,
    plugins: Plugins | None = None,
    pretrained: bool = False,
) -> nn.Module:
    """Build ``name`` with fresh weights, or the library's pretrained ones where it has them.

    An unknown name raises UsageError with the closest registered names.
    """
    entry = _entry(name, plugins)
    kwargs: dict[str, object] = {"num_classes": num_classes, "in_channels": in_channels}
    if pretrained:
        if "pretrained" not in inspect.signature(entry.load()).parameters:
            raise UsageError(
                f"Model '{name}' has no pretrained weights to fetch; train it, or load a "
                "checkpoint, or use a timm: or torchvision: model."
            )
        kwargs["pretrained"] = True
    return entry.build(**kwargs)


def check_model_name(name: str, plugins: Plugins | None = None) -> None:
    """Refuse a model no registered one answers to, with the closest names: a misspelt zoo
    name, or a ``timm:``/``torchvision:`` name the library does not have, which its prefix
    entry accepts until the model is built (a factory's ``check_name`` asks the library)."""
    entry = _entry(name, plugins)
    prefix = entry.arg is not None or entry.name.endswith(":")
    check = getattr(entry.load(), "check_name", None) if prefix else None
    if check is not None:
        check(entry.arg)


def model_input_size(name: str, plugins: Plugins | None = None) -> int | None:
    """The image size in pixels the model expects (None: any), without building it."""
    return _entry(name, plugins).info.get("input_size")
