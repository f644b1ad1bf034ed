"""`dfkd nayer embed-labels`: the label-text embeddings a NAYER run reads beside its teacher.

Torch-free at import, like every CLI module: the command imports torch when it runs.
"""

from __future__ import annotations

from typing import Annotated

import typer

from dfkd.api import Plugins, console, guarded
from dfkd.api import cli_options as opts


def add_commands(app: typer.Typer, plugins: Plugins) -> None:
    """`dfkd nayer ...`: the command group, resolving names through the CLI's plugin set."""
    group = typer.Typer(
        name="nayer",
        help="NAYER: label-text embeddings for its generator (dfkd run nayer).",
        no_args_is_help=True,
    )

    @group.command("embed-labels")
    @guarded
    def embed_labels(
        dataset: opts.Dataset = None,
        teacher: Annotated[
            str, typer.Option(help="Teacher architecture (finds checkpoints/<dataset>-<teacher>).")
        ] = None,
        teacher_weights: Annotated[
            str, typer.Option(help="Teacher weights file; the embeddings are written beside it.")
        ] = None,
        prompt: Annotated[
            str, typer.Option(help="Text per class; {} is the class name.")
        ] = "a image of {}",
        encoder: Annotated[
            str,
            typer.Option(
                help="clip (CLIP ViT-B/32 via open_clip or transformers) or module:attribute "
                "naming an object with encode(list[str]) -> Tensor, or a factory of one."
            ),
        ] = "clip",
        from_file: Annotated[
            str,
            typer.Option(
                "--from",
                help="Import finished embeddings instead of running an encoder: one row per "
                "class, in the dataset's order, as safetensors, torch.save or a pickled tensor "
                "(the reference's cifar10_le.pickle).",
            ),
        ] = None,
        out: Annotated[
            str,
            typer.Option(
                "--out",
                "-O",
                help="Output file (default: <teacher weights stem>.labels.safetensors).",
            ),
        ] = None,
        overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace --out.")] = False,
        data_root: opts.DataRoot = None,
    ) -> None:
        """Embed the dataset's class names with a text encoder, or import finished embeddings,
        once per teacher."""
        from pathlib import Path

        from dfkd.api import UsageError, default_weights_path, open_dataset, require_options
        from dfkd_plugin_nayer.embeddings import (
            PROMPT,
            compute_label_embeddings,
            default_embeddings_path,
            import_label_embeddings,
            load_encoder,
            save_label_embeddings,
        )

        require_options(dataset=dataset)
        if teacher_weights is None and out is None:
            require_options(teacher=teacher)
        if "{}" not in prompt:
            raise UsageError(f"--prompt must contain {{}} for the class name, got '{prompt}'.")
        if from_file and (prompt != PROMPT or encoder != "clip"):
            raise UsageError("--from imports finished embeddings; drop --prompt and --encoder.")
        source = open_dataset(dataset, data_root, plugins=plugins)
        weights = teacher_weights or (teacher and default_weights_path(dataset, teacher))
        path = Path(out) if out else default_embeddings_path(weights)
        if path.exists() and not overwrite:
            raise UsageError(f"{path} exists; pass --overwrite to replace it.")
        if from_file:
            rows = import_label_embeddings(from_file, len(source.classes))
            save_label_embeddings(path, rows, source.classes, imported=from_file)
        else:
            text_encoder = load_encoder(encoder)
            rows = compute_label_embeddings(source.classes, text_encoder, prompt)
            name = getattr(text_encoder, "name", encoder)
            save_label_embeddings(path, rows, source.classes, prompt=prompt, encoder=name)
        console.print(
            f"{rows.shape[0]} label embeddings of size {rows.shape[1]}: {path}", highlight=False
        )

    app.add_typer(group, rich_help_panel="Methods")
