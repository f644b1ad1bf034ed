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
from dfkd.errors import DfkdError, UsageError
from dfkd.fileio import write_atomic, write_json

CONFIG = "config.json"
METRICS = "metrics.jsonl"
STATE = "state"
START_OVER = (
    "Start the run over with its original command and --overwrite, or with --out in another "
    "directory."
)


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
        try:
            config = json.loads(self.config_file.read_text(errors="replace"))
        except json.JSONDecodeError as exc:
            raise UsageError(f"{self.config_file} is damaged ({exc}). {START_OVER}") from exc
        if not isinstance(config, dict) or not isinstance(config.get("options"), dict):
            raise UsageError(f"{self.config_file} holds no run options. {START_OVER}")
        return config

    def write_config(self, config: dict[str, Any]) -> None:
        write_json(self.config_file, config)

    def append_metrics(self, row: dict[str, Any]) -> None:
        try:
            with self.metrics_file.open("a") as f:
                f.write(json.dumps(row, sort_keys=True) + "\n")
        except OSError as exc:
            raise DfkdError(
                f"Could not append to {self.metrics_file}: {exc.strerror or exc}."
            ) from exc

    def read_metrics(self) -> list[dict[str, Any]]:
        """The rows, one per epoch. A last line without its newline is the torn write of a killed
        process: it is left out (and a resume rewrites the file without it)."""
        if not self.metrics_file.exists():
            return []
        *lines, _torn_or_empty = self.metrics_file.read_text(errors="replace").split("\n")
        rows = []
        for number, line in enumerate(lines, 1):
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise UsageError(
                    f"{self.metrics_file} is damaged at line {number} ({exc.msg}). {START_OVER}"
                ) from exc
        return rows

    def truncate_metrics(self, epochs_done: int) -> None:
        """Drop metric rows of epochs that ran after the checkpoint a resume starts from."""
        kept = [r for r in self.read_metrics() if r.get("epoch", 0) <= epochs_done]
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept)
        write_atomic(self.metrics_file, lambda tmp: tmp.write_text(text))


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
    if path.exists() and not path.is_dir():
        raise UsageError(f"{path} is a file, not a run directory; choose another --out.")
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
