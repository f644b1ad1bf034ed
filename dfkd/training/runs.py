"""The run directory: everything one command produces, and what `--resume` reads back."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from dfkd import __version__
from dfkd.errors import UsageError
from dfkd.fileio import remove_temporaries, write_atomic, write_error, write_json

CONFIG = "config.json"
METRICS = "metrics.jsonl"
STATE = "state"
LOCK = ".lock"
#: the pid of the process holding the lock, for the refusal to name: beside the lock, not in it,
#: since filelock may empty or remove the lock file itself
HOLDER = ".lock.pid"
#: how long a reader waits on the lock before it calls the run in use: long enough for another
#: reader's test of it, which holds it for a moment, to end
READER_WAIT = 0.5
START_OVER = (
    "Start the run over with its original command and --overwrite, or with --out in another "
    "directory."
)


@dataclass(frozen=True)
class RunDir:
    path: Path
    #: what the in-use refusal calls this folder
    noun = "Run"

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
            raise write_error(self.metrics_file, exc, "the rows before it are intact") from exc

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

    @contextlib.contextmanager
    def lock(self, accelerator: Any = None) -> Iterator[None]:
        """Hold the run while this process writes it; another that tries gets a UsageError.

        A file lock on RUN/.lock, the holder's pid in RUN/.lock.pid for that message: the OS
        drops the lock when its holder dies, so a killed run leaves no stale lock behind. Once
        the lock is held nobody else writes here, so the temporaries of a writer killed
        mid-write are removed. Given the run's accelerator, only the main process locks, and
        every process waits until it holds the lock and has cleaned up before writing.
        """
        main = accelerator is None or accelerator.is_main_process
        with self._hold() if main else contextlib.nullcontext():
            if accelerator is not None:
                accelerator.wait_for_everyone()
            yield

    @contextlib.contextmanager
    def _hold(self) -> Iterator[None]:
        lock = FileLock(self.path / LOCK)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise self._in_use() from None
        except OSError as exc:
            raise UsageError(f"Cannot write to run directory {self.path}: {exc.strerror}.") from exc
        try:
            (self.path / HOLDER).write_text(f"{os.getpid()}\n")
            remove_temporaries(self.path)
            yield
        finally:
            (self.path / HOLDER).unlink(missing_ok=True)  # a finished run names no holder
            lock.release()

    def refuse_while_in_use(self) -> None:
        """Refuse to read a run another process is writing: its weights are an epoch in the
        middle of the run, not its result. filelock has no shared lock, so the test takes the
        lock for a moment (a run never locked has no RUN/.lock, and one this process cannot lock
        is no run being written by another)."""
        if not (self.path / LOCK).exists():
            return
        lock = FileLock(self.path / LOCK)
        try:
            lock.acquire(timeout=READER_WAIT)
        except Timeout:
            raise self._in_use() from None
        except OSError:
            return
        lock.release()

    def _in_use(self) -> UsageError:
        try:
            holder = (self.path / HOLDER).read_text(errors="replace").strip()
        except OSError:
            holder = ""
        return UsageError(
            f"{self.noun} {self.path} is in use by process {holder or 'another process'}: wait "
            "for it to finish, or stop it first."
        )


#: what a run writes in its folder besides its weights (``*.safetensors`` and their ``.json``
#: sidecars); cell.json is a bench cell's record (dfkd.bench.runner)
RUN_FILES = (CONFIG, METRICS, LOCK, HOLDER, "samples.png", "cell.json")
#: a run's subfolders: its checkpoint and its pool's images
RUN_FOLDERS = (STATE, "images")


def run_owning(path: str | Path) -> Path | None:
    """The run directory ``path`` is one of the files of, or None: its config, metrics, lock,
    sample grid, bench record, weights and sidecars, and what its subfolders hold. Files beside
    them that a command wrote on request (an export, a plot) are not the run's."""
    path = Path(path).absolute()
    folder = path.parent
    if folder.name in RUN_FOLDERS and _is_run(folder.parent):
        return folder.parent
    weights = path.suffix == ".safetensors" or (
        path.suffix == ".json" and path.with_suffix(".safetensors").exists()
    )
    if _is_run(folder) and (path.name in RUN_FILES or weights):
        return folder
    return None


def _is_run(folder: Path) -> bool:
    return (folder / CONFIG).is_file() or (folder / METRICS).is_file()


def check_output(path: str | Path, overwrite: bool) -> None:
    """Refuse an output file that exists unless ``overwrite`` (--overwrite) says to replace it,
    and one of a run's own files even then: a plot or an export written over RUN/config.json
    loses the run."""
    run = run_owning(path)
    if run is not None:
        raise UsageError(f"{path} is one of run {run}'s own files; choose another --out.")
    if Path(path).exists() and not overwrite:
        raise UsageError(f"{path} exists; pass --overwrite to replace it, or --out FILE.")


def default_run_path(command: str, model: str, dataset: str, root: Path = Path("runs")) -> Path:
    """``runs/<date>-<command>-<model>-<dataset>``, with a counter when that name is taken."""
    safe = "-".join(_slug(p) for p in (command, model, dataset))
    base = root / f"{_dt.date.today().isoformat()}-{safe}"
    candidate, n = base, 2
    while candidate.exists():
        candidate, n = base.with_name(f"{base.name}-{n}"), n + 1
    return candidate


def create_run(path: Path, *, overwrite: bool) -> RunDir:
    """A fresh run directory; an existing one is replaced only when the user said --overwrite,
    and never while another process writes it. Where ``path`` is a symbolic link, the folder it
    points to is the run's: replaced by --overwrite, made when it does not exist yet, and the
    link is kept."""
    folder = Path(os.path.realpath(path)) if path.is_symlink() else path
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
        with RunDir(path).lock():
            shutil.rmtree(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        why = exc.strerror or exc
        if path.is_symlink():
            why = f"it is a symbolic link that leads to no folder ({why}); choose another --out"
        raise UsageError(f"Cannot create run directory {path}: {why}.") from exc
    return RunDir(path)


#: The libraries whose versions move a run's numbers, recorded in every config.json (torch as
#: torch.__version__, which names its build: 2.14.1+cu130).
RECORDED_PACKAGES = ("torchvision", "accelerate", "timm", "numpy")


def versions(extra: dict[str, str] | None = None) -> dict[str, str]:
    """dfkd's, Python's and the numerics libraries' versions, and the lock the environment
    matches (dfkd/lockfile.py): what a bench report names so that a number can be reproduced."""
    from importlib import metadata

    import torch

    from dfkd.lockfile import environment_lock

    found = {"dfkd": __version__, "torch": torch.__version__, "python": platform.python_version()}
    for name in RECORDED_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    lock = environment_lock()
    if lock is not None:
        found["lock"] = lock
    source = checkout_commit()
    if source is not None:
        found["source"] = source
    return {**found, **(extra or {})}


def checkout_commit() -> str | None:
    """The commit of the git checkout dfkd runs from (an editable install), marked when the
    tracked files differ from it; None for an installed wheel. A bench whose checkout moves on
    while it runs then names the code each cell started with."""
    import subprocess

    from dfkd.lockfile import CHECKOUT_LOCK

    root = CHECKOUT_LOCK.parent
    if not (root / ".git").exists():
        return None

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, check=False, timeout=30
        )
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return None
    changed = git("status", "--porcelain", "--untracked-files=no")
    return f"{commit} with uncommitted changes" if changed else commit


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)
