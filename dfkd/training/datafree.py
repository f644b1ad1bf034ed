"""`dfkd run METHOD`: the shared data-free loop around a method's synthesizer."""

from __future__ import annotations

import dataclasses
import math
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dfkd.data import open_dataset
from dfkd.data.pipeline import InputFormat
from dfkd.errors import DfkdError, UsageError
from dfkd.optim import make_optimizer, make_scheduler
from dfkd.options import build_options
from dfkd.plugins import Plugins, get_plugins
from dfkd.synthesis.base import SynthesisContext, SynthesisResult, Synthesizer
from dfkd.synthesis.options import DEFAULT_PRESET, fit_milestones
from dfkd.tasks import CLASSIFICATION
from dfkd.training.guard import CollapseGuard, SlowDownState, SlowsDown, weak_student
from dfkd.training.loop import Job, Loop, Outcome, Reporter, SilentReporter
from dfkd.training.precision import resolve_precision
from dfkd.training.runs import RunDir
from dfkd.training.session import Session, open_session
from dfkd.training.setup import (
    build,
    check_recorded,
    load_teacher,
    resume_options,
    seed_everything,
    weights_meta,
)
from dfkd.training.tasks import task_of
from dfkd.training.teacher_inputs import InputFlags, TeacherInputs, describe_inputs
from dfkd.training.validation import agreement, validation_set


@dataclass
class RunConfig:
    """A data-free run: who distils into whom, and the method's options."""

    method: str
    teacher: str
    student: str
    dataset: str | None = None  # None: the teacher-only flow; the inputs come from its sidecar
    preset: str | None = None
    overrides: list[str] = field(default_factory=list)
    teacher_weights: str | None = None
    seed: int = 0
    keep_images: bool = False
    mixed_precision: str = "no"
    cpu: bool = False
    data_root: str | None = None
    download: bool = False
    out: str | None = None
    overwrite: bool = False
    log_with: str | None = None
    # what the teacher's inputs look like, where neither its sidecar nor its model says
    classes: int | None = None
    channels: int | None = None
    image_size: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    class_names: str | None = None
    #: a few images of the user's own to score on: accuracy if labelled, agreement if not
    eval_data: str | None = None
    #: the synthetic validation set: images inverted from the teacher, and Adam steps on them
    #: (None: the defaults, cut where the teacher is too slow to invert them; validation.py)
    val_size: int | None = None
    val_steps: int | None = None
    #: quantisation-aware distillation: the student trains fake-quantised (models/fake_quant.py)
    quantize: str | None = None

    def input_flags(self) -> InputFlags:
        return InputFlags(
            self.classes, self.channels, self.image_size, self.mean, self.std, self.class_names
        )


class MethodChoice(typing.NamedTuple):
    """A run's method: its registry entry, its typed options, and the line to show where a
    shorter (or longer) run moved milestones the user did not set (None: nothing moved)."""

    entry: Any
    options: Any
    moved: str | None


def method_options(plugins: Plugins, cfg: RunConfig, task: str = CLASSIFICATION) -> MethodChoice:
    """The method's entry and its typed options: defaults, then the preset, then -o overrides
    (`fit_milestones` moves the milestones the user did not set to the run's epochs). For a
    teacher of another task than classification, `default` is the method's `default-TASK`
    preset where it ships one: a classifier's settings are no guess for a segmentation net."""
    entry = plugins.methods.get(cfg.method)
    presets = entry.info.get("presets", {})
    if cfg.preset and cfg.preset not in presets:
        known = ", ".join(presets) or "none"
        raise UsageError(f"Method {cfg.method} has no preset '{cfg.preset}'. Presets: {known}.")
    name = task_preset(presets, cfg.preset, task)
    preset = presets.get(name, {}) if name else {}
    preset, moved = fit_milestones(entry.info["options"], preset, cfg.overrides)
    if moved is not None:
        source = f"preset {name}" if name else "defaults"
        moved = f"{cfg.method} {source}: {moved}"
    return MethodChoice(entry, build_options(entry.info["options"], preset, cfg.overrides), moved)


def task_preset(presets: dict[str, Any], preset: str | None, task: str) -> str | None:
    """The preset ``preset`` stands for with a teacher of ``task``
    (docs/plugins.md#options-and-presets)."""
    if preset == DEFAULT_PRESET and task != CLASSIFICATION and f"{preset}-{task}" in presets:
        return f"{preset}-{task}"
    return preset


