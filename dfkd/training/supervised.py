"""`dfkd scratch` and `dfkd kd`: supervised training and vanilla KD over a stored dataset."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dfkd.data import open_dataset
from dfkd.data.pipeline import BatchLoader, InputFormat
from dfkd.errors import UsageError
from dfkd.optim import default_milestones, make_optimizer, make_scheduler
from dfkd.options import check_range
from dfkd.plugins import Plugins, get_plugins
from dfkd.training.guard import CollapseGuard, SlowDownState, SlowsDown
from dfkd.training.loop import Job, Loop, Outcome, Reporter, SilentReporter
from dfkd.training.recipes import scratch_recipe
from dfkd.training.session import Session, open_session
from dfkd.training.setup import (
    ModelSpec,
    build,
    check_recorded,
    default_weights_path,
    epoch_generator,
    load_teacher,
    publish_teacher,
    published_by,
    resume_options,
    seed_everything,
    weights_meta,
)
from dfkd.training.tasks import Augment, check_augment, task_of


@dataclass
class TrainConfig:
    """Options every training command shares; recorded in config.json."""

    dataset: str
    epochs: int = 200
    batch_size: int = 256
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"  # cosine | multistep (×0.1 at each milestone) | constant
    milestones: list[int] = field(default_factory=list)  # none: 60/75/90 % of the epochs
    augment: str = "auto"  # auto (crop+flip for colour 32 px data) | crop-flip | none
    seed: int = 0
    mixed_precision: str = "no"
    cpu: bool = False
    data_root: str | None = None
    download: bool = False
    out: str | None = None
    overwrite: bool = False
    log_with: str | None = None

    def __post_init__(self) -> None:
        """Refuse values that cannot train, as one line naming the flag, when the config is made:
        before the run directory exists (a zero batch size used to end in a traceback, a NaN
        rate in "loss became nan")."""
        for flag, value, bounds in self._ranges():
            check_range(flag, value, **bounds)
        check_augment(self.augment)

    def _ranges(self) -> list[tuple[str, Any, dict[str, float]]]:
        return [
            ("--epochs", self.epochs, {"ge": 1}),
            ("--batch-size", self.batch_size, {"ge": 1}),
            ("--lr", self.lr, {"gt": 0}),
            ("momentum", self.momentum, {"ge": 0, "lt": 1}),
            ("--weight-decay", self.weight_decay, {"ge": 0}),
        ]


@dataclass
class ScratchConfig(TrainConfig):
    """`dfkd scratch`'s options. The training options left at None take the values of the named
    ``recipe`` (dfkd/training/recipes.py), so that a flag overrides its recipe and config.json
    records the recipe together with every value the run actually used, milestones included."""

    model: str = "lenet5"
    # --set-default: the best weights replace the default teacher,
    # checkpoints/<dataset>-<model>.safetensors, even if another is there. Without it they
    # become the default only while there is none, or it is this run's (`publish_teacher`).
    set_default: bool = False
    recipe: str = "default"
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    schedule: str | None = None
    # Cross-entropy against 1 - s on the label and s spread evenly over the classes: a common way
    # to train the teachers users bring, and one that changes what their logits say
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        for name, value in scratch_recipe(self.recipe).items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        super().__post_init__()  # the ranges hold for the recipe's values as for the flags
        if self.schedule == "multistep" and not self.milestones:
            self.milestones = default_milestones(self.epochs)

    def _ranges(self) -> list[tuple[str, Any, dict[str, float]]]:
        return [*super()._ranges(), ("--label-smoothing", self.label_smoothing, {"ge": 0, "lt": 1})]


@dataclass
class KDConfig(TrainConfig):
    teacher: str = "lenet5"
    student: str = "lenet5_half"
    teacher_weights: str | None = None
    transfer_set: str | None = None  # None: the dataset's own train split
    alpha: float = 1.0
    beta: float = 0.0
    temperature: float = 1.0  # the reference vanilla_kd.py default; T^2 scales the gradient
    weight_decay: float = 1e-4
    kd_loss: str = "kd_kl"

    def _ranges(self) -> list[tuple[str, Any, dict[str, float]]]:
        return [
            *super()._ranges(),
            ("--temperature", self.temperature, {"gt": 0}),
            ("--alpha", self.alpha, {"ge": 0}),
            ("--beta", self.beta, {"ge": 0}),
        ]


def augmentation(cfg: TrainConfig, source: Any) -> Augment | None:
    """The training batches' augmentation (its task's, `dfkd.training.tasks`), or None."""
    return task_of(source.task).augmentation(cfg.augment, source)


class SupervisedJob(SlowsDown, Job):
    """Minibatch SGD over in-memory uint8 images; the loss decides scratch vs KD. It counts the
    student's answers on each epoch's last labelled batch, where the collapse guard reads a
    student fallen onto one class."""

    added_state = frozenset({"guard_counters"})  # a run checkpointed before the guard

    def __init__(
        self,
        accelerator: Any,
        model: torch.nn.Module,
        cfg: TrainConfig,
        images: torch.Tensor,
        labels: torch.Tensor | None,
        fmt: InputFormat,
        augment: Augment | None,
        loss_fn: Any,
    ) -> None:
        self.accelerator = accelerator
        self.cfg = cfg
        optimizer = make_optimizer(
            model.parameters(), "sgd", cfg.lr, cfg.momentum, cfg.weight_decay
        )
        self.scheduler = make_scheduler(optimizer, cfg.schedule, cfg.epochs, cfg.milestones)
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        self.loader = BatchLoader(
            images,
            labels,
            batch_size=cfg.batch_size,
            drop_last=len(images) >= cfg.batch_size,
            seed=cfg.seed,
            num_shards=accelerator.num_processes,
            shard_index=accelerator.process_index,
        )
        self.fmt, self.augment, self.loss_fn = fmt, augment, loss_fn
        self._batches: Any = None
        self._aug_gen: torch.Generator | None = None
        self.grad_clip = 0.0  # none unless the collapse guard turns it on
        self.last_batch_answers = torch.zeros(0, dtype=torch.long)

    def stateful(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "optimizer": self.optimizer,
            "scheduler": self.scheduler,
            "guard_counters": SlowDownState(self, clip=0.0),
        }

    def steps_per_epoch(self, epoch: int) -> int:
        return len(self.loader)

    def train_step(self, epoch: int, step: int) -> dict[str, float]:
        if step == 0:
            self.loader.epoch = epoch
            self._batches = iter(self.loader)
            self._aug_gen = epoch_generator(self.cfg.seed, epoch, salt=1)
        images, labels = next(self._batches)
        if self.augment is not None:
            images, labels = self.augment(images, labels, self._aug_gen)
        x = self.fmt.from_uint8(images).to(self.accelerator.device)
        y = labels.to(self.accelerator.device) if labels is not None else None
        self.model.train()
        logits = self.model(x)
        if y is not None and logits.dim() == 2 and step == len(self.loader) - 1:
            # a classifier's answers on the epoch's last batch, for the collapse guard
            classes = logits.shape[1]
            self.last_batch_answers = torch.cat(
                (
                    torch.bincount(logits.detach().argmax(1), minlength=classes),
                    torch.bincount(y, minlength=classes),
                )
            )
        loss, logs = self.loss_fn(logits, x, y)
        self.optimizer.zero_grad(set_to_none=True)
        self.accelerator.backward(loss)
        if self.grad_clip:
            self.accelerator.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        return {"loss": loss.item(), **logs}

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        self.scheduler.step()
        extras: dict[str, Any] = {"lr": self.optimizer.param_groups[0]["lr"]}
        answers, self.last_batch_answers = self.last_batch_answers, torch.zeros(0, dtype=torch.long)
        if answers.numel() and self.accelerator.num_processes > 1:
            answers = self.accelerator.reduce(answers, "sum")  # every process's guard alike
        if answers.numel():
            student, labels = answers.cpu().view(2, -1)
            top = int(student.argmax())
            extras["batch_top_class"] = round(100.0 * student[top].item() / student.sum().item(), 2)
            extras["batch_top_class_labels"] = round(
                100.0 * labels[top].item() / labels.sum().item(), 2
            )
        return extras


#: the student steps by which a supervised student must have left one class: lenet5_half
#: distilled at lr 0.1 from a WRN-16-1 teacher on the real images answered one class from its
#: second epoch (470 steps) on, where healthy runs leave it within their first epoch
PATIENCE_STEPS = 500


def _guard(source: Any, cfg: TrainConfig, steps_per_epoch: int) -> CollapseGuard:
    """The collapse guard of a supervised run, reading the student's last labelled batch."""
    return CollapseGuard(
        source.num_classes,
        patience=max(2, cfg.epochs // 5, math.ceil(PATIENCE_STEPS / max(1, steps_per_epoch))),
        advice="Try a lower learning rate (--lr) or another seed (--seed).",
        restart_detail="",
    )


def _session(
    cfg: TrainConfig,
    command: str,
    model_name: str,
    resume: str | None,
    source: Any,
    teacher: Path | None = None,
) -> Session:
    """The job's session: a new run recording ``cfg``, or the run ``resume`` names. A run with a
    ``teacher`` records its weights' sha256, and a resume checks it."""
    return open_session(
        command,
        dataclasses.asdict(cfg),
        model=model_name,
        dataset=cfg.dataset,
        out=cfg.out,
        overwrite=cfg.overwrite,
        resume=resume,
        seed=cfg.seed,
        mixed_precision=cfg.mixed_precision,
        cpu=cfg.cpu,
        log_with=cfg.log_with,
        teacher=teacher,
        source=source,
    )


def load_config(cls: type, resume: str, command: str, given: dict[str, Any] | None = None) -> Any:
    """The config a run recorded; ``given``: what the command line names beside --resume, which
    the run must have recorded."""
    options = resume_options(resume, command, given)
    check_recorded(cls, options, resume, required=given or ())
    return cls(**options)


def train_scratch(
    cfg: ScratchConfig,
    *,
    resume: str | None = None,
    reporter: Reporter | None = None,
    plugins: Plugins | None = None,
) -> Outcome:
    """Train ``cfg.model`` on the dataset's labels. Each best epoch's weights become the default
    teacher when, at that moment, there is none, it is this run's, or ``cfg.set_default`` says
    so; otherwise they stay in the run."""
    plugins = plugins or get_plugins()
    seed_everything(cfg.seed)  # the same initial weights in every process and every repeat
    source = open_dataset(cfg.dataset, cfg.data_root, cfg.download, plugins=plugins)
    task = task_of(source.task)
    if cfg.label_smoothing and not task.label_smoothing:
        raise UsageError(f"--label-smoothing is for classifiers; {source.name} is {task.name}.")
    model, spec = build(cfg.model, source, plugins)
    images, labels = source.load("train")
    test_images, test_labels = source.load("test")
    target = default_weights_path(source.name, cfg.model)
    with _session(cfg, "scratch", cfg.model, resume, source) as session:
        owner = str(session.run.path.resolve())  # named in the sidecar of each weights file
        fmt = InputFormat.of(source, spec.size)

        def cross_entropy(logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> Any:
            return task.supervised_loss(logits, y, cfg.label_smoothing), {}

        job = SupervisedJob(
            session.accelerator,
            model,
            cfg,
            images,
            labels,
            fmt,
            augmentation(cfg, source),
            cross_entropy,
        )

        def publish(best: Any, meta: dict[str, Any]) -> None:
            trained = session.accelerator.unwrap_model(job.model)
            publish_teacher(trained, target, meta, cfg.set_default)

        loop = Loop(
            session.accelerator,
            session.run,
            cfg.epochs,
            task.scorer(source, (test_images, test_labels), fmt, session.accelerator),
            weights_meta(spec, source, command="scratch", run=owner),
            role="model",
            reporter=reporter or SilentReporter(),
            on_best=publish,
            criterion=task.metric,
            guard=_guard(source, cfg, job.steps_per_epoch(0)),
        )
        outcome = session.fit(loop, job)
    outcome.extras["checkpoint"] = target if published_by(target, owner) else loop.best_path
    outcome.extras["default"] = target
    outcome.extras["run"] = session.run.path
    return outcome


def open_transfer_set(cfg: KDConfig, source: Any, plugins: Plugins) -> tuple[Any, bool]:
    """The images the student learns from, and whether their labels may be used."""
    if cfg.transfer_set in (None, "", source.name):
        return source, True
    transfer = open_dataset(cfg.transfer_set, cfg.data_root, cfg.download, plugins=plugins)
    if transfer.channels != source.channels:
        raise UsageError(
            f"Transfer set {cfg.transfer_set} has {transfer.channels}-channel images; the teacher "
            f"takes {source.channels} ({source.name})."
        )
    return transfer, False


def train_kd(
    cfg: KDConfig,
    *,
    resume: str | None = None,
    reporter: Reporter | None = None,
    plugins: Plugins | None = None,
) -> Outcome:
    """Vanilla KD: alpha * KL(t || s; T) * T^2 + beta * CE(hard labels) on a transfer set."""
    plugins = plugins or get_plugins()
    seed_everything(cfg.seed)  # the same initial weights in every process and every repeat
    source = open_dataset(cfg.dataset, cfg.data_root, cfg.download, plugins=plugins)
    teacher, t_spec, teacher_path = load_teacher(cfg.teacher, source, cfg.teacher_weights, plugins)
    student, s_spec = build(cfg.student, source, plugins)
    transfer, labelled = open_transfer_set(cfg, source, plugins)
    if cfg.beta and not labelled:
        raise UsageError("--beta needs labels; a transfer set other than the dataset has none.")
    kd_loss = plugins.losses.get(cfg.kd_loss).load()
    images, labels = transfer.load("train")
    test_images, test_labels = source.load("test")
    with _session(cfg, "kd", cfg.student, resume, source, teacher_path) as session:
        accelerator, task = session.accelerator, session.task
        teacher.to(session.device)
        s_fmt = InputFormat.of(source, s_spec.size)
        t_fmt = InputFormat.of(source, t_spec.size)

        def distill(logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor | None) -> Any:
            with torch.no_grad(), accelerator.autocast():
                t_logits = teacher(t_fmt.fit(x)).float()
            kl = task.distillation_loss(kd_loss, logits, t_logits, cfg.temperature)
            loss = cfg.alpha * kl
            logs = {"kl": kl.item()}
            if cfg.beta and y is not None:
                ce = task.supervised_loss(logits, y)
                loss = loss + cfg.beta * ce
                logs["ce"] = ce.item()
            return loss, logs

        job = SupervisedJob(
            accelerator,
            student,
            cfg,
            images,
            labels if labelled else None,
            s_fmt,
            augmentation(cfg, transfer),
            distill,
        )
        loop = Loop(
            accelerator,
            session.run,
            cfg.epochs,
            task.scorer(source, (test_images, test_labels), s_fmt, accelerator),
            weights_meta(s_spec, source, command="kd", teacher=cfg.teacher),
            reporter=reporter or SilentReporter(),
            criterion=task.metric,
            guard=_guard(source, cfg, job.steps_per_epoch(0)),
        )
        outcome = session.fit(loop, job)
    outcome.extras["run"] = session.run.path
    return outcome


__all__ = ["KDConfig", "ModelSpec", "ScratchConfig", "train_kd", "train_scratch", "load_config"]
