"""The options every training command shares, as typed annotations: a plugin's command takes
them from here (``dfkd.api.cli_options``) so its flags read like the core's."""

from __future__ import annotations

from typing import Annotated

import typer

Dataset = Annotated[str, typer.Option("--dataset", "-d", help="Dataset name (see dfkd datasets).")]
Epochs = Annotated[int, typer.Option(help="Training epochs.")]
BatchSize = Annotated[int, typer.Option(help="Minibatch size (per process).")]
Lr = Annotated[float, typer.Option(help="Initial learning rate (SGD).")]
WeightDecay = Annotated[float, typer.Option(help="SGD weight decay.")]
Schedule = Annotated[str, typer.Option(help="cosine, multistep (x0.1 at 60/75/90%) or constant.")]
Augment = Annotated[
    str, typer.Option(help="auto (crop+flip on colour 32 px data), crop-flip, none.")
]
Seed = Annotated[int, typer.Option(help="Random seed; the same seed repeats a CPU run exactly.")]
Precision = Annotated[
    str,
    typer.Option(
        "--mixed-precision",
        help="no, fp16, bf16, or auto: bf16 where it is measured faster (CPU) or supported (CUDA).",
    ),
]
Cpu = Annotated[bool, typer.Option("--cpu", help="Stay on the CPU even when a GPU is present.")]
DataRoot = Annotated[str, typer.Option(help="Folder that holds the datasets.")]
Download = Annotated[bool, typer.Option("--download", help="Download the dataset if missing.")]
Out = Annotated[str, typer.Option("--out", "-O", help="Run directory (default runs/<date>-...).")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace an existing run directory.")]
Resume = Annotated[str, typer.Option(help="Continue the run in this directory.", metavar="RUN_DIR")]
LogWith = Annotated[
    str,
    typer.Option(
        help="Also log each epoch to trackers: tensorboard, wandb, ... (comma-separated; "
        "TensorBoard: tensorboard --logdir RUN_DIR).",
        metavar="TRACKERS",
    ),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or epoch lines.")]
