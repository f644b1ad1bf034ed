"""`dfkd import-weights`: turn a reference checkpoint (.pth) into safetensors + sidecar."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dfkd.cli.console import console, err_console, guarded
from dfkd.plugins import Plugins


def add_commands(app: typer.Typer, plugins: Plugins) -> None:
    @app.command("import-weights", rich_help_panel="Training")
    @guarded
    def import_weights(
        file: Annotated[Path, typer.Argument(help="A .pth state dict (read with weights_only).")],
        model: Annotated[str, typer.Option("--model", "-m", help="Architecture it belongs to.")],
        dataset: Annotated[str, typer.Option("--dataset", "-d", help="Dataset it was trained on.")],
        out: Annotated[
            Path,
            typer.Option(
                help="Output file (default: the default teacher checkpoint if there is none yet, "
                "else beside it as <dataset>-<model>-N)."
            ),
        ] = None,
        set_default: Annotated[
            bool,
            typer.Option("--set-default", help="Replace the default teacher checkpoint."),
        ] = False,
        overwrite: Annotated[
            bool, typer.Option("--overwrite", help="Replace an existing --out file.")
        ] = False,
        data_root: Annotated[str, typer.Option(help="Only to read the dataset's metadata.")] = None,
    ) -> None:
        """Convert a state dict (.pth, or a run's .safetensors) into a teacher checkpoint."""
        from dfkd.data import open_dataset
        from dfkd.errors import UsageError
        from dfkd.training.runs import check_output
        from dfkd.training.setup import (
            build,
            default_teacher_lock,
            default_weights_path,
            weights_meta,
        )
        from dfkd.weights import load_weights, save_weights

        if out and set_default:
            raise UsageError("--set-default writes the default teacher checkpoint; drop --out.")
        source = open_dataset(dataset, data_root, False, plugins=plugins)
        net, spec = build(model, source, plugins)
        load_weights(net, file)
        meta = weights_meta(spec, source, imported_from=str(file))
        default = default_weights_path(source.name, model)
        if out and out.resolve() != default.resolve():
            check_output(out, overwrite)
            target = out
            save_weights(net, target, meta)
        else:  # the default, or beside it: chosen and written under the default's lock
            with default_teacher_lock(default):
                if out and default.exists():
                    raise UsageError(
                        f"--out {out} is the default teacher checkpoint; replace it with "
                        "--set-default instead of --out."
                    )
                target = default if out or set_default or not default.exists() else _beside(default)
                save_weights(net, target, meta)
        console.print(f"wrote {target}", highlight=False)
        if not out and target != default:
            err_console.print(
                f"The default teacher {default} is unchanged. Use the new weights with "
                f"--teacher-weights {target}, or import them with --set-default to replace it.",
                highlight=False,
            )


def _beside(default: Path) -> Path:
    """``<dataset>-<model>-N.safetensors``, the first N from 2 not taken: next to the default
    teacher, so an import never replaces a trained one unasked."""
    n = 2
    while (candidate := default.with_name(f"{default.stem}-{n}{default.suffix}")).exists():
        n += 1
    return candidate