def check_method_task(entry: Any, cfg: RunConfig, source: Any) -> None:
    """Refuse a teacher whose task the method does not distil, naming the methods that do."""
    tasks = entry.info.get("tasks", (CLASSIFICATION,))
    if source.task in tasks:
        return
    raise UsageError(
        f"{cfg.method} distils {' and '.join(tasks)} networks; {cfg.teacher} on {source.name} is "
        f"a {source.task} network. See dfkd list-methods for the methods that take one."
    )


def _inputs(cfg: RunConfig, plugins: Plugins) -> Any:
    """The dataset when one is named (its test split scores the student); otherwise the format
    of the teacher's inputs, from its sidecar, its model's configuration or the flags."""
    if cfg.dataset:
        given = [*cfg.input_flags().given(), *(["class_names"] if cfg.class_names else [])]
        if given:
            flags = ", ".join(f"--{k.replace('_', '-')}" for k in given)
            raise UsageError(
                f"{flags} describe the teacher's inputs when no --dataset is named; "
                f"{cfg.dataset} already says what they are. Drop one or the other."
            )
        return open_dataset(cfg.dataset, cfg.data_root, cfg.download, plugins=plugins)
    if not cfg.teacher_weights:
        raise UsageError("Without --dataset, name the teacher's weights with --teacher-weights.")
    if cfg.data_root and not Path(cfg.data_root).expanduser().is_dir():
        raise UsageError(f"--data-root {cfg.data_root} does not exist.")
    return describe_inputs(cfg.teacher, Path(cfg.teacher_weights), cfg.input_flags(), plugins)


#: the user's own images (``--eval-data``): their dataset, images and labels (None: unlabelled)
EvalData = tuple[Any, torch.Tensor, torch.Tensor | None]


def _open_eval_data(cfg: RunConfig, plugins: Plugins, source: Any) -> EvalData | None:
    """The ``--eval-data`` images, checked against the teacher's channels and classes before
    the run directory is made: a bad folder must not leave a run that blocks the corrected
    command. Labels come back as the teacher's class indices."""
    if not cfg.eval_data:
        return None
    eval_source = open_dataset(cfg.eval_data, cfg.data_root, False, plugins=plugins)
    split = "test" if _has_split(eval_source, "test") else "train"
    images, labels = eval_source.load(split)
    if images.shape[1] != source.channels:
        raise UsageError(
            f"--eval-data {cfg.eval_data} has {images.shape[1]}-channel images; the teacher "
            f"takes {source.channels}."
        )
    if labels is not None:
        labels = task_of(source.task).labels_for_teacher(labels, eval_source, source, cfg.eval_data)
    return eval_source, images, labels


def _eval_data_scorer(
    data: EvalData,
    source: Any,
    s_fmt: InputFormat,
    valset: Any,
    teacher: Any,
    teacher_size: int | None,
    accelerator: Any,
) -> Any:
    """Scores on the user's own images (``--eval-data``): accuracy where they are labelled with
    the teacher's classes, agreement with the teacher where they are not."""
    eval_source, images, labels = data
    fmt = InputFormat(tuple(source.mean), tuple(source.std), s_fmt.size)
    if labels is not None:
        score = task_of(source.task).scorer(eval_source, (images, labels), fmt, accelerator)
        return lambda model: {f"eval_{k}": v for k, v in score(model).items()}
    t_fmt = InputFormat(tuple(source.mean), tuple(source.std), teacher_size)
    with torch.no_grad():
        t_logits = teacher(t_fmt.from_uint8(images).to(accelerator.device)).float().cpu()
    own = type(valset)(images.float().div(255), t_logits)

    def unlabelled(model: Any) -> dict[str, float]:
        return {"eval_agree": agreement(model, own, fmt, accelerator)["agree"]}

    return unlabelled


def _has_split(source: Any, split: str) -> bool:
    try:
        source.load(split)
    except UsageError:
        return False
    return True


