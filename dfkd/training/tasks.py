"""What training does differently per task, owned by one object each.

A dataset source or a model registration names its task (`dfkd.tasks`); `task_of` turns the name
into the object that holds the loss on labels, the distillation loss, the augmentation, the test
score and the synthetic validation set's targets, so no command compares task names.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from dfkd.data.pipeline import InputFormat, random_crop_flip
from dfkd.errors import UsageError
from dfkd.tasks import CLASSIFICATION, SEGMENTATION

#: a batch's augmentation: (images, labels or masks, generator) -> the augmented pair
Augment = Callable[[torch.Tensor, Any, torch.Generator], tuple[torch.Tensor, Any]]
Scorer = Callable[[torch.nn.Module], dict[str, float]]
AUGMENT_MODES = ("auto", "crop-flip", "none")


class Task:
    """The per-task behaviour of training, distillation and scoring."""

    name: str
    #: the test score that ranks epochs (and names the bench's accuracy column)
    metric: str
    #: what that score is called in a table's title
    score_title: str
    #: images of the synthetic validation set when the user gives no --val-size (part of the
    #: cached set's key: a change makes every cached set stale)
    validation_images: int
    #: classes one validation image asks for (segmentation asks for a grid of them)
    classes_per_validation_image: int = 1
    #: Adam steps that invert each validation image when the user gives no --val-steps
    validation_steps: int = 60
    #: invert the validation images jittered and flipped and score the student on them
    #: low-passed, so that it is read on what the teacher's classes look like rather than on
    #: the teacher's own fine texture (docs/architecture.md, "Validation without data"); off
    #: where a target is placed per pixel, which a shifted or flipped image would no longer fit
    validation_smoothed: bool = False
    label_smoothing: bool = True
    #: its networks answer per pixel: they take images of any size and answer at that size
    #: (fully convolutional), so an export is traced at the crop they trained on
    per_pixel: bool = False
    #: `dfkd quantize` can make an INT8 file of it: its calibration and check are per image
    quantizable: bool = True

    def supervised_loss(
        self, logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0
    ) -> torch.Tensor:
        raise NotImplementedError

    def distillation_loss(
        self, loss_fn: Any, s_logits: torch.Tensor, t_logits: torch.Tensor, temperature: float
    ) -> torch.Tensor:
        """``loss_fn`` (a registered KD loss on (N, K) rows) applied to this task's rows."""
        return loss_fn(s_logits, t_logits, T=temperature)

    def augmentation(self, mode: str, source: Any) -> Augment | None:
        raise NotImplementedError

    def scorer(
        self,
        source: Any,
        split: tuple[torch.Tensor, torch.Tensor],
        fmt: InputFormat,
        accelerator: Any,
        batch_size: int | None = None,
    ) -> Scorer:
        """The scores of a model on one labelled split, ``batch_size`` images per forward (None:
        the task's own default)."""
        raise NotImplementedError

    def validation_targets(self, size: int, num_classes: int, image_size: int) -> torch.Tensor:
        """The class asked of each validation image (of each pixel for segmentation), cycling
        through the classes: a smaller set's are a larger one's first."""
        raise NotImplementedError

    def labels_for_teacher(self, labels: Any, data: Any, source: Any, name: str) -> Any:
        """The labels of ``--eval-data`` ``name`` (the dataset ``data``) in the terms of the
        teacher's ``source``, or a UsageError when they cannot be."""
        raise NotImplementedError

    def validation_unit(self, num_classes: int) -> int:
        """The smallest number of validation images that asks for every class equally often."""
        return num_classes // math.gcd(num_classes, self.classes_per_validation_image)


