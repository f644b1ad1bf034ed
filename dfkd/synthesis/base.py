"""The Synthesizer: what a data-free method is, to the shared loop.

The loop calls `synthesize()` (craft samples from the teacher; returns images for display), then
`kd_steps` times `sample()` (one student batch) and `student_loss()`. Everything a method keeps
between calls (generator, optimisers, pool, memory) goes through `state_dict()` so a killed run
resumes exactly.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dfkd.data.pipeline import denormalize, normalize
from dfkd.synthesis.pool import ImagePool


@dataclass
class SynthesisContext:
    """What a synthesizer may use: the frozen teacher, the student, and the data's format."""

    teacher: torch.nn.Module
    student: torch.nn.Module  # unwrapped; the loop switches it back to train mode itself
    num_classes: int
    channels: int
    image_size: int  # the teacher's input size: synthesizers make images of this size
    mean: tuple[float, ...]
    std: tuple[float, ...]
    device: torch.device
    accelerator: Any = None
    run_dir: Path | None = None  # where a pool keeps its images (resumable, reusable)

    def autocast(self) -> Any:
        return self.accelerator.autocast() if self.accelerator else contextlib.nullcontext()

    def normalize(self, images01: torch.Tensor) -> torch.Tensor:
        return normalize(images01, self.mean, self.std)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        return denormalize(x, self.mean, self.std).clamp(0, 1)

    @property
    def images_dir(self) -> Path | None:
        return self.run_dir / "images" if self.run_dir else None

    def image_pool(self, seed: torch.Tensor | None = None) -> ImagePool:
        """This process's pool in the run's images directory (a shard of it in a multi-process
        run, so the processes never write the same chunk)."""
        shard = self.accelerator.process_index if self.accelerator else 0
        return ImagePool(self.images_dir, seed=seed, shard=shard)


class Synthesizer:
    """Base class of every method's synthesizer."""

    #: True when the method keeps its samples in an ImagePool (its images are the transfer set)
    uses_pool = False

    def __init__(self, ctx: SynthesisContext, options: Any) -> None:
        self.ctx = ctx
        self.options = options
        self.teacher = ctx.teacher
        self.student = ctx.student

    def synthesize(self) -> dict[str, torch.Tensor]:
        """Craft new samples; return {name: images in [0, 1]} for samples.png."""
        raise NotImplementedError

    def sample(self) -> torch.Tensor:
        """One normalised batch for the student, at the teacher's input size."""
        raise NotImplementedError

    def student_loss(
        self, s_logits: torch.Tensor, t_logits: torch.Tensor, step: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The student's KD loss; by default KL(t || s; T) * T^2."""
        from dfkd.synthesis.losses import kd_kl

        return kd_kl(s_logits, t_logits, T=self.options.T), {}

    def end_epoch(self, epoch: int) -> dict[str, float]:
        """Per-epoch schedule changes (e.g. an adversarial-weight ramp); returns metrics."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""

    def teacher_logits(self, x: torch.Tensor, **kwargs: Any) -> Any:
        with self.ctx.autocast():
            out = self.teacher(x, **kwargs)
        return out


def warn_without_batchnorm(teacher: torch.nn.Module, method: str, weight: float) -> None:
    """A BN-statistics prior needs BN layers; say so instead of silently dropping the term."""
    from dfkd.synthesis.bn_hooks import has_batchnorm

    if weight and not has_batchnorm(teacher):
        warnings.warn(
            f"{method}: the teacher has no BatchNorm layer, so the BN-statistics term "
            f"(weight {weight}) has nothing to match and is dropped. Use a teacher with "
            "BatchNorm (e.g. lenet5_bn) for this method's full prior.",
            stacklevel=2,
        )
