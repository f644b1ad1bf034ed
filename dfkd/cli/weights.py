"""`dfkd import-weights`: turn a reference checkpoint (.pth) into safetensors + sidecar."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dfkd.cli.console import console, guarded
from dfkd.plugins import Plugins


def add_commands(app: typer.Typer, plugins: Plugins) -> None:
    @app.command("import-weights", rich_help_panel="Training")
    @guarded
    def import_weights(
        file: Annotated[Path, typer.Argument(help="A .pth state dict (read with weights_only).")],
        model: Annotated[str, typer.Option("--model", "-m", help="Architecture it belongs to.")],
        dataset: Annotated[str, typer.Option("--dataset", "-d", help="Dataset it was trained on.")],
        out: Annotated[
            Path, typer.Option(help="Output file (default: the teacher checkpoint).")
        ] = None,
        data_root: Annotated[str, typer.Option(help="Only to read the dataset's metadata.")] = None,
    ) -> None:
        """Convert a pickled state dict (e.g. the reference's teachers) to safetensors."""
        from dfkd.data import open_dataset
        from dfkd.training.setup import build, default_weights_path, weights_meta
        from dfkd.weights import load_weights, save_weights

        source = open_dataset(dataset, data_root, False, plugins=plugins)
        net, spec = build(model, source, plugins)
        load_weights(net, file)
        target = out or default_weights_path(source.name, model)
        save_weights(net, target, weights_meta(spec, source, imported_from=str(file)))
        console.print(f"wrote {target}", highlight=False)
