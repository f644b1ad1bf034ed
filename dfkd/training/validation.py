"""Judging a student without data: its agreement with the teacher on a fixed synthetic set.

The set is made once per teacher, from a fixed seed, by inverting the teacher (DeepInversion's
priors: each image optimised from noise so the teacher calls it its assigned class, with the
teacher's BatchNorm statistics matched where it has any, a little smoothness, and for a classifier
random shifts and flips), and kept beside the teacher's weights. A classifier's set is kept
low-passed: the fine texture of an inverted image is the teacher's own, and students that learned
the task agree with the teacher on what is left. Every method distilled from that teacher is then
scored on the same images, which none of them trains on: top-1 agreement with the teacher and the
mean KL(teacher || student).
docs/architecture.md says why inverted images rather than a method's own samples. A segmentation
teacher is asked for a grid of classes per image, and agreement is counted per pixel.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from dfkd.data.pipeline import InputFormat
from dfkd.errors import DfkdError
from dfkd.fileio import held_lock, sha256_of, write_atomic
from dfkd.tasks import CLASSIFICATION
from dfkd.training.tasks import task_of

#: the set's recipe; a change makes every cached set stale (its key includes these)
SIZE = task_of(CLASSIFICATION).validation_images  # default images (--val-size), per task
LR = 0.1
SEED = 20261201
TV_WEIGHT = 1e-3
#: where the task smooths its set (Task.validation_smoothed): DeepInversion's jitter, in pixels,
#: at each step, and the factor the finished images are scaled down by and back up
JITTER = 2
LOW_PASS = 2
#: images inverted together (in the key too): memory grows with the chunk, not the set (WRN-40-2
#: held 5.8 GB inverting 500 at once), and the BatchNorm prior still sees many classes a batch
CHUNK = 50

#: seconds a run may spend making the default set before its first epoch: a teacher that would
#: take longer on the machine at hand (WRN-40-2 on two CPU cores: a quarter of an hour) gets a
#: smaller set instead, said in one line; --val-size and --val-steps ask for more and are kept
BUDGET_SECONDS = 60.0
#: the smallest set the budget may cut to: fewer images per class and one image moves agreement
#: by whole points; fewer Adam steps leave the images close to the noise they start from
MIN_PER_CLASS = 5
MIN_STEPS = 10
#: steps timed on the first chunk (after one untimed step: first-call allocations, autotuning)
PROBE_STEPS = 3


@dataclass
class ValidationSet:
    """Images in [0, 1] at the teacher's size and the teacher's logits on them, with the Adam
    steps that inverted them (None: images not made by inversion)."""

    images: torch.Tensor
    teacher_logits: torch.Tensor
    steps: int | None = None


class Progress(Protocol):
    """What a run is told while its validation set is found or made (a training reporter)."""

    def validation_set(self, line: str) -> None:
        """The set the run is scored on, said once before it is made (or as it is read)."""

    def validation_progress(self, done: int, total: int) -> None:
        """After each chunk: images made so far, of the set's."""


def default_size(task: str) -> int:
    return task_of(task).validation_images


def default_steps(task: str) -> int:
    return task_of(task).validation_steps


def recipe(task: str) -> str:
    """What the set's images are besides their number and steps (part of the cached set's key)."""
    smoothing = f"-jitter{JITTER}-lowpass{LOW_PASS}" if task_of(task).validation_smoothed else ""
    return f"{LR}-{SEED}-{TV_WEIGHT}-{CHUNK}{smoothing}"


def _fingerprint(weights: Path, inputs: str, size: int, steps: int, task: str) -> str:
    return f"{sha256_of(weights)[:16]}-{inputs}-{size}-{steps}-{recipe(task)}"


def _inputs_key(
    fmt: InputFormat, num_classes: int, channels: int, image_size: int, task: str
) -> str:
    """What the set's images and the teacher's logits on them depend on besides the weights and
    the recipe: the normalisation the images were inverted through (a corrected --mean/--std
    makes another set), their shape, the classes and the task."""
    described = f"{fmt.mean}|{fmt.std}|{fmt.size}|{num_classes}|{channels}|{image_size}|{task}"
    return hashlib.sha256(described.encode()).hexdigest()[:12]


def cache_path(weights: Path) -> Path:
    return weights.with_name(weights.name.removesuffix(".safetensors") + ".valset.safetensors")


