"""Atomic writes: a file is either the old version or the complete new one, never half of each."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from dfkd.errors import DfkdError

# Temporaries are ".<name>.<random>.dfkd.tmp": hidden, next to their target, and recognisable as
# dfkd's own, so that a run opened for resume can remove those a killed process left behind
# without touching anybody else's files.
TEMPORARY_SUFFIX = ".dfkd.tmp"


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path``, renamed over it only if the block succeeds.

    Any failure of the block counts as a failed write and becomes a `DfkdError`: torch reports a
    full disk as a RuntimeError and safetensors as its own SafetensorError, not as OSError.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX, dir=path.parent
        )
        os.close(fd)
    except OSError as exc:
        raise DfkdError(f"Cannot write to {path.parent}: {exc.strerror or exc}.") from exc
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except Exception as exc:  # noqa: BLE001 - see the docstring
        kept = f"; the previous {path.name} is intact." if path.exists() else "."
        raise DfkdError(
            f"Could not write {path}: {error_reason(exc)}. Nothing was changed{kept}"
        ) from exc
    finally:
        tmp_path.unlink(missing_ok=True)


def write_atomic(path: str | Path, writer: Callable[[Path], Any]) -> None:
    with atomic_path(path) as tmp:
        writer(tmp)


def write_json(path: str | Path, data: Any) -> None:
    text = json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"
    write_atomic(path, lambda tmp: tmp.write_text(text))


def remove_temporaries(folder: Path) -> None:
    """Delete the temporaries that writers killed mid-write left anywhere under ``folder``."""
    for leftover in folder.rglob(f".*{TEMPORARY_SUFFIX}"):
        leftover.unlink(missing_ok=True)


def error_reason(exc: BaseException) -> str:
    """The cause of a failed write in a few words: the OS's wording, or the error's first line."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def sha256_of(path: str | Path) -> str:
    """The hex sha256 of a file's bytes: what tells one weights file from another (a teacher's
    validation set, the teacher a run was started with). A run asks for its teacher's more than
    once, so it is read once per file, size and modification time."""
    path = Path(path).resolve()
    stat = path.stat()
    return _sha256(path, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _sha256(path: Path, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def held_lock(path: str | Path, required: bool = True) -> Iterator[None]:
    """Wait for, then hold, an exclusive ``flock`` on ``path`` (made if missing), so that
    processes deciding on one shared file decide one after another. The OS drops the lock when
    its holder dies: a killed process leaves no stale lock. Where the folder cannot be written,
    a lock that is not ``required`` is skipped and nobody waits."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        if not required:
            yield
            return
        raise DfkdError(f"Cannot write to {path.parent}: {exc.strerror or exc}.") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the only descriptor releases the lock
