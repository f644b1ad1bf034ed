"""Name-keyed registries that plugins fill through the ``register_*`` hooks."""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from dfkd.errors import UsageError

# Methods the dfkd project ships as plugins; naming one that is not installed earns a pip hint.
FIRST_PARTY_METHODS = (
    "cmi",
    "cudfkd",
    "dafl",
    "deepinv",
    "dfad",
    "dfq",
    "fast",
    "lopes",
    "nayer",
    "zskt",
)


@dataclass(frozen=True)
class Entry:
    """One registered thing: its factory stays an import string until it is first used."""

    name: str
    factory: Callable[..., Any] | str
    summary: str = ""
    provider: str = "dfkd"
    version: str = ""
    info: Mapping[str, Any] = field(default_factory=dict)
    arg: str | None = None  # the text after the colon of a prefix entry such as "timm:"

    def load(self) -> Callable[..., Any]:
        if callable(self.factory):
            return self.factory
        module, _, attr = self.factory.partition(":")
        obj = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj

    def build(self, *args: Any, **kwargs: Any) -> Any:
        if self.arg is not None:
            kwargs["arg"] = self.arg
        return self.load()(*args, **kwargs)


def _natural_key(name: str) -> list[Any]:
    return [int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", name)]


class Registry:
    """Entries of one kind (method, model, dataset, loss)."""

    def __init__(
        self, kind: str, not_loaded: Sequence[str] = (), disabled: Sequence[str] = ()
    ) -> None:
        self.kind = kind
        self.not_loaded = tuple(not_loaded)  # installed plugins DFKD_LOAD_PLUGINS leaves out
        self.disabled = tuple(disabled)  # installed plugins DFKD_DISABLE_PLUGINS names
        self._entries: dict[str, Entry] = {}

    def add(self, entry: Entry) -> None:
        """Add one entry; the plugin manager has already dropped names registered twice."""
        self._entries[entry.name] = entry

    def __contains__(self, name: str) -> bool:
        try:
            self.get(name)
        except UsageError:
            return False
        return True

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.match())

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return sorted(self._entries, key=_natural_key)

    def match(self, pattern: str | None = None) -> list[Entry]:
        """Entries in natural order, optionally filtered by a shell-style pattern or substring."""
        names = self.names()
        if pattern:
            glob = pattern if any(c in pattern for c in "*?[") else f"*{pattern}*"
            names = [n for n in names if fnmatch.fnmatch(n, glob)]
        return [self._entries[n] for n in names]

    def get(self, name: str) -> Entry:
        if name in self._entries:
            return self._entries[name]
        prefix, colon, arg = name.partition(":")
        if colon and f"{prefix}:" in self._entries:
            if not arg:
                raise UsageError(f"{self.kind} '{name}' needs a value after the colon.")
            return replace(self._entries[f"{prefix}:"], name=name, arg=arg)
        raise UsageError(self._unknown_message(name))

    def _unknown_message(self, name: str) -> str:
        message = f"Unknown {self.kind} '{name}'."
        close = difflib.get_close_matches(name, self.names(), n=3, cutoff=0.6)
        if close:
            message += " Did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
        installed = ", ".join(self.names()) or "none"
        message += f" Installed: {installed}."
        if self.not_loaded:
            left_out = ", ".join(self.not_loaded)
            message += f" Not loaded, as DFKD_LOAD_PLUGINS leaves them out: {left_out}."
        if self.disabled:
            message += f" Disabled by DFKD_DISABLE_PLUGINS: {', '.join(self.disabled)}."
        distribution = f"dfkd-plugin-{name}"
        if (
            self.kind == "method"
            and name in FIRST_PARTY_METHODS
            and distribution not in (*self.not_loaded, *self.disabled)
        ):
            message += f" Install it with: pip install {distribution}"
        return message
