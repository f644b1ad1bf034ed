"""Datasets by name: built-ins and plugins' alike, opened through the dataset registry.

Importing this package stays light; torch loads when a dataset is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from dfkd.errors import UsageError
from dfkd.plugins import Plugins, get_plugins

if TYPE_CHECKING:
    from dfkd.data.source import DataSource

__all__ = ["open_dataset"]


def open_dataset(
    name: str,
    root: str | Path | None = None,
    download: bool = False,
    plugins: Plugins | None = None,
) -> DataSource:
    """The dataset ``name`` (``cifar10``, ``folder:PATH``, ...); built-ins find (or fetch) their
    files on first ``load``, so metadata alone needs no data on disk."""
    entry = (plugins or get_plugins()).datasets.get(name)
    if root is not None and not download and not Path(root).expanduser().is_dir():
        # otherwise the search would quietly go on to $DFKD_DATA, ./data and system copies
        raise UsageError(f"--data-root {root} does not exist (add --download to download into it).")
    return entry.build(root=root, download=download)
