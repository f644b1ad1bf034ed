"""`dfkd make-scenes`: a segmentation dataset of Fashion-MNIST items pasted on black canvases
or, with ``--style street``, on colour street scenes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dfkd.cli.console import console, guarded
from dfkd.cli.options import DataRoot, Download, Quiet
from dfkd.plugins import Plugins

Seed = Annotated[int, typer.Option(help="Random seed; the same arguments write the same files.")]
Train = Annotated[int, typer.Option(help="Train scenes, of Fashion-MNIST's train split.")]
Test = Annotated[int, typer.Option(help="Test scenes, of its test split.")]


def add_commands(app: typer.Typer, plugins: Plugins) -> None:
    @app.command("make-scenes", rich_help_panel="Data")
    @guarded
    def make_scenes_command(
        out: Annotated[
            Path,
            typer.Argument(
                help="Folder to write (absent or empty); read it as --dataset folder:OUT.",
                metavar="OUT",
                show_default=False,
            ),
        ],
        seed: Seed = 0,
        train: Train = 10000,
        test: Test = 2000,
        style: Annotated[
            str,
            typer.Option(
                help="black: grey items on black canvases; street: colour street scenes "
                "(sky, buildings, road) with tinted items, CamVid-like."
            ),
        ] = "black",
        size: Annotated[
            int | None,
            typer.Option(help="Side of each square scene in pixels \\[default: 64; street 128]."),
        ] = None,
        min_items: Annotated[
            int | None, typer.Option(help="Fewest items in a scene \\[default: 2; street 3].")
        ] = None,
        max_items: Annotated[
            int | None, typer.Option(help="Most items in a scene \\[default: 4; street 6].")
        ] = None,
        data_root: DataRoot = None,
        download: Download = False,
        quiet: Quiet = False,
    ) -> None:
        """Write a segmentation dataset of Fashion-MNIST scenes (images and class-id masks)."""
        from dfkd.data import open_dataset
        from dfkd.data.scenes import make_scenes

        source = open_dataset("fashion-mnist", data_root, download, plugins=plugins)
        made = make_scenes(
            out,
            source,
            seed=seed,
            train=train,
            test=test,
            size=size,
            min_items=min_items,
            max_items=max_items,
            style=style,
        )
        if quiet:
            return
        console.print(
            f"wrote {out}: {made['train']} train and {made['test']} test scenes of "
            f"{made['size']}x{made['size']} px, {made['classes']} classes; use it as --dataset "
            f"folder:{out}",
            highlight=False,
        )