def recorded_options(
    plugins: Plugins, cfg: RunConfig, resolved: dict[str, Any] | None, run_dir: str
) -> MethodChoice:
    """The method's options exactly as the run recorded them, not as the installed plugin would
    build them today: a plugin upgraded between a crash and the resume must not change a
    half-finished run's hyperparameters. A plugin whose option set changed is refused."""
    entry = plugins.methods.get(cfg.method)
    options_cls = entry.info["options"]
    if resolved is None:  # a run directory from before options were recorded
        entry, options, _ = method_options(plugins, cfg)
        return MethodChoice(entry, options, None)
    fields = {f.name for f in dataclasses.fields(options_cls)}
    if set(resolved) != fields:
        changed = sorted(set(resolved) ^ fields)
        raise UsageError(
            f"The installed {entry.provider} {entry.version} has other options than the one "
            f"that started {run_dir} (differs in: {', '.join(changed)}); reinstall the version "
            "recorded in its config.json to resume it."
        )
    check_recorded(options_cls, resolved, run_dir)
    hints = typing.get_type_hints(options_cls)
    values = {
        k: tuple(v) if typing.get_origin(hints[k]) is tuple else v for k, v in resolved.items()
    }
    return MethodChoice(entry, build_options(options_cls, values), None)


def _precision_workload(
    cfg: RunConfig, options: Any, teacher: Any, student: Any, source: Any, t_spec: Any, s_spec: Any
) -> Any:
    """What `--mixed-precision auto` times: one synthesis step and the student steps that follow
    it, at the run's own shapes (a generator step for generator methods, pixels otherwise)."""
    if cfg.mixed_precision != "auto":
        return None
    from dfkd.synthesis.generative import build_generator
    from dfkd.synthesis.generative_options import GenerativeOptions
    from dfkd.training.precision import distillation_workload

    image_size = t_spec.size or source.image_size
    generative = isinstance(options, GenerativeOptions)
    return distillation_workload(
        teacher,
        student,
        batch_size=options.batch_size,
        synthesis_batch_size=options.syn_batch,
        channels=source.channels,
        image_size=image_size,
        student_size=s_spec.size,
        kd_steps=max(1, round(options.kd_steps / options.g_steps)),
        generator=build_generator(options, source.channels, image_size) if generative else None,
        nz=options.nz if generative else 0,
    )


