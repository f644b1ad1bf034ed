"""The run directory: everything one command produces, and what `--resume` reads back."""

from __future__ import annotations

import datetime as _dt
import json
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dfkd import __version__
from dfkd.errors import UsageError
from dfkd.fileio import write_json

CONFIG = "config.json"
METRICS = "metrics.jsonl"
STATE = "state"


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG

    @property
    def metrics_file(self) -> Path:
        return self.path / METRICS

    @property
    def state_dir(self) -> Path:
        return self.path / STATE

    def read_config(self) -> dict[str, Any]:
        if not self.config_file.exists():
            raise UsageError(f"{self.path} is not a dfkd run directory (no {CONFIG}).")
        return json.loads(self.config_file.read_text())

    def write_config(self, config: dict[str, Any]) -> None:
        write_json(self.config_file, config)

    def append_metrics(self, row: dict[str, Any]) -> None:
        with self.metrics_file.open("a") as f:
            f.write(json.dumps(row, sort_keys=True) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_file.exists():
            return []
        return [json.loads(line) for line in self.metrics_file.read_text().splitlines() if line]

    def truncate_metrics(self, epochs_done: int) -> None:
        """Drop metric rows of epochs that ran after the checkpoint a resume starts from."""
        kept = [r for r in self.read_metrics() if r.get("epoch", 0) <= epochs_done]
        self.metrics_file.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))


def default_run_path(command: str, model: str, dataset: str, root: Path = Path("runs")) -> Path:
    """``runs/<date>-<command>-<model>-<dataset>``, with a counter when that name is taken."""
    safe = "-".join(_slug(p) for p in (command, model, dataset))
    base = root / f"{_dt.date.today().isoformat()}-{safe}"
    candidate, n = base, 2
    while candidate.exists():
        candidate, n = base.with_name(f"{base.name}-{n}"), n + 1
    return candidate


def create_run(path: Path, *, overwrite: bool) -> RunDir:
    """A fresh run directory; an existing one is replaced only when the user said --overwrite."""
    if path.exists() and any(path.iterdir()):
        if not overwrite:
            raise UsageError(
                f"Run directory {path} already exists. Use --resume {path} to continue it, "
                "--overwrite to replace it, or --out for another directory."
            )
        if not (path / CONFIG).exists():
            raise UsageError(f"Refusing to overwrite {path}: it is not a dfkd run directory.")
        shutil.rmtree(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"Cannot create run directory {path}: {exc.strerror or exc}.") from exc
    return RunDir(path)


def versions(extra: dict[str, str] | None = None) -> dict[str, str]:
    import torch

    found = {"dfkd": __version__, "torch": torch.__version__, "python": platform.python_version()}
    return {**found, **(extra or {})}


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)
