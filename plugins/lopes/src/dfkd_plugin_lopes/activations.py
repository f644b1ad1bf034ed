"""Which teacher activations Lopes et al. record, how they are caught, and how a large layer is
shrunk before it becomes a node set of a spectral graph.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dfkd.api import UsageError

#: the name of the top recorded layer: the teacher's logits divided by the temperature
TOP = "logits"


class Capture:
    """Forward hooks that keep the outputs of named modules, and can replace what flows on.

    ``masks[name]`` (set by all_layers_dropout) multiplies that module's output before the next
    layer sees it, while ``outputs[name]`` keeps the unmasked pre-activation that the objective
    compares with its target.
    """

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        modules = dict(model.named_modules())
        missing = [n for n in names if n not in modules]
        if missing:
            raise UsageError(
                f"The teacher ({type(model).__name__}) has no module {', '.join(missing)}; "
                f"its Conv2d/Linear layers are {', '.join(conv_linear_names(model)) or 'none'}."
            )
        self.outputs: dict[str, Tensor] = {}
        self.masks: dict[str, Tensor] = {}
        self._handles = [modules[n].register_forward_hook(self._hook(n)) for n in names]

    def _hook(self, name: str) -> Any:
        def hook(module: nn.Module, inputs: Any, output: Tensor) -> Tensor | None:
            self.outputs[name] = output
            mask = self.masks.get(name)
            return None if mask is None else output * mask

        return hook

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def conv_linear_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]


@torch.no_grad()
def default_layers(model: nn.Module, example: Tensor) -> list[str]:
    """The Conv2d/Linear modules in the order the forward pass runs them, without the one whose
    output is the logits: that one is recorded as logits/T, the top layer.

    Their outputs are the pre-activations the reference records (LeNet-5: conv1, conv2, the
    120-unit conv, fc1; the MLPs: fc1, fc2), found without knowing the architecture.
    """
    seen: dict[str, Tensor] = {}  # in order of each module's last call

    def note(name: str, output: Tensor) -> None:
        seen.pop(name, None)
        seen[name] = output

    hooks = [
        m.register_forward_hook(lambda mod, inputs, output, n=n: note(n, output))
        for n, m in model.named_modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
    ]
    try:
        logits = model(example)
    finally:
        for hook in hooks:
            hook.remove()
    order = list(seen)
    if order:
        last = seen[order[-1]]
        if last is logits or (last.shape == logits.shape and torch.equal(last, logits)):
            order.pop()
    return order


@dataclass
class Downsample:
    """A fixed linear map from a layer's flattened pre-activations to at most ``units`` numbers.

    A convolution output (C, H, W) with C ≤ units is average-pooled to a g×g grid, the largest
    with C·g² ≤ units, which keeps its spatial layout; anything else too large is multiplied by
    a Gaussian random projection (entries N(0, 1/units)), which keeps distances on average.
    """

    kind: str  # "none", "pool" or "project"
    shape: tuple[int, ...]
    grid: int = 0
    projection: Tensor | None = None

    @property
    def units(self) -> int:
        if self.kind == "pool":
            return self.shape[0] * self.grid * self.grid
        if self.kind == "project":
            return self.projection.shape[0]
        return math.prod(self.shape)

    def __call__(self, flat: Tensor) -> Tensor:
        if self.kind == "pool":
            maps = flat.view(flat.shape[0], *self.shape)
            return F.adaptive_avg_pool2d(maps, self.grid).flatten(1)
        if self.kind == "project":
            return flat @ self.projection.T
        return flat

    def to(self, device: torch.device) -> Downsample:
        projection = None if self.projection is None else self.projection.to(device)
        return Downsample(self.kind, self.shape, self.grid, projection)


def plan_downsample(shape: tuple[int, ...], units: int, generator: torch.Generator) -> Downsample:
    if math.prod(shape) <= units:
        return Downsample("none", shape)
    if len(shape) == 3 and shape[0] <= units:
        return Downsample("pool", shape, grid=max(1, math.isqrt(units // shape[0])))
    projection = torch.randn(units, math.prod(shape), generator=generator) / math.sqrt(units)
    return Downsample("project", shape, projection=projection)
