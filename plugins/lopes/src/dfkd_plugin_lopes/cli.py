"""`dfkd lopes record`: the activation records a Lopes run reconstructs its inputs from.

Torch-free at import, like every CLI module: the command imports the recording code when it runs.
"""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.table import Table

from dfkd.api import Plugins, console, err_console, guarded
from dfkd.api import cli_options as opts


def add_commands(app: typer.Typer, plugins: Plugins) -> None:
    """`dfkd lopes ...`: the command group, resolving names through the CLI's plugin set."""
    group = typer.Typer(
        name="lopes",
        help="Lopes et al. 2017: activation records for data-free distillation (dfkd run lopes).",
        no_args_is_help=True,
    )

    @group.command()
    @guarded
    def record(
        teacher: Annotated[str, typer.Option(help="Teacher architecture.")] = None,
        dataset: opts.Dataset = None,
        teacher_weights: Annotated[
            str,
            typer.Option(help="Teacher weights file (default: checkpoints/<dataset>-<teacher>)."),
        ] = None,
        layers: Annotated[
            list[str],
            typer.Option(
                "--layers",
                help="Module paths to record, repeated or comma-separated (default: every "
                "Conv2d/Linear output but the last); logits/T is always recorded.",
            ),
        ] = None,
        covariance: Annotated[
            bool, typer.Option("--covariance", help="Also keep each layer's covariance (Cholesky).")
        ] = False,
        spectral: Annotated[
            bool, typer.Option("--spectral", help="Also keep the spectral summary (spectral_*).")
        ] = False,
        spectral_k: Annotated[int, typer.Option(help="Graph-Fourier modes kept per group.")] = 64,
        spectral_units: Annotated[
            int, typer.Option(help="Larger layers are pooled or projected to this many units.")
        ] = 256,
        max_cov_units: Annotated[
            int, typer.Option(help="--covariance skips layers with more units than this.")
        ] = 1500,
        temperature: Annotated[float, typer.Option(help="The top layer is logits/T.")] = 8.0,
        batch_size: opts.BatchSize = 500,
        seed: opts.Seed = 0,
        cpu: opts.Cpu = False,
        data_root: opts.DataRoot = None,
        download: opts.Download = False,
        out: Annotated[
            str,
            typer.Option(
                "--out",
                "-O",
                help="Records file (default: checkpoints/<dataset>-<teacher>.lopes...).",
            ),
        ] = None,
        overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace --out.")] = False,
    ) -> None:
        """Stream the training split through the teacher and save per-class activation moments."""
        from dfkd.api import require_options
        from dfkd_plugin_lopes.records import make_records

        require_options(teacher=teacher, dataset=dataset)
        names = [n.strip() for item in layers or [] for n in item.split(",") if n.strip()]
        started = time.perf_counter()
        path, records = make_records(
            teacher,
            dataset,
            teacher_weights=teacher_weights,
            out=out,
            overwrite=overwrite,
            data_root=data_root,
            download=download,
            cpu=cpu,
            plugins=plugins,
            layers=names or None,
            covariance=covariance,
            spectral=spectral,
            spectral_k=spectral_k,
            spectral_units=spectral_units,
            max_cov_units=max_cov_units,
            temperature=temperature,
            batch_size=batch_size,
            seed=seed,
        )
        table = Table("layer", "shape", "units", "covariance")
        for layer in records.header["layers"]:
            shape = "x".join(map(str, layer["shape"]))
            name = f"{layer['name']}/T" if layer is records.header["layers"][-1] else layer["name"]
            units = str(records.size(layer["name"]))
            table.add_row(name, shape, units, "yes" if layer["covariance"] else "no")
        console.print(table)
        groups = records.groups
        if groups:
            err_console.print(
                f"spectral: {len(groups)} groups (all layers, {len(groups) - 1} pairs), "
                f"{records.header['spectral']['k']} modes each",
                highlight=False,
            )
        seconds = time.perf_counter() - started
        err_console.print(
            f"{records.header['examples']} training images in {seconds:.1f}s; "
            f"objectives: {', '.join(records.objectives)}",
            highlight=False,
        )
        console.print(f"records: {path}", highlight=False)
        err_console.print(
            f"use: dfkd run lopes --teacher {teacher} --dataset {dataset} -o records={path} ...",
            highlight=False,
        )

    app.add_typer(group, name="lopes", rich_help_panel="Methods")
