"""A rich progress bar for the training loop: main process only, and only on a terminal."""

from __future__ import annotations

import time
from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from dfkd.cli.console import err_console

#: the scores an epoch's line shows, as percentages: test top-1 or mIoU and pixel accuracy,
#: and agreement with the teacher on the synthetic validation set
SCORES = ("top1", "miou", "pixel_acc", "agree")


class ProgressReporter:
    """Shows epoch, step, loss, last test accuracy and ETA; prints one line per epoch."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.live = enabled and err_console.is_terminal
        self.progress: Progress | None = None
        self.task: Any = None
        self.last_acc = "-"
        self.epochs = 0
        self.valset_started = 0.0

    def validation_set(self, line: str) -> None:
        """The set the run is scored on, before it is made: a slow teacher's takes a while."""
        self.valset_started = time.monotonic()
        if self.enabled:
            err_console.print(line, highlight=False)

    def validation_progress(self, done: int, total: int) -> None:
        if self.enabled:
            seconds = time.monotonic() - self.valset_started
            err_console.print(
                f"validation set: {done}/{total} images  {seconds:.1f}s", highlight=False
            )

    def start(self, epochs: int, first_epoch: int) -> None:
        self.epochs = epochs
        if first_epoch and self.enabled:
            err_console.print(f"Resuming after epoch {first_epoch} of {epochs}.")
        if self.live:
            self.progress = Progress(
                TextColumn("epoch {task.fields[epoch]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}  acc {task.fields[acc]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=err_console,
                transient=True,
            )
            self.progress.start()

    def epoch_start(self, epoch: int, steps: int) -> None:
        if self.progress is not None:
            if self.task is not None:
                self.progress.remove_task(self.task)
            self.task = self.progress.add_task(
                "", total=steps, epoch=f"{epoch + 1}/{self.epochs}", loss="-", acc=self.last_acc
            )

    def step(self, logs: dict[str, float]) -> None:
        if self.progress is not None:
            self.progress.update(self.task, advance=1, loss=f"{logs['loss']:.4f}")

    def epoch_end(self, row: dict[str, Any]) -> None:
        """One line per epoch: test accuracy where there is a test split, the agreement with the
        teacher on the synthetic validation set, the best so far (and by which score)."""
        by = row.get("best_by", "top1")
        self.last_acc = f"{row.get(by or 'agree', 0.0):.2f}%"
        if self.enabled:
            shown = [f"{k} {row[k]:.2f}%" for k in SCORES if k in row]
            extra = "".join(
                f"  {k} {row[k]:.4g}"
                for k in row
                if k not in {"epoch", *SCORES, "top5", "best", "images", "lr", "gpu_peak_mb"}
                # the time ends the line; gradient norms and answer shares are for metrics.jsonl
                and not k.startswith(("seconds", "val_top", "syn_", "batch_top", "grad_norm"))
                and isinstance(row[k], float)
            )
            best = f"  best {row.get('best', 0.0):.2f}%" if by else ""
            err_console.print(
                f"epoch {row['epoch']}/{self.epochs}  {'  '.join(shown)}{best}{extra}  "
                f"{row.get('seconds', 0):.1f}s",
                highlight=False,
            )
            for note in row.get("guard_notes", []):
                err_console.print(f"[yellow]collapse guard[/]: {note}", highlight=False)

    def rolled_back(self, event: str) -> None:
        if self.enabled:
            err_console.print(f"[yellow]collapse guard[/]: {event}", highlight=False)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