class DataFreeJob(SlowsDown, Job):
    """Each epoch: rounds of synthesize() then kd_steps student steps on sample()."""

    def __init__(
        self,
        accelerator: Any,
        student: torch.nn.Module,
        synthesizer: Synthesizer,
        options: Any,
        s_fmt: InputFormat,
        t_fmt: InputFormat,
        kept: Any = None,
    ) -> None:
        self.accelerator = accelerator
        self.options = options
        self.synthesizer = synthesizer
        self.s_fmt, self.t_fmt = s_fmt, t_fmt
        self.kept = kept  # an ImagePool that records synthesized images for --keep-images
        optimizer = make_optimizer(
            student.parameters(),
            options.optimizer,
            options.lr,
            options.momentum,
            options.weight_decay,
        )
        self.scheduler = make_scheduler(
            optimizer,
            options.schedule,
            options.epochs - options.warmup,
            options.milestones,
            options.gamma,
        )
        self.model, self.optimizer = accelerator.prepare(student, optimizer)
        self.last_images: torch.Tensor | None = None
        self.global_step = 0
        self.grad_clip = options.grad_clip  # the collapse guard may turn clipping on
        #: the teacher's answers per class on this epoch's samples, and the student's per class
        #: and agreement with it on the last batch (where the student ends the epoch)
        self.teacher_answers = torch.zeros(0, dtype=torch.long)
        self.last_batch_answers = torch.zeros(0, dtype=torch.long)
        self.grad_norms: list[torch.Tensor] = []  # this epoch's, before clipping, on the device
        self.synthesis_seconds = 0.0  # this epoch's, so a benchmark can split synthesis cost

    def stateful(self) -> dict[str, Any]:
        return {
            "student": self.model,
            "optimizer": self.optimizer,
            "scheduler": self.scheduler,
            "counters": _Counters(self),
        }

    def process_stateful(self) -> dict[str, Any]:
        objects: dict[str, Any] = {"synthesizer": self.synthesizer}
        if self.kept is not None:
            objects["kept_images"] = self.kept
        return objects

    def warming_up(self, epoch: int) -> bool:
        return epoch < self.options.warmup

    def steps_per_epoch(self, epoch: int) -> int:
        rounds = self.options.ep_steps // self.options.kd_steps  # whole: options.check()
        return rounds if self.warming_up(epoch) else rounds * self.options.kd_steps

    def _synthesize(self) -> dict[str, float]:
        started = time.perf_counter()
        result = self.synthesizer.synthesize()
        self.synthesis_seconds += time.perf_counter() - started
        if not isinstance(result, SynthesisResult):
            raise DfkdError(
                f"{type(self.synthesizer).__name__}.synthesize() returned "
                f"{type(result).__name__}, not a dfkd.api.SynthesisResult (docs/plugins.md)."
            )
        if result.images is not None:
            self.last_images = result.images.detach()
            if self.kept is not None:
                self.kept.add(self.last_images.cpu())
        return result.logs

    def train_step(self, epoch: int, step: int) -> dict[str, float]:
        if self.warming_up(epoch):
            logs = self._synthesize()
            return {"loss": logs.get("loss_g", 0.0), **logs}
        logs: dict[str, float] = {}
        if step % self.options.kd_steps == 0:
            logs = self._synthesize()
        x = self.synthesizer.sample()
        with torch.no_grad(), self.accelerator.autocast():
            t_logits = self.synthesizer.teacher(self.t_fmt.fit(x)).float()
        self.model.train()
        s_logits = self.model(self.s_fmt.fit(x)).float()
        last = step == self.steps_per_epoch(epoch) - 1
        self._count_answers(t_logits, s_logits.detach() if last else None)
        loss, extra = self.synthesizer.student_loss(s_logits, t_logits, self.global_step)
        self.optimizer.zero_grad(set_to_none=True)
        self.accelerator.backward(loss)
        # the norm before clipping, for metrics.jsonl; without a clip, max_norm inf scales by 1
        norm = self.accelerator.clip_grad_norm_(self.model.parameters(), self.grad_clip or math.inf)
        if norm is not None:
            self.grad_norms.append(norm.detach())
        self.optimizer.step()
        self.global_step += 1
        return {"loss": loss.item(), **extra, **logs}

    def _count_answers(self, t_logits: torch.Tensor, s_logits: torch.Tensor | None) -> None:
        """Who answers what on the samples the student learns from (per pixel for a segmentation
        teacher): a generator fallen onto one class shows in the teacher's answers over the
        epoch, a student fallen onto one in its own on the epoch's last batch (``s_logits``
        there, None before; the guard's second opinion on the validation set). Counted on the
        device: no sync per step."""
        classes = t_logits.shape[1]
        t = t_logits.argmax(1).flatten()
        found = torch.bincount(t, minlength=classes)
        if self.teacher_answers.numel() != found.numel():
            self.teacher_answers = torch.zeros_like(found)
        self.teacher_answers += found
        if s_logits is not None:
            s = s_logits.argmax(1).flatten()
            self.last_batch_answers = torch.cat(
                (torch.bincount(s, minlength=classes), (t == s).sum().view(1))
            )

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        if not self.warming_up(epoch):
            self.scheduler.step()
        extras: dict[str, Any] = dict(self.synthesizer.end_epoch(epoch))
        answers = torch.cat((self.teacher_answers, self.last_batch_answers))
        self.teacher_answers = self.last_batch_answers = torch.zeros(0, dtype=torch.long)
        if answers.numel() and self.accelerator.num_processes > 1:
            # every process's samples, so that every process's guard sees the same epoch
            answers = self.accelerator.reduce(answers, "sum")
        extras |= _answer_shares(answers.cpu())
        if self.grad_norms:
            norms = torch.stack(self.grad_norms).float().cpu()
            extras["grad_norm"] = round(norms.mean().item(), 4)
            extras["grad_norm_max"] = round(norms.max().item(), 4)
            self.grad_norms = []
        extras["lr"] = self.optimizer.param_groups[0]["lr"]
        extras["seconds_synthesis"] = round(self.synthesis_seconds, 3)
        self.synthesis_seconds = 0.0
        if self.accelerator.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.accelerator.device)
            extras["gpu_peak_mb"] = round(peak / 2**20, 1)
        if self.last_images is not None:
            extras["images"] = self.last_images
        return extras


