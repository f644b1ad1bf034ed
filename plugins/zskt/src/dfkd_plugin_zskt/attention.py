"""The attention-transfer term of the ZSKT paper, for any pair of convolutional networks.

ZSKT matches the spatial attention of the teacher's and the student's wide-ResNet groups. To
work with every model without naming layers, the maps are found by a probe forward: for each
spatial resolution the network produces (above 1×1), the module that produces it last is taken
as the end of that resolution's group. For a WRN that is each group's output (at the last
resolution, the final BN-ReLU after group 3); for LeNet-5 at 32 px it is the ReLU after each
convolution and each pooling (28, 14, 10 and 5 px). Teacher and student maps are paired by
resolution; resolutions only one of them has are ignored.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def resolution_group_ends(
    model: nn.Module, channels: int, image_size: int
) -> dict[tuple[int, int], nn.Module]:
    """{(height, width): the module whose output ends that resolution's group}.

    Modules that run more than once per forward (a shared ReLU) are skipped: a hook on them
    would not know which call it saw. The probe runs in eval mode so that it leaves BatchNorm
    running statistics untouched.
    """
    calls: list[tuple[nn.Module, tuple[int, ...]]] = []

    def record(module: nn.Module, inputs: Any, output: Any) -> None:
        if isinstance(output, Tensor):
            calls.append((module, tuple(output.shape)))

    handles = [m.register_forward_hook(record) for m in model.modules() if m is not model]
    was_training = model.training
    device = next(model.parameters()).device
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, channels, image_size, image_size, device=device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    counts: dict[int, int] = {}
    for module, _ in calls:
        counts[id(module)] = counts.get(id(module), 0) + 1
    ends: dict[tuple[int, int], nn.Module] = {}
    for module, shape in calls:
        if len(shape) == 4 and shape[2] * shape[3] > 1 and counts[id(module)] == 1:
            ends[(shape[2], shape[3])] = module  # later calls overwrite: the last one wins
    return ends


class FeatureCapture:
    """Keeps the latest output of each given module, in the graph when the forward has one."""

    def __init__(self, modules: list[nn.Module]) -> None:
        self.outputs: list[Tensor | None] = [None] * len(modules)
        self._handles = [m.register_forward_hook(self._hook_for(i)) for i, m in enumerate(modules)]

    def _hook_for(self, index: int) -> Any:
        def hook(module: nn.Module, inputs: Any, output: Tensor) -> None:
            self.outputs[index] = output

        return hook

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def attention_map(features: Tensor) -> Tensor:
    """a/‖a‖₂ with a = mean over channels of the squared activations, one row per sample."""
    a = features.float().pow(2).mean(dim=1).flatten(1)
    return F.normalize(a, dim=1)


def attention_loss(student_maps: list[Tensor], teacher_maps: list[Tensor]) -> Tensor:
    """Σ_l mean_i ‖a_t,i/‖a_t,i‖ − a_s,i/‖a_s,i‖‖₂ (the ZSKT paper's term, before β)."""
    return torch.stack(
        [
            (attention_map(s) - attention_map(t)).norm(dim=1).mean()
            for s, t in zip(student_maps, teacher_maps, strict=True)
        ]
    ).sum()


class AttentionTransfer:
    """Hooks on teacher and student at their shared resolutions; ``loss()`` after a forward of
    each (the shared loop runs the teacher, then the student, on the same batch)."""

    def __init__(
        self,
        teacher: nn.Module,
        student: nn.Module,
        channels: int,
        teacher_size: int,
        student_size: int,
    ) -> None:
        t_ends = resolution_group_ends(teacher, channels, teacher_size)
        s_ends = resolution_group_ends(student, channels, student_size)
        self.resolutions = sorted(set(t_ends) & set(s_ends), reverse=True)
        if not self.resolutions:
            raise ValueError(
                "attention transfer needs teacher and student feature maps of a common spatial "
                f"size; the teacher has {sorted(t_ends)}, the student {sorted(s_ends)}"
            )
        self.teacher = FeatureCapture([t_ends[r] for r in self.resolutions])
        self.student = FeatureCapture([s_ends[r] for r in self.resolutions])

    def loss(self) -> Tensor:
        return attention_loss(self.student.outputs, self.teacher.outputs)