def validation_set(
    teacher: torch.nn.Module,
    weights: Path,
    fmt: InputFormat,
    num_classes: int,
    channels: int,
    image_size: int,
    fallback_dir: Path,
    size: int | None = None,
    steps: int | None = None,
    task: str = CLASSIFICATION,
    progress: Progress | None = None,
) -> ValidationSet:
    """The teacher's validation set: read from beside its weights, else made and kept there (or in
    ``fallback_dir`` when that folder cannot be written). ``size`` and ``steps`` left None are
    the defaults, cut to what the teacher inverts within `BUDGET_SECONDS` on the machine at
    hand; the set made so is kept as the one those defaults ask for, so later runs of the
    teacher read it rather than time it again. Runs compare on one set only when they share its
    size and steps (``len(images)`` and ``steps`` of the result)."""
    wanted = (size or default_size(task), default_steps(task) if steps is None else steps)
    fitted = size is None or steps is None
    inputs = _inputs_key(fmt, num_classes, channels, image_size, task)
    key = _fingerprint(weights, inputs, *wanted, task)
    places = (cache_path(weights), fallback_dir / "valset.safetensors")
    found = _read_cached(places, key, fitted)
    if found is None:
        # runs of one teacher started together (a bench's cells) make the set once; the others
        # wait and read it (nobody waits where that folder cannot be written)
        with held_lock(cache_path(weights).with_suffix(".lock"), required=False):
            found = _read_cached(places, key, fitted)  # made by another run while this one waited
            if found is None:
                made = _make_within_budget(
                    teacher, fmt, num_classes, channels, image_size, size, steps, task, progress
                )
                made_key = _fingerprint(weights, inputs, len(made.images), made.steps, task)
                _keep(made, places, made_key, key)
                return made
    if progress is not None:
        progress.validation_set(f"{_describe(found[0], wanted)}, read from {found[1]}")
    return found[0]


def _make_within_budget(
    teacher: torch.nn.Module,
    fmt: InputFormat,
    num_classes: int,
    channels: int,
    image_size: int,
    size: int | None,
    steps: int | None,
    task: str,
    progress: Progress | None,
) -> ValidationSet:
    """The set, its ``size`` or ``steps`` that are None cut to `BUDGET_SECONDS` as timed on the
    first chunk; said in one line before it is made."""
    wanted = (size or default_size(task), default_steps(task) if steps is None else steps)
    made_size, made_steps = wanted
    estimate = None
    if size is None or steps is None:
        first = _targets(min(CHUNK, made_size), num_classes, image_size, task)
        seconds = _seconds_per_image_step(teacher, fmt, first, channels, image_size, task)
        estimate = seconds * made_size * made_steps
        if estimate > BUDGET_SECONDS:
            made_size, made_steps = _fit_budget(
                seconds, num_classes, task, *wanted, size is None, steps is None
            )
    if progress is not None:
        progress.validation_set(_describe_made(made_size, made_steps, wanted, estimate))
    return make_validation_set(
        teacher,
        fmt,
        num_classes,
        channels,
        image_size,
        made_size,
        made_steps,
        task=task,
        progress=progress.validation_progress if progress is not None else None,
    )


