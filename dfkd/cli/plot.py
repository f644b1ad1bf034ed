"""`dfkd plot`: accuracy curves of runs, finished or still training, in one PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dfkd.cli.console import console, err_console, guarded
from dfkd.plugins import Plugins


def add_commands(app: typer.Typer, plugins: Plugins) -> None:
    @app.command(rich_help_panel="Results")
    @guarded
    def plot(
        run_dirs: Annotated[
            list[Path], typer.Argument(help="Run directories.", metavar="RUN_DIR...")
        ],
        out: Annotated[str, typer.Option("--out", "-O", help="PNG file to write.")] = (
            "accuracy.png"
        ),
        overwrite: Annotated[
            bool, typer.Option("--overwrite", help="Replace an existing --out file.")
        ] = False,
        x: Annotated[
            str,
            typer.Option(
                "--x", help="epoch, or steps: the student's steps (a data-free run's budget)."
            ),
        ] = "epoch",
    ) -> None:
        """Draw the test score (top-1 or mIoU) per epoch of each run on one axes.

        A run without a test split (teacher only) draws its agreement with the teacher.
        """
        from dfkd.bench.plots import plot_runs
        from dfkd.training.runs import check_output

        check_output(out, overwrite)
        path, by_agreement = plot_runs(run_dirs, Path(out), x)
        for run_dir in by_agreement:
            err_console.print(
                f"{run_dir} has no test split: its curve is its agreement with the teacher on "
                "the synthetic validation set, not accuracy.",
                highlight=False,
            )
        console.print(str(path), highlight=False)
