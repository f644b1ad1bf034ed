"""`dfkd export` and `dfkd quantize`: a student as a file a runtime loads, checked by PyTorch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dfkd.cli.console import console, guarded
from dfkd.plugins import Plugins

#: what `dfkd export` and `dfkd quantize` both take
Source = Annotated[
    Path,
    typer.Argument(
        help="A run directory, or a .safetensors file with its JSON sidecar.",
        metavar="RUN_DIR|WEIGHTS",
        show_default=False,
    ),
]
Which = Annotated[
    str, typer.Option(help="A run's last (student.safetensors) or best (student-best) weights.")
]
IncludeNormalization = Annotated[
    bool,
    typer.Option(
        "--include-normalization",
        help="Bake (x - mean) / std into the graph, so it takes pixels in [0, 1].",
    ),
]
OverwriteOutput = Annotated[
    bool, typer.Option("--overwrite", help="Replace an existing output and sidecar.")
]


def add_commands(app: typer.Typer, plugins: Plugins) -> None:
    @app.command("export", rich_help_panel="Deployment")
    @guarded
    def export_command(
        source: Source,
        fmt: Annotated[str, typer.Option("--format", "-f", help="onnx or torchscript.")] = "onnx",
        which: Which = "last",
        out: Annotated[
            Path,
            typer.Option(
                "--out", "-O", help="Output file (default: student.onnx etc. beside the weights)."
            ),
        ] = None,
        include_normalization: IncludeNormalization = False,
        input_size: Annotated[
            int, typer.Option(help="Image side for students of any size (timm:, torchvision:).")
        ] = None,
        overwrite: OverwriteOutput = False,
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

    @app.command("quantize", rich_help_panel="Deployment")
    @guarded
    def quantize_command(
        source: Source,
        scheme: Annotated[
            str, typer.Option(help="Weight and activation widths: w8a8 (what onnxruntime runs).")
        ] = "w8a8",
        teacher_weights: Annotated[
            Path,
            typer.Option(
                help="Teacher whose synthetic images calibrate (default: the run's teacher, or "
                "the model itself)."
            ),
        ] = None,
        calibration_dataset: Annotated[
            str,
            typer.Option(
                help="Calibrate on this dataset's real training images instead: not data-free, "
                "a reference to compare against."
            ),
        ] = None,
        data_root: Annotated[str, typer.Option(help="Folder that holds the datasets.")] = None,
        calibrate_method: Annotated[
            str, typer.Option(help="minmax, entropy or percentile ranges.")
        ] = "minmax",
        which: Which = "last",
        out: Annotated[
            Path,
            typer.Option("--out", "-O", help="Output file (default: student.int8.onnx beside it)."),
        ] = None,
        include_normalization: IncludeNormalization = False,
        overwrite: OverwriteOutput = False,
    ) -> None:
        """Quantise a classifier to INT8 ONNX, calibrated on images made from its teacher."""
        from dfkd.quantize import quantize_model

        done = quantize_model(
            source,
            scheme=scheme,
            which=which,
            teacher_weights=teacher_weights,
            calibration_dataset=calibration_dataset,
            data_root=data_root,
            calibrate_method=calibrate_method,
            out=out,
            overwrite=overwrite,
            include_normalization=include_normalization,
            plugins=plugins,
        )
        console.print(f"int8 onnx: {done.path}", highlight=False)
        console.print(f"sidecar: {done.sidecar}", highlight=False)
        console.print(
            f"calibrated on {done.calibration_images} images, {done.calibration}", highlight=False
        )
        console.print(
            f"verified on held-out synthetic images against {done.against}: top-1 agreement "
            f"{done.agreement:.1f} %, max abs difference {done.max_abs_diff:.2g}; "
            f"{done.int8_bytes / 1024:.0f} KiB (float {done.float_bytes / 1024:.0f} KiB)",
            highlight=False,
        )
