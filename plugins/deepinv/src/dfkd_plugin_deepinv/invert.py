"""`dfkd invert`: NVlabs DeepInversion of one batch from a trained classifier
(docs/methods/deepinv.md#nvlabs-imagenet-script and the CIFAR-10 script after it).

The pixels of a noise batch are optimised until the network classifies them as the targets while
each BatchNorm layer sees the statistics it recorded in training, under smoothness and norm priors;
ADI adds a competing network that must disagree with the teacher. The lowest-loss iterate is
written as one PNG per image in class folders, as ``images.safetensors`` (what ``folder:DIR``
reads, so the output is a transfer set for ``dfkd kd``) and as a grid.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file
from torch import Tensor, nn

from dfkd.api import (
    BestIterate,
    DfkdError,
    InputFormat,
    Plugins,
    Session,
    UsageError,
    attach_bn_hooks,
    bn_statistics,
    clip_to_pixel_range,
    default_weights_path,
    denormalize,
    get_plugins,
    jitter_flip,
    js_divergence,
    l2_prior,
    load_teacher,
    open_dataset,
    open_session,
    save_grid,
    tv_l1,
    tv_l2,
    warn_without_batchnorm,
    write_atomic,
)
from dfkd_plugin_deepinv.invert_options import InvertConfig

TENSOR_FILE = "images.safetensors"  # the name dfkd.data.folder reads as a transfer set
LOG_FILE = "log.jsonl"
WARMUP = 100  # iterations of linear LR warm-up per stage in the reference


@dataclass
class DataFormat:
    """What inversion needs from a dataset: classes, channels, size, normalisation; no images."""

    name: str
    classes: list[str]
    channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


# The torchvision and timm ImageNet classifiers; no dataset files are needed to invert them.
IMAGENET = DataFormat(
    "imagenet", [str(i) for i in range(1000)], 3, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
)


def data_format(name: str, data_root: str | None, plugins: Plugins) -> Any:
    """The dataset's format. Inversion reads no images, so a known dataset whose files are absent
    still works from its class attributes; ``imagenet`` works unless a plugin registers one."""
    if name == "imagenet" and name not in plugins.datasets:
        return IMAGENET
    try:
        return open_dataset(name, data_root, False, plugins=plugins)
    except UsageError:
        factory = plugins.datasets.get(name).load()
        needed = ("class_names", "channels", "image_size", "mean", "std")
        if not (isinstance(factory, type) and all(hasattr(factory, a) for a in needed)):
            raise
        return DataFormat(
            name,
            list(factory.class_names),
            factory.channels,
            factory.image_size,
            tuple(factory.mean),
            tuple(factory.std),
        )


def load_network(
    name: str,
    fmt: Any,
    weights: str | None,
    pretrained: bool,
    flag: str,
    plugins: Plugins,
) -> tuple[nn.Module, int | None]:
    """A frozen network and its fixed input size (None: any).

    Weights come from ``weights``; for zoo models from checkpoints/<dataset>-<model>.safetensors
    (as ``--teacher`` does); for timm:/torchvision: models from the library only when
    ``pretrained`` is asked for. Nothing is ever fetched otherwise.
    """
    from dfkd.api import build_model, model_input_size

    entry = plugins.models.get(name)
    size = model_input_size(name, plugins=plugins)
    if weights:
        return load_teacher(name, fmt, weights, plugins)[0], size
    if entry.arg is None:  # a zoo model: its checkpoint, as for --teacher
        path = default_weights_path(fmt.name, name)
        if not path.exists():
            raise UsageError(
                f"No weights for {name} on {fmt.name}: looked for {path}. Train them with "
                f"'dfkd scratch --model {name} --dataset {fmt.name}' or pass {flag} FILE."
            )
        return load_teacher(name, fmt, path, plugins)[0], size
    if not pretrained:
        raise UsageError(
            f"{name} has no weights: pass {flag} FILE, or --pretrained to download the "
            "library's pretrained weights (needs network access)."
        )
    if fmt.num_classes != 1000:
        raise UsageError(
            f"The pretrained weights of {name} classify the 1000 ImageNet classes, not the "
            f"{fmt.num_classes} of {fmt.name}; use --dataset imagenet or pass {flag} FILE."
        )
    try:
        net = build_model(name, fmt.num_classes, fmt.channels, plugins=plugins, pretrained=True)
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever stops the download, the way out is the same
        raise UsageError(
            f"Could not fetch the pretrained weights of {name} ({type(exc).__name__}: {exc}). "
            f"Offline? Pass {flag} FILE with a saved state dict."
        ) from exc
    return net.eval().requires_grad_(False), size


def make_targets(cfg: InvertConfig, num_classes: int, generator: torch.Generator) -> Tensor:
    """Random classes, the given ones repeated to fill the batch, or (by default) 0, 1, ... K−1
    over and over, which is the CIFAR-10 script's [0..9]×25 + [0..5] at batch 256."""
    if cfg.random_labels:
        return torch.randint(num_classes, (cfg.batch_size,), generator=generator)
    labels = list(cfg.labels) if cfg.labels else list(range(num_classes))
    bad = [k for k in labels if not 0 <= k < num_classes]
    if bad:
        raise UsageError(
            f"--labels {bad} are outside the {num_classes} classes (0..{num_classes - 1})."
        )
    return torch.tensor([labels[i % len(labels)] for i in range(cfg.batch_size)])