class Classification(Task):
    name = CLASSIFICATION
    metric = "top1"
    score_title = "accuracy"
    validation_images = 500
    validation_steps = 200
    validation_smoothed = True

    def supervised_loss(
        self, logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0
    ) -> torch.Tensor:
        return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)

    def augmentation(self, mode: str, source: Any) -> Augment | None:
        """``auto`` pads by 4, crops and flips colour 32-pixel images (the CIFAR recipe) only."""
        if mode == "none" or (mode == "auto" and (source.channels, source.image_size) != (3, 32)):
            return None
        return lambda images, labels, rng: (
            random_crop_flip(images, padding=4, generator=rng),
            labels,
        )

    def scorer(self, source, split, fmt, accelerator, batch_size=None) -> Scorer:
        from dfkd.training.inputs import evaluate

        images, labels = split
        sized = {"batch_size": batch_size} if batch_size else {}
        return lambda model: evaluate(model, images, labels, fmt, accelerator, **sized)

    def validation_targets(self, size: int, num_classes: int, image_size: int) -> torch.Tensor:
        return torch.arange(size) % num_classes

    def labels_for_teacher(self, labels, data, source, name):
        """Folder labels are indices into the folder's sorted class names: mapped by name onto
        the teacher's classes where it has names, else taken as the teacher's indices."""
        if set(data.classes) <= set(source.classes):
            return torch.tensor([source.classes.index(c) for c in data.classes])[labels]
        if len(data.classes) > len(source.classes):
            raise UsageError(
                f"--eval-data {name} has {len(data.classes)} classes; the teacher has "
                f"{len(source.classes)}. Name its class folders after the teacher's classes."
            )
        return labels


class Segmentation(Task):
    name = SEGMENTATION
    metric = "miou"
    score_title = "mIoU"
    validation_images = 64  # K logits a pixel: fewer images hold as many predictions
    classes_per_validation_image = 4  # block_targets' 2 × 2 grid of classes
    label_smoothing = False
    per_pixel = True
    quantizable = False

    def supervised_loss(
        self, logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0
    ) -> torch.Tensor:
        from dfkd.training.segmentation import pixel_cross_entropy

        return pixel_cross_entropy(logits, labels)

    def distillation_loss(self, loss_fn, s_logits, t_logits, temperature) -> torch.Tensor:
        """The same loss on every pixel, averaged over pixels."""
        from dfkd.training.segmentation import pixel_rows

        return loss_fn(pixel_rows(s_logits), pixel_rows(t_logits), T=temperature)

    def augmentation(self, mode: str, source: Any) -> Augment | None:
        """A random ``image_size`` crop and flip of image and mask together, as DFAD's reference
        trains."""
        if mode == "none":
            return None
        from dfkd.training.segmentation import crop_flip_pairs

        return lambda images, masks, rng: crop_flip_pairs(images, masks, source.image_size, rng)

    def scorer(self, source, split, fmt, accelerator, batch_size=None) -> Scorer:
        from dfkd.training.segmentation import evaluate_segmentation

        images, masks = split
        sized = {"batch_size": batch_size} if batch_size else {}
        return lambda model: evaluate_segmentation(
            model, images, masks, fmt, accelerator, source.num_classes, **sized
        )

    def validation_targets(self, size: int, num_classes: int, image_size: int) -> torch.Tensor:
        from dfkd.training.segmentation import block_targets

        return block_targets(size, num_classes, image_size)

    def labels_for_teacher(self, labels, data, source, name):
        if data.task != SEGMENTATION or data.num_classes != source.num_classes:
            raise UsageError(
                f"--eval-data {name} needs image/mask pairs of the teacher's "
                f"{source.num_classes} classes."
            )
        return labels


TASKS = {task.name: task for task in (Classification(), Segmentation())}


def task_of(name: str | None) -> Task:
    """The task object of a task name (a source's ``task``, a model registration's ``task=``, a
    weights sidecar's ``task``: one written before sidecars named it is a classifier's)."""
    name = name or CLASSIFICATION
    try:
        return TASKS[name]
    except KeyError:
        raise UsageError(
            f"Unknown task '{name}'; dfkd trains {' and '.join(TASKS)} networks."
        ) from None


def check_augment(mode: str) -> None:
    if mode not in AUGMENT_MODES:
        raise UsageError(f"--augment must be auto, crop-flip or none, not '{mode}'.")