def _answer_shares(answers: torch.Tensor) -> dict[str, float]:
    """The epoch's answers as shares (%): the teacher's commonest class over the epoch; the
    student's commonest class on the last batch, and its agreement with the teacher there."""
    if not answers.numel():  # a warm-up epoch: the student did not train
        return {}
    classes = (answers.numel() - 1) // 2
    teacher, student, agreed = answers[:classes], answers[classes:-1], answers[-1]
    shares = {}
    if teacher.sum() > 0:
        shares["syn_top_class"] = round(100.0 * teacher.max().item() / teacher.sum().item(), 2)
    if student.sum() > 0:
        last = student.sum().item()
        shares["syn_student_top_class"] = round(100.0 * student.max().item() / last, 2)
        shares["syn_agree"] = round(100.0 * agreed.item() / last, 2)
    return shares


class _Counters(SlowDownState):
    """The job's step counter and what the collapse guard changed, checkpointed with the rest."""

    def __init__(self, job: DataFreeJob) -> None:
        super().__init__(job, clip=job.options.grad_clip)

    def state_dict(self) -> dict[str, float]:
        return {"global_step": self.job.global_step, **super().state_dict()}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.job.global_step = int(state["global_step"])
        super().load_state_dict(state)


def _fake_quantize(student: torch.nn.Module, cfg: RunConfig) -> None:
    """Make the student compute at ``cfg.quantize``'s widths, or refuse in one line."""
    from dfkd.models.fake_quant import SCHEMES, fake_quantize

    if cfg.quantize not in SCHEMES:
        raise UsageError(f"--quantize must be one of {', '.join(SCHEMES)}, not '{cfg.quantize}'.")
    try:
        fake_quantize(student, cfg.quantize)
    except ValueError as exc:
        raise UsageError(f"--quantize: student {cfg.student}'s {exc}.") from None


