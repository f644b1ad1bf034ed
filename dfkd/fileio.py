"""Atomic writes: a file is either the old version or the complete new one, never half of each."""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from shutil import disk_usage
from typing import Any

from filelock import FileLock

from dfkd.errors import DfkdError, DiskFull

# Temporaries are ".<name>.<random>.dfkd.tmp": hidden, next to their target, and recognisable as
# dfkd's own, so that a run opened for resume can remove those a killed process left behind
# without touching anybody else's files.
TEMPORARY_SUFFIX = ".dfkd.tmp"

#: What the OS says when a disk, or the user's share of it, is full.
FULL_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
#: Free bytes under which a failed write that carries no errno is put down to a full disk: torch's
#: writer reports ENOSPC as a RuntimeError ("unexpected pos", "PytorchStreamWriter failed writing
#: file"), safetensors as its own error. A write that filled the disk leaves less than a block.
NEARLY_FULL = 1 << 20


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path``, renamed over it only if the block succeeds.

    Any failure of the block counts as a failed write and becomes a `DfkdError` (`DiskFull` where
    the disk is full): torch reports a full disk as a RuntimeError and safetensors as its own
    SafetensorError, not as OSError. Only ``path`` is vouched for: a command that wrote other
    files before it has changed those.
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
        exists = path.exists()
        kept = f"the previous {path.name} is intact" if exists else "no partial file was left"
        raise write_error(path, exc, kept) from exc
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


def write_error(path: Path, exc: BaseException, kept: str) -> DfkdError:
    """The one-line error of a failed write of ``path``, ``kept`` saying what is left of it. The
    free space is measured before the partial file is removed: a write that filled the disk
    leaves room again once its temporary is gone."""
    try:
        free: int | None = disk_usage(path.parent).free
    except OSError:
        free = None
    if isinstance(exc, OSError):
        full = exc.errno in FULL_DISK_ERRNOS
    else:
        full = free is not None and free < NEARLY_FULL
    if not full:
        return DfkdError(f"Could not write {path}: {error_reason(exc)}; {kept}.")
    if isinstance(exc, OSError) and exc.errno == errno.EDQUOT:
        why = f"your disk quota for {path.parent} is used up"
    else:
        why = f"the disk holding {path.parent} is full"
        why += f" ({_size(free)} free)" if free is not None else ""
    return DiskFull(
        f"Could not write {path}: {why}; {kept}. Free some space there, or write to another "
        "disk with --out."
    )


def _size(n: int) -> str:
    """``n`` bytes for a reader: 0 bytes, 12.0 KiB, 3.4 GiB."""
    value, unit = float(n), "bytes"
    for larger in ("KiB", "MiB", "GiB", "TiB"):
        if value < 1024:
            break
        value, unit = value / 1024, larger
    return f"{n} bytes" if unit == "bytes" else f"{value:.1f} {unit}"


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
    """Wait for, then hold, an exclusive lock on ``path`` (made if missing), so that processes
    deciding on one shared file decide one after another. The OS drops the lock when its holder
    dies: a killed process leaves no stale lock. Where the folder cannot be written, a lock that
    is not ``required`` is skipped and nobody waits."""
    path = Path(path)
    lock = FileLock(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except OSError as exc:
        if not required:
            yield
            return
        raise DfkdError(f"Cannot write to {path.parent}: {exc.strerror or exc}.") from exc
    try:
        yield
    finally:
        lock.release()
