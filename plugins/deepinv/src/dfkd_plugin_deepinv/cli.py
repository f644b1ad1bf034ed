"""The `dfkd invert` command; torch loads only when it runs, so `dfkd --help` stays fast."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from dfkd.api import Plugins, console, err_console, guarded
from dfkd_plugin_deepinv.invert_options import PRESETS

PANEL = "Distillation"


def format_row(row: dict[str, Any]) -> str:
    """One progress line: iteration, resolution, LR, the loss and its terms, the accuracies."""
    terms = "  ".join(
        f"{k} {row[k]:.4g}"
        for k in ("main", "r_feature", "tv_l1", "tv_l2", "l2", "adi")
        if k in row
    )
    line = (
        f"it {row['iteration']}/{row['iterations']}  {row['resolution']} px  lr {row['lr']:.4g}  "
        f"loss {row['loss']:.4f}  ({terms})  teacher accuracy {row['teacher_acc']:.1f}%"
    )
    if "verifier_acc" in row:
        line += f"  Verifier accuracy {row['verifier_acc']:.1f}%"
    return line


def _labels(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        from dfkd.api import UsageError

        raise UsageError(
            f"--labels takes class indices separated by commas, not '{text}'."
        ) from None


def _betas(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    parts = text.replace(" ", "").split(",")
    try:
        beta1, beta2 = (float(p) for p in parts)
    except ValueError:
        from dfkd.api import UsageError

        raise UsageError(f"--betas takes two numbers such as 0.5,0.9, not '{text}'.") from None
    return beta1, beta2


def add_invert_command(app: typer.Typer, plugins: Plugins) -> None:
    @app.command(rich_help_panel=PANEL)
    @guarded
    def invert(
        model: Annotated[str, typer.Option("--model", "-m", help="Network to invert.")] = None,
        dataset: Annotated[
            str,
            typer.Option(
                "--dataset",
                "-d",
                help="Its classes, channels, normalisation and (for timm:/torchvision: models) "
                "image size; 'imagenet' for the libraries' ImageNet models.",
            ),
        ] = None,
        weights: Annotated[
            str, typer.Option(help="Its weights (default: checkpoints/<dataset>-<model>).")
        ] = None,
        pretrained: Annotated[
            bool,
            typer.Option(
                "--pretrained",
                help="Download the library's pretrained weights for timm:/torchvision: models "
                "given no weights file (needs network access).",
            ),
        ] = False,
        preset: Annotated[
            str, typer.Option(help=f"Named option set: {', '.join(PRESETS)}.")
        ] = None,
        batch_size: Annotated[int, typer.Option(help="Images to invert [84].")] = None,
        setting: Annotated[
            int,
            typer.Option(
                help="0: 2k iterations at half resolution then 1k at full; 1: 2k at full; "
                "2: 20k at full with Adam (0.9, 0.999) and no clipping [0]."
            ),
        ] = None,
        iterations: Annotated[
            int, typer.Option(help="Total iterations instead of the setting's (2:1 split in 0).")
        ] = None,
        lr: Annotated[float, typer.Option(help="Adam learning rate of the pixels [0.25].")] = None,
        betas: Annotated[
            str, typer.Option(help="Adam betas, e.g. 0.9,0.999 \\[the setting's].")
        ] = None,
        clip: Annotated[
            bool, typer.Option("--clip/--no-clip", help="Clamp pixels to [0, 1] \\[the setting's].")
        ] = None,
        schedule: Annotated[
            str, typer.Option(help="cosine (with warm-up, per stage) or constant \\[cosine].")
        ] = None,
        r_feature: Annotated[float, typer.Option(help="BN-statistics weight [0.01].")] = None,
        first_bn_multiplier: Annotated[
            float, typer.Option(help="Extra weight of the first BN layer [10].")
        ] = None,
        tv_l1: Annotated[float, typer.Option(help="L1 total-variation weight [0].")] = None,
        tv_l2: Annotated[float, typer.Option(help="L2 total-variation weight [1e-4].")] = None,
        l2: Annotated[float, typer.Option(help="Weight of the mean image L2 norm [1e-5].")] = None,
        main_loss_multiplier: Annotated[
            float, typer.Option(help="Weight of the cross-entropy on the targets [1].")
        ] = None,
        adi_scale: Annotated[
            float, typer.Option(help="ADI competition weight; the verifier competes [0].")
        ] = None,
        verifier: Annotated[
            str, typer.Option(help="Second network that scores the images (and competes in ADI).")
        ] = None,
        verifier_weights: Annotated[
            str, typer.Option(help="The verifier's weights (default: as for --weights).")
        ] = None,
        random_labels: Annotated[
            bool, typer.Option("--random-labels", help="Random targets instead of 0..K-1 cycled.")
        ] = None,
        labels: Annotated[
            str, typer.Option(help="Target classes, e.g. 1,933,946, repeated to the batch size.")
        ] = None,
        jitter: Annotated[int, typer.Option(help="Largest random shift in pixels [30].")] = None,
        flip: Annotated[
            bool, typer.Option("--flip/--no-flip", help="Random horizontal flips [flip].")
        ] = None,
        mixed_precision: Annotated[
            str, typer.Option("--mixed-precision", help="no or bf16 [no].")
        ] = None,
        cpu: Annotated[bool, typer.Option("--cpu", help="Stay on the CPU.")] = None,
        data_root: Annotated[str, typer.Option(help="Folder that holds the datasets.")] = None,
        out: Annotated[
            str, typer.Option("--out", "-O", help="Output folder (default runs/<date>-invert-...).")
        ] = None,
        overwrite: Annotated[
            bool, typer.Option("--overwrite", help="Replace an existing output folder.")
        ] = None,
        log_every: Annotated[
            int, typer.Option(help="Iterations between progress lines [100].")
        ] = None,
        seed: Annotated[int, typer.Option(help="Random seed [0].")] = None,
    ) -> None:
        """Invert a trained classifier into images (NVlabs DeepInversion / ADI)."""
        from dfkd_plugin_deepinv.invert import run_inversion
        from dfkd_plugin_deepinv.invert_options import build_config

        given = {
            "model": model,
            "dataset": dataset,
            "weights": weights,
            "pretrained": pretrained or None,
            "batch_size": batch_size,
            "setting": setting,
            "iterations": iterations,
            "lr": lr,
            "betas": _betas(betas),
            "clip": clip,
            "schedule": schedule,
            "r_feature": r_feature,
            "first_bn_multiplier": first_bn_multiplier,
            "tv_l1": tv_l1,
            "tv_l2": tv_l2,
            "l2": l2,
            "main_loss_multiplier": main_loss_multiplier,
            "adi_scale": adi_scale,
            "verifier": verifier,
            "verifier_weights": verifier_weights,
            "random_labels": random_labels,
            "labels": _labels(labels),
            "jitter": jitter,
            "flip": flip,
            "mixed_precision": mixed_precision,
            "cpu": cpu,
            "data_root": data_root,
            "out": out,
            "overwrite": overwrite,
            "log_every": log_every,
            "seed": seed,
        }
        cfg = build_config(preset, given)
        result = run_inversion(
            cfg,
            plugins=plugins,
            report=lambda row: err_console.print(format_row(row), highlight=False),
        )
        summary = (
            f"kept batch: loss {result.loss:.4f}, teacher accuracy {result.teacher_accuracy:.1f}%"
        )
        if result.verifier_accuracy is not None:
            summary += f", Verifier accuracy {result.verifier_accuracy:.1f}%"
        summary += f"; {result.iterations} iterations in {result.seconds:.1f} s"
        err_console.print(summary, highlight=False)
        console.print(f"images: {result.out}", highlight=False)
        err_console.print(
            f"distil on them: dfkd kd --transfer-set folder:{result.out} ...", highlight=False
        )
