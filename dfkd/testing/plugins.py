"""Plugin sets for tests: what a test sees is what it registers, never what happens to be
installed."""

from __future__ import annotations

from typing import Any

from dfkd import hookimpl
from dfkd.plugins import Plugins
from dfkd.testing.data import TinyDatasetPlugin


def make_plugins(*extra: tuple[object, str]) -> Plugins:
    """Built-ins, the tiny dataset and the given (plugin, name) pairs; nothing autoloaded."""
    plugins = Plugins(autoload=False, strict=True)
    plugins.register(TinyDatasetPlugin(), "tiny-dataset", dist="dfkd-testing")
    for plugin, name in extra:
        plugins.register(plugin, name, dist=name)
    return plugins


def method_plugin(name: str, factory: Any, summary: str, **info: Any) -> tuple[object, str]:
    """A plugin that registers one method, as ``make_plugins`` takes it: a test's own method
    without a class of hook boilerplate."""

    class OneMethod:
        @hookimpl
        def register_methods(self, register: Any) -> None:
            register(name, factory, summary, **info)

    return OneMethod(), f"dfkd-plugin-{name}"


def cpu_context(teacher: Any, student: Any, **fields: Any) -> Any:
    """A SynthesisContext on the CPU for a synthesizer's unit tests: 10 classes of 1-channel
    32 px images normalised by 0.5/0.5 unless ``fields`` say otherwise."""
    import torch

    from dfkd.synthesis.base import SynthesisContext

    defaults = {"num_classes": 10, "channels": 1, "image_size": 32, "mean": (0.5,), "std": (0.5,)}
    return SynthesisContext(
        teacher=teacher, student=student, device=torch.device("cpu"), **(defaults | fields)
    )
