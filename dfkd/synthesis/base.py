"""The Synthesizer: what a data-free method is, to the shared loop.

The loop calls `synthesize()` (craft samples from the teacher; returns a `SynthesisResult`), then
`kd_steps` times `sample()` (one student batch) and `student_loss()`. Everything a method keeps
between calls (generator, optimisers, pool, memory, private random generators) goes through
`state_dict()` so a killed run resumes exactly. docs/plugins.md is the contract in full.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dfkd.data.pipeline import InputFormat, denormalize, normalize
from dfkd.synthesis.pool import ImagePool


@dataclass
class SynthesisResult:
    """What one `synthesize()` call hands the loop: the images to show in ``samples.png`` (in
    [0, 1], or None when the round made none to show) and scalar logs for ``metrics.jsonl``."""

    images: torch.Tensor | None
    logs: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images is not None and (
            not isinstance(self.images, torch.Tensor) or self.images.dim() != 4
        ):
            shape = tuple(getattr(self.images, "shape", ()))
            raise TypeError(f"SynthesisResult.images must be an (N, C, H, W) tensor, not {shape}")
        self.logs = {name: float(value) for name, value in self.logs.items()}


@dataclass
class SynthesisContext:
    """What a synthesizer may use: the frozen teacher, the student, the inputs each expects, the
    run's processes and folder, and where its randomness and datasets come from."""

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
    #: the pixel size the student expects (None: any size, so it takes the teacher's)
    student_size: int | None = None
    seed: int = 0
    #: what the teacher predicts: "classification" (logits (B, K)) or "segmentation" (logits
    #: (B, K, H, W)); a method registered with tasks= sees only the tasks it lists
    task: str = "classification"
    #: the run's identity, for methods that keep files beside the teacher (records, embeddings)
    run_info: dict[str, Any] = field(default_factory=dict)
    #: opens a dataset by name with the run's --data-root and plugin set
    dataset_opener: Callable[[str], Any] | None = None

    @property
    def process_index(self) -> int:
        return self.accelerator.process_index if self.accelerator else 0

    @property
    def num_processes(self) -> int:
        return self.accelerator.num_processes if self.accelerator else 1

    @property
    def student_input(self) -> InputFormat:
        """How a normalised, teacher-sized batch becomes the student's input."""
        return InputFormat(self.mean, self.std, self.student_size)

    def to_student(self, x: torch.Tensor) -> torch.Tensor:
        """Fit a normalised batch at the teacher's size to the student's input size."""
        return self.student_input.fit(x)

    def student_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The student's float32 logits on a normalised, teacher-sized batch (under autocast)."""
        with self.autocast():
            return self.student(self.to_student(x)).float()

    def autocast(self) -> Any:
        return self.accelerator.autocast() if self.accelerator else contextlib.nullcontext()

    def normalize(self, images01: torch.Tensor) -> torch.Tensor:
        return normalize(images01, self.mean, self.std)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        return denormalize(x, self.mean, self.std).clamp(0, 1)

    def rng(self, salt: int, device: torch.device | str | None = None) -> torch.Generator:
        """A private random generator that depends only on (seed, process, salt).

        A method that draws from its own generators (rather than the global one, which the loop
        checkpoints) must return their ``get_state()`` from ``state_dict`` so a resume continues
        the same stream; distinct salts give independent streams."""
        device = torch.device(device) if device is not None else self.device
        seed = (self.seed * 1_000_003 + self.process_index * 7919 + salt) % 2**63
        return torch.Generator(device=device).manual_seed(seed)

    def open_dataset(self, name: str) -> Any:
        """A dataset source opened as the run opens its own (same --data-root, same plugins)."""
        if self.dataset_opener is not None:
            return self.dataset_opener(name)
        from dfkd.data import open_dataset

        return open_dataset(name)

    @property
    def images_dir(self) -> Path | None:
        return self.run_dir / "images" if self.run_dir else None

    def image_pool(self, seed: torch.Tensor | None = None) -> ImagePool:
        """This process's pool in the run's images directory (a shard of it in a multi-process
        run, so the processes never write the same chunk)."""
        return ImagePool(self.images_dir, seed=seed, shard=self.process_index)


class Synthesizer:
    """Base class of every method's synthesizer; ``Synthesizer(ctx, options)`` builds one."""

    #: True when the method keeps its samples in an ImagePool (its images are the transfer set)
    uses_pool = False

    def __init__(self, ctx: SynthesisContext, options: Any) -> None:
        self.ctx = ctx
        self.options = options
        self.teacher = ctx.teacher
        self.student = ctx.student

    def synthesize(self) -> SynthesisResult:
        """Craft new samples; return the images to show and the round's logs."""
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