def learning_rate(base: float, step: int, steps: int, schedule: str) -> float:
    """The reference's ``lr_cosine_policy`` within one stage: linear warm-up over the first
    min(100, steps // 10) iterations (the reference's 100, scaled down for short runs), then a
    cosine from ``base`` to 0; or ``base`` throughout for the constant schedule."""
    if schedule == "constant":
        return base
    warmup = min(WARMUP, steps // 10)
    if step < warmup:
        return base * (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / (steps - warmup))) * base


class Inverter:
    """The loss of one inversion step, and the accuracies it reports."""

    def __init__(
        self,
        teacher: nn.Module,
        cfg: InvertConfig,
        teacher_size: int | None = None,
        verifier: nn.Module | None = None,
        verifier_size: int | None = None,
        autocast: Callable[[], Any] = contextlib.nullcontext,
    ) -> None:
        self.teacher, self.verifier, self.cfg = teacher, verifier, cfg
        # Only the resizing part of InputFormat is used: the batch is normalised already.
        self.t_fit = InputFormat((), (), teacher_size).fit
        self.v_fit = InputFormat((), (), verifier_size).fit
        self.autocast = autocast
        warn_without_batchnorm(teacher, "invert", cfg.r_feature)
        self.hooks = attach_bn_hooks(teacher)

    def losses(self, x_jit: Tensor, targets: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """The terms for the jittered (maybe downsampled) batch ``x_jit``, and the teacher's logits.

        total = main·CE(T(x̃), y) + r_feature·Σ s_l r_l + tv_l2·TV₂(x̃) + tv_l1·TV₁(x̃)
        + l2·mean_i‖x̃_i‖₂ [+ adi·(1 − clamp(JS(V(x̃), T(x̃); 3), 0, 1))]
        (docs/methods/deepinv.md#nvlabs-imagenet-script)
        """
        cfg = self.cfg
        with self.autocast():
            t = self.teacher(self.t_fit(x_jit)).float()
        terms = {
            "main": F.cross_entropy(t, targets),
            "r_feature": (
                bn_statistics(self.hooks, cfg.first_bn_multiplier)
                if self.hooks
                else t.new_zeros(())
            ),
            "tv_l1": tv_l1(x_jit),
            "tv_l2": tv_l2(x_jit),
            "l2": l2_prior(x_jit),
        }
        total = (
            cfg.main_loss_multiplier * terms["main"]
            + cfg.r_feature * terms["r_feature"]
            + cfg.tv_l2 * terms["tv_l2"]
            + cfg.tv_l1 * terms["tv_l1"]
            + cfg.l2 * terms["l2"]
        )
        if cfg.adi_scale:
            with self.autocast():
                v = self.verifier(self.v_fit(x_jit)).float()
            terms["adi"] = 1 - js_divergence(v, t, T=3.0).clamp(0, 1)
            total = total + cfg.adi_scale * terms["adi"]
        terms["total"] = total
        return terms, t

    @torch.no_grad()
    def verifier_accuracy(self, x: Tensor, targets: Tensor) -> float:
        """Top-1 of the verifier on the un-jittered, full-resolution batch, in percent."""
        with self.autocast():
            logits = self.verifier(self.v_fit(x))
        return 100.0 * (logits.argmax(1) == targets).float().mean().item()

    @torch.no_grad()
    def teacher_accuracy(self, x: Tensor, targets: Tensor) -> float:
        with self.autocast():
            logits = self.teacher(self.t_fit(x))
        return 100.0 * (logits.argmax(1) == targets).float().mean().item()


@dataclass
class InversionResult:
    out: Path
    images: Path
    loss: float
    teacher_accuracy: float
    verifier_accuracy: float | None
    iterations: int
    seconds: float

    @property
    def seconds_per_1k(self) -> float:
        return 1000 * self.seconds / max(1, self.iterations)


def run_inversion(
    cfg: InvertConfig,
    *,
    plugins: Plugins | None = None,
    report: Callable[[dict[str, Any]], None] | None = None,
) -> InversionResult:
    """Invert one batch; every ``cfg.log_every`` iterations a row goes to log.jsonl and to
    ``report``. Returns what was kept and how well the teacher and verifier classify it."""
    plugins = plugins or get_plugins()
    cfg.check()
    fmt = data_format(cfg.dataset, cfg.data_root, plugins)
    teacher, t_size = load_network(
        cfg.model, fmt, cfg.weights, cfg.pretrained, "--weights", plugins
    )
    verifier = None
    if cfg.verifier:
        verifier = load_network(
            cfg.verifier, fmt, cfg.verifier_weights, cfg.pretrained, "--verifier-weights", plugins
        )
    with open_session(
        "invert",
        dataclasses.asdict(cfg),
        model=cfg.model,
        dataset=fmt.name,
        out=cfg.out,
        overwrite=cfg.overwrite,
        seed=cfg.seed,
        mixed_precision=cfg.mixed_precision,
        cpu=cfg.cpu,
        teacher=Path(cfg.weights) if cfg.weights else None,  # a download has no file to hash
    ) as session:
        session.start()  # the log of a failed inversion stays, to read
        return _invert(cfg, fmt, session, (teacher, t_size), verifier, report)


def _invert(
    cfg: InvertConfig,
    fmt: Any,
    session: Session,
    teacher_and_size: tuple[torch.nn.Module, int | None],
    verifier_and_size: tuple[torch.nn.Module, int | None] | None,
    report: Callable[[dict[str, Any]], None] | None,
) -> InversionResult:
    """The inversion itself, in ``session``'s run directory and on its device."""
    accelerator, run, device = session.accelerator, session.run, session.device
    teacher, t_size = teacher_and_size
    verifier, v_size = verifier_and_size or (None, None)
    if verifier is not None:
        verifier.to(device).eval()
    teacher.to(device).eval()
    generator = torch.Generator().manual_seed(cfg.seed)
    targets = make_targets(cfg, fmt.num_classes, generator).to(device)
    size = t_size or fmt.image_size
    inverter = Inverter(teacher, cfg, t_size, verifier, v_size, accelerator.autocast)
    shape = (cfg.batch_size, fmt.channels, size, size)
    x = torch.randn(shape, generator=generator).to(device).requires_grad_(True)
    stages = cfg.stages()
    total_iterations = sum(n for _, n in stages)
    started = time.perf_counter()
    iteration = 0
    with (run.path / LOG_FILE).open("a") as log:
        for stage, (factor, steps) in enumerate(stages):
            optimizer = torch.optim.Adam([x], lr=cfg.lr, betas=cfg.adam_betas, eps=1e-8)
            best = BestIterate()
            for step in range(steps):
                iteration += 1
                lr = learning_rate(cfg.lr, step, steps, cfg.schedule)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                small = F.avg_pool2d(x, factor) if factor > 1 else x
                x_jit = jitter_flip(small, cfg.jitter // factor, flip=cfg.flip, generator=generator)
                terms, t_logits = inverter.losses(x_jit, targets)
                loss = terms["total"].item()
                if not math.isfinite(loss):
                    raise DfkdError(
                        f"The inversion loss became {loss} at iteration {iteration}; lower --lr."
                    )
                # Losses at different resolutions do not compare, so each stage keeps its own
                # best and the last (full-resolution) stage's is the result.
                best.offer(loss, x=x)
                if iteration % cfg.log_every == 0:
                    row = {
                        "iteration": iteration,
                        "iterations": total_iterations,
                        "stage": stage,
                        "resolution": x_jit.shape[-1],
                        "lr": lr,
                        "loss": loss,
                        **{k: v.item() for k, v in terms.items() if k != "total"},
                        "teacher_acc": 100.0
                        * (t_logits.argmax(1) == targets).float().mean().item(),
                    }
                    if verifier is not None:
                        row["verifier_acc"] = inverter.verifier_accuracy(x.detach(), targets)
                    log.write(json.dumps(row) + "\n")
                    log.flush()
                    if report is not None:
                        report(row)
                optimizer.zero_grad(set_to_none=True)
                terms["total"].backward()
                optimizer.step()
                if cfg.clipping:
                    with torch.no_grad():
                        x.copy_(clip_to_pixel_range(x, fmt.mean, fmt.std))
        seconds = time.perf_counter() - started
        best_loss, best_x = best.loss, best["x"]
        result = InversionResult(
            out=run.path,
            images=run.path / TENSOR_FILE,
            loss=best_loss,
            teacher_accuracy=inverter.teacher_accuracy(best_x, targets),
            verifier_accuracy=(
                inverter.verifier_accuracy(best_x, targets) if verifier is not None else None
            ),
            iterations=total_iterations,
            seconds=seconds,
        )
        final = {
            "final": True,
            "loss": result.loss,
            "teacher_acc": result.teacher_accuracy,
            "iterations": total_iterations,
            "seconds": round(seconds, 3),
            "seconds_per_1k": round(result.seconds_per_1k, 3),
        }
        if result.verifier_accuracy is not None:
            final["verifier_acc"] = result.verifier_accuracy
        log.write(json.dumps(final) + "\n")
    images = denormalize(best_x, fmt.mean, fmt.std).clamp(0, 1)
    save_images(run.path, images.cpu(), targets.cpu(), list(fmt.classes))
    return result


def class_folder(index: int, name: str, num_classes: int) -> str:
    """``<index>-<name>``, the index zero-padded so that sorted folders are in class order (what
    ImageFolder-style readers assume) and the name made safe for a path."""
    width = len(str(num_classes - 1))
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)
    return f"{index:0{width}d}" if safe in ("", str(index)) else f"{index:0{width}d}-{safe}"


def save_images(out: Path, images: Tensor, targets: Tensor, classes: list[str]) -> None:
    """One PNG per image under out/<class>/, all of them in images.safetensors (uint8 N×C×H×W
    with int64 labels), and out/grid.png."""
    pixels = images.mul(255).add(0.5).clamp(0, 255).to(torch.uint8)
    names = classes or [str(i) for i in range(int(targets.max()) + 1)]
    for i, (image, label) in enumerate(zip(pixels, targets.tolist(), strict=True)):
        folder = out / class_folder(label, names[label], len(names))
        folder.mkdir(parents=True, exist_ok=True)
        array = image.permute(1, 2, 0).numpy()
        picture = Image.fromarray(
            array[:, :, 0] if array.shape[2] == 1 else np.ascontiguousarray(array)
        )
        write_atomic(folder / f"{i:05d}.png", lambda tmp, p=picture: p.save(tmp, format="png"))
    tensors = {"images": pixels.contiguous(), "labels": targets.to(torch.int64).contiguous()}
    write_atomic(out / TENSOR_FILE, lambda tmp: save_file(tensors, str(tmp)))
    save_grid(images, out / "grid.png")
