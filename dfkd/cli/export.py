"""`dfkd export`: a trained student as an ONNX or TorchScript file, verified against PyTorch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dfkd.cli.console import console, guarded
from dfkd.plugins import Plugins


def add_commands(app: typer.Typer, plugins: Plugins) -> None:
    @app.command("export", rich_help_panel="Deployment")
    @guarded
    def export_command(
        source: Annotated[
            Path,
            typer.Argument(
                help="A run directory, or a .safetensors file with its JSON sidecar.",
                metavar="RUN_DIR|WEIGHTS",
                show_default=False,
            ),
        ],
        fmt: Annotated[str, typer.Option("--format", "-f", help="onnx or torchscript.")] = "onnx",
        which: Annotated[
            str,
            typer.Option(help="A run's last (student.safetensors) or best (student-best) weights."),
        ] = "last",
        out: Annotated[
            Path,
            typer.Option(
                "--out", "-O", help="Output file (default: student.onnx etc. beside the weights)."
            ),
        ] = None,
        include_normalization: Annotated[
            bool,
            typer.Option(
                "--include-normalization",
                help="Bake (x - mean) / std into the graph, so it takes pixels in [0, 1].",
            ),
        ] = False,
        input_size: Annotated[
            int, typer.Option(help="Image side for students of any size (timm:, torchvision:).")
        ] = None,
        overwrite: Annotated[
            bool, typer.Option("--overwrite", help="Replace an existing output and sidecar.")
        ] = False,
    ) -> None:
        """Export a student to ONNX or TorchScript, checked against PyTorch, with a sidecar."""
        from dfkd.export import VERIFY_BATCHES, export_student

        done = export_student(
            source,
            fmt,
            which=which,
            out=out,
            overwrite=overwrite,
            include_normalization=include_normalization,
            input_size=input_size,
            plugins=plugins,
        )
        sizes = " and ".join(str(n) for n in VERIFY_BATCHES)
        console.print(f"{done.format}: {done.path}", highlight=False)
        console.print(f"sidecar: {done.sidecar}", highlight=False)
        console.print(
            f"verified on batches of {sizes} against PyTorch: max abs difference "
            f"{done.max_abs_diff:.2g}",
            highlight=False,
        )