def _keep(made: ValidationSet, places: tuple[Path, ...], key: str, wanted: str) -> None:
    """Write the set to the first of ``places`` that takes it, under its own ``key`` and the
    ``wanted`` key it was made for (the defaults' key, for a set the budget cut)."""
    from safetensors.torch import save_file

    tensors = {"images": made.images, "teacher_logits": made.teacher_logits}
    metadata = {"key": key, "wanted": wanted, "steps": str(made.steps)}
    for place in places:
        try:
            write_atomic(place, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
            return
        except (DfkdError, OSError):
            continue


def _read_cached(
    places: tuple[Path, ...], key: str, fitted: bool
) -> tuple[ValidationSet, Path] | None:
    """The first of ``places`` that holds the set made for ``key`` (or, where the budget may
    cut the set, the one made when ``key`` was asked for), and where; damaged or foreign files
    are passed over (and made again by the caller)."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    for place in places:
        if place.is_file():
            try:
                with safe_open(str(place), "pt") as f:
                    meta = f.metadata() or {}
                if meta.get("key") == key or (fitted and meta.get("wanted") == key):
                    tensors = load_file(str(place))
                    steps = int(meta["steps"])
                    return ValidationSet(tensors["images"], tensors["teacher_logits"], steps), place
            except (SafetensorError, OSError, KeyError, ValueError):
                pass
    return None


def _describe(made: ValidationSet, wanted: tuple[int, int]) -> str:
    line = f"validation set: {len(made.images)} images × {made.steps} steps"
    if (len(made.images), made.steps) != wanted:
        line += f" (cut from {wanted[0]} × {wanted[1]} to the {BUDGET_SECONDS:g} s budget)"
    return line


def _describe_made(size: int, steps: int, wanted: tuple[int, int], estimate: float | None) -> str:
    """The one line naming the set the run is scored on, and why it is not the one asked for:
    runs compare only on one set."""
    line = f"validation set: {size} images × {steps} steps"
    if (size, steps) != wanted:
        return (
            f"{line}, not {wanted[0]} × {wanted[1]}: that would take ~{_duration(estimate or 0)} "
            f"to invert here, over the {BUDGET_SECONDS:g} s budget (--val-size and --val-steps "
            "choose; agreement compares across runs of one set only)"
        )
    if estimate is not None:
        line += f", inverted from the teacher (~{_duration(estimate)})"
    return line


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{max(seconds, 1):.0f} s"


def _fit_budget(
    seconds_per_image_step: float,
    num_classes: int,
    task: str,
    size: int,
    steps: int,
    fit_size: bool,
    fit_steps: bool,
) -> tuple[int, int]:
    """The largest set made within `BUDGET_SECONDS`: fewer images first, classes kept balanced,
    down to `MIN_PER_CLASS` images a class; then fewer steps, down to `MIN_STEPS`. Only what
    the user left unset is cut."""
    affordable = BUDGET_SECONDS / seconds_per_image_step  # image-steps
    if fit_size:
        kind = task_of(task)
        per_image = kind.classes_per_validation_image
        unit = kind.validation_unit(num_classes)  # images holding each class alike
        floor = math.ceil(MIN_PER_CLASS * num_classes / per_image / unit) * unit
        fitting = int(affordable // max(steps, 1)) // unit * unit
        size = min(size, max(floor, fitting))
    if fit_steps:
        steps = min(steps, max(MIN_STEPS, int(affordable // size)))
    return size, steps


def _targets(size: int, num_classes: int, image_size: int, task: str) -> torch.Tensor:
    return task_of(task).validation_targets(size, num_classes, image_size)


@contextlib.contextmanager
def _inverting(teacher: torch.nn.Module, bn_prior: bool) -> Iterator[list[Any]]:
    """The teacher in eval mode with BatchNorm hooks (none without ``bn_prior``), restored after."""
    from dfkd.synthesis.bn_hooks import attach_bn_hooks

    hooks = attach_bn_hooks(teacher) if bn_prior else []
    was_training = teacher.training
    teacher.eval()
    try:
        yield hooks
    finally:
        for hook in hooks:
            hook.remove()
        teacher.train(was_training)


def _invert(
    teacher: torch.nn.Module,
    fmt: InputFormat,
    hooks: list[Any],
    targets: torch.Tensor,
    channels: int,
    image_size: int,
    steps: int,
    rng: torch.Generator,
    task: str,
    smoothed: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One chunk: images asked to be ``targets``, from noise drawn from ``rng`` (which also draws
    the jitter where the set is ``smoothed``, and then the images returned are low-passed), and
    the teacher's logits on them. TV₂ is one norm over the whole batch: its pull on each image
    shrinks with the batch as √n where the class term's does as n, so it is weighted for the
    chunk to pull as it did on the task's default set made in one batch."""
    from dfkd.synthesis.augment import jitter_flip
    from dfkd.synthesis.losses import bn_statistics, tv_l2

    tv_weight = TV_WEIGHT * math.sqrt(default_size(task) / len(targets))
    device = next(teacher.parameters()).device
    pixels = torch.rand(len(targets), channels, image_size, image_size, generator=rng).to(device)
    logit_pixels = torch.logit(pixels.clamp(0.02, 0.98)).requires_grad_(True)
    targets = targets.to(device)
    optimizer = torch.optim.Adam([logit_pixels], lr=LR)
    with torch.enable_grad():
        for _ in range(steps):
            x = fmt.from_pixels(torch.sigmoid(logit_pixels))
            if smoothed:
                x = jitter_flip(x, JITTER, generator=rng)
            loss = F.cross_entropy(teacher(x).float(), targets) + tv_weight * tv_l2(x)
            if hooks:
                loss = loss + bn_statistics(hooks)
            optimizer.zero_grad(set_to_none=True)
            loss.backward(inputs=[logit_pixels])
            optimizer.step()
    images = torch.sigmoid(logit_pixels.detach())
    if smoothed:
        images = low_pass(images, LOW_PASS)
    with torch.no_grad():
        logits = teacher(fmt.from_pixels(images)).float().cpu()
    return images.cpu(), logits


def low_pass(images: torch.Tensor, factor: int) -> torch.Tensor:
    """``images`` scaled down ``factor`` times (antialiased) and back up to their size."""
    size = images.shape[-2:]
    small = F.interpolate(images, scale_factor=1 / factor, mode="bilinear", antialias=True)
    return F.interpolate(small, size=size, mode="bilinear", align_corners=False).clamp(0, 1)


def _seconds_per_image_step(
    teacher: torch.nn.Module,
    fmt: InputFormat,
    targets: torch.Tensor,
    channels: int,
    image_size: int,
    task: str,
) -> float:
    """What one image's Adam step costs here: `PROBE_STEPS` steps on the first chunk, timed."""
    smoothed = task_of(task).validation_smoothed
    with _inverting(teacher, bn_prior=True) as hooks:
        for steps in (1, PROBE_STEPS):  # the last one timed
            started = time.perf_counter()
            rng = torch.Generator().manual_seed(SEED)
            _invert(teacher, fmt, hooks, targets, channels, image_size, steps, rng, task, smoothed)
        return (time.perf_counter() - started) / (PROBE_STEPS * len(targets))


def make_validation_set(
    teacher: torch.nn.Module,
    fmt: InputFormat,
    num_classes: int,
    channels: int,
    image_size: int,
    size: int = SIZE,
    steps: int | None = None,
    bn_prior: bool = True,
    task: str = CLASSIFICATION,
    chunk: int = CHUNK,
    progress: Callable[[int, int], None] | None = None,
    smoothed: bool | None = None,
) -> ValidationSet:
    """Invert the teacher into ``size`` images, classes balanced, ``chunk`` at a time, each
    chunk optimised on its own (``steps`` Adam steps, None: the task's default) from noise drawn
    in turn from one CPU generator seeded ``SEED``:
    the same set however often it is made, and a smaller set is a larger one's start.
    ``progress(done, size)`` follows each chunk. (``bn_prior=False`` leaves out the
    BatchNorm-statistics term and ``smoothed`` other than the task's own (None) sets the jitter
    and low-pass, for the benchmarks' comparisons of designs.)"""
    steps = default_steps(task) if steps is None else steps
    smoothed = task_of(task).validation_smoothed if smoothed is None else smoothed
    targets = _targets(size, num_classes, image_size, task)
    rng = torch.Generator().manual_seed(SEED)
    images, logits = [], []
    with _inverting(teacher, bn_prior) as hooks:
        for start in range(0, size, chunk):
            part = targets[start : start + chunk]
            x, t = _invert(
                teacher, fmt, hooks, part, channels, image_size, steps, rng, task, smoothed
            )
            images.append(x)
            logits.append(t)
            if progress is not None:
                progress(start + len(part), size)
    return ValidationSet(torch.cat(images), torch.cat(logits), steps)


@torch.no_grad()
def agreement(
    model: torch.nn.Module,
    valset: ValidationSet,
    fmt: InputFormat,
    accelerator: Any,
    batch_size: int = 500,
) -> dict[str, float]:
    """Top-1 agreement with the teacher (%), its Cohen's kappa and mean KL(teacher || model) on
    the set, per image for a classifier and per pixel for a segmentation network."""
    was_training = model.training
    model.eval()
    agree, kl, total = 0.0, 0.0, 0
    classes = valset.teacher_logits.shape[1]
    s_answers = torch.zeros(classes, dtype=torch.long)
    t_answers = torch.zeros(classes, dtype=torch.long)
    for start in range(0, len(valset.images), batch_size):
        x = fmt.from_pixels(valset.images[start : start + batch_size]).to(accelerator.device)
        t = valset.teacher_logits[start : start + batch_size].to(accelerator.device)
        with accelerator.autocast():
            s = model(x).float()
        agree += (s.argmax(1) == t.argmax(1)).sum().item()
        kl += F.kl_div(F.log_softmax(s, 1), F.log_softmax(t, 1), log_target=True, reduction="sum")
        total += t.numel() // t.shape[1]
        s_answers += torch.bincount(s.argmax(1).flatten().cpu(), minlength=classes)
        t_answers += torch.bincount(t.argmax(1).flatten().cpu(), minlength=classes)
    model.train(was_training)
    top = int(s_answers.argmax())
    scores = {
        "agree": 100.0 * agree / total,
        "val_kl": float(kl) / total,
        # the share of the set on the student's commonest class, and the teacher's share of
        # that class: a student answering one class for everything shows here (guard.py)
        "val_top_class": 100.0 * s_answers[top].item() / total,
        "val_top_class_teacher": 100.0 * t_answers[top].item() / total,
    }
    # Cohen's kappa: agreement beyond what the two answer counts alone give. A student that
    # answers the teacher's commonest class for everything agrees on that class's share of the
    # set and scores 0; undefined where the teacher and student both answer one class throughout
    expected = float((s_answers.double() / total) @ (t_answers.double() / total))
    if expected < 1.0:
        scores["val_kappa"] = (agree / total - expected) / (1.0 - expected)
    return scores