def _patience(options: Any) -> int:
    """The epoch by which the student must answer more than one class: a fifth of its training
    epochs (at least 5: a short trial run may not have started) after the warm-up, in which it
    does not train."""
    return options.warmup + max(5, (options.epochs - options.warmup) // 5)


def _validation_recipe(cfg: RunConfig, run: RunDir, resumed: bool) -> tuple[int | None, int | None]:
    """The validation set's size and steps: those a resumed run recorded (its earlier epochs were
    scored on that set, whatever the budget would choose now), else the user's (None: left to
    the budget)."""
    made = run.read_config().get("validation_set", {}) if resumed else {}
    return made.get("images", cfg.val_size), made.get("steps", cfg.val_steps)


def run_datafree(
    cfg: RunConfig | None,
    *,
    resume: str | None = None,
    given: dict[str, Any] | None = None,
    method: MethodChoice | None = None,
    reporter: Reporter | None = None,
    plugins: Plugins | None = None,
) -> Outcome:
    """Distil ``cfg.teacher`` into ``cfg.student`` with ``cfg.method``; real data only to test.
    ``resume`` continues a run with what it recorded (``given``: what the command line names
    beside it, which must match); ``method`` is the method choice the caller already resolved
    from ``cfg`` (None: resolved here)."""
    from dfkd.synthesis.pool import ImagePool

    plugins = plugins or get_plugins()
    reporter = reporter or SilentReporter()
    chosen_precision = None  # what a resumed run measured for --mixed-precision auto
    if resume:
        recorded = resume_options(resume, "run", given)
        resolved = recorded.pop("resolved_options", None)
        chosen_precision = (recorded.pop("precision", None) or {}).get("chosen")
        check_recorded(RunConfig, recorded, resume)
        cfg = RunConfig(**recorded)
        method = recorded_options(plugins, cfg, resolved, resume)
    elif method is None:
        method = method_options(plugins, cfg)
    entry, options = method.entry, method.options
    seed_everything(cfg.seed)  # the same initial weights in every process and every repeat
    source = _inputs(cfg, plugins)
    check_method_task(entry, cfg, source)
    if (
        not resume
        and task_preset(entry.info.get("presets", {}), cfg.preset, source.task) != cfg.preset
    ):
        method = method_options(plugins, cfg, source.task)
        entry, options = method.entry, method.options
    teacher, t_spec, teacher_path = load_teacher(cfg.teacher, source, cfg.teacher_weights, plugins)
    student, s_spec = build(cfg.student, source, plugins)
    if cfg.quantize:
        _fake_quantize(student, cfg)
    test = None if isinstance(source, TeacherInputs) else source.load("test")
    eval_data = _open_eval_data(cfg, plugins, source)
    if chosen_precision:
        precision, precision_record = chosen_precision, None
    else:
        workload = _precision_workload(cfg, options, teacher, student, source, t_spec, s_spec)
        precision, precision_record = resolve_precision(cfg.mixed_precision, workload, cpu=cfg.cpu)
    record = dataclasses.asdict(cfg) | {
        "resolved_options": dataclasses.asdict(options),
        "precision": precision_record,
    }
    with open_session(
        "run",
        record,
        model=f"{cfg.method}-{cfg.student}",
        dataset=source.name,
        out=cfg.out,
        overwrite=cfg.overwrite,
        resume=resume,
        seed=cfg.seed,
        mixed_precision=precision,
        cpu=cfg.cpu,
        log_with=cfg.log_with,
        teacher=teacher_path,
        source=source,
        plugin_versions={entry.provider: entry.version},
    ) as session:
        accelerator, run, task = session.accelerator, session.run, session.task
        teacher.to(session.device)
        student.to(session.device)
        t_fmt = InputFormat.of(source, t_spec.size)
        s_fmt = InputFormat.of(source, s_spec.size)
        ctx = _synthesis_context(session, cfg, plugins, (teacher, t_spec), (student, s_spec))
        synthesizer = entry.build(ctx, options)
        kept = None
        if cfg.keep_images and not synthesizer.uses_pool:
            kept = ImagePool(run.path / "images", shard=accelerator.process_index)
        job = DataFreeJob(accelerator, student, synthesizer, options, s_fmt, t_fmt, kept)
        valset = validation_set(
            teacher,
            teacher_path,
            t_fmt,
            source.num_classes,
            source.channels,
            ctx.image_size,
            run.state_dir,
            *_validation_recipe(cfg, run, resumed=session.resumed),
            task=source.task,
            progress=reporter if session.is_main_process else None,
        )
        session.record(validation_set={"images": len(valset.images), "steps": valset.steps})
        scorers = [lambda m: agreement(m, valset, s_fmt, accelerator)]
        if test is not None:
            scorers.insert(0, task.scorer(source, test, s_fmt, accelerator))
        if eval_data is not None:
            scorers.append(
                _eval_data_scorer(
                    eval_data, source, s_fmt, valset, teacher, t_spec.size, accelerator
                )
            )
        loop = Loop(
            accelerator,
            run,
            options.epochs,
            lambda m: {k: v for score in scorers for k, v in score(m).items()},
            weights_meta(
                s_spec,
                source,
                command="run",
                method=cfg.method,
                teacher=cfg.teacher,
                **({"quantized": cfg.quantize} if cfg.quantize else {}),
            ),
            reporter=reporter,
            criterion=task.metric if test is not None else None,
            guard=CollapseGuard(source.num_classes, patience=_patience(options)),
        )
        outcome = session.fit(loop, job)
    outcome.extras.update(run=run.path, samples=run.path / "samples.png")
    weak = weak_student(outcome.last, source.num_classes, source.task)
    if weak is not None:
        outcome.extras["weak_student"] = weak
    if cfg.keep_images or synthesizer.uses_pool:
        outcome.extras["images"] = run.path / "images"
    return outcome


def _synthesis_context(
    session: Session,
    cfg: RunConfig,
    plugins: Plugins,
    teacher: tuple[torch.nn.Module, Any],
    student: tuple[torch.nn.Module, Any],
) -> SynthesisContext:
    """What a method's synthesizer sees of the session: the models, the inputs' format, the
    device and accelerator, the run directory and seed, and how to open a dataset it names."""
    source = session.source
    (teacher, t_spec), (student, s_spec) = teacher, student
    return SynthesisContext(
        teacher=teacher,
        student=student,
        num_classes=source.num_classes,
        channels=source.channels,
        image_size=t_spec.size or source.image_size,
        mean=tuple(source.mean),
        std=tuple(source.std),
        device=session.device,
        accelerator=session.accelerator,
        run_dir=session.run.path,
        student_size=s_spec.size,
        seed=session.seed,
        task=source.task,
        run_info={
            "method": cfg.method,
            "teacher": cfg.teacher,
            "dataset": cfg.dataset,
            "student": cfg.student,
            "teacher_weights": str(session.teacher),
        },
        dataset_opener=lambda name: open_dataset(
            name, cfg.data_root, cfg.download, plugins=plugins
        ),
    )
