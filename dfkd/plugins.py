"""The plugin manager: built-in plugins first, then the ``dfkd`` entry points, one at a time.

A plugin that fails to load is recorded (and the CLI warns) instead of taking every command
down with it; ``DFKD_STRICT_PLUGINS=1`` turns such failures into errors, for CI.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata as metadata
import os
from collections.abc import Callable
from typing import Any

import pluggy

from dfkd import __version__, hookspecs
from dfkd.errors import DfkdError, PluginError
from dfkd.registry import Entry, Registry

DEFAULT_PLUGINS = ("dfkd.models.plugin", "dfkd.data.plugin", "dfkd.synthesis.plugin")
REGISTRY_HOOKS = {
    "method": "register_methods",
    "model": "register_models",
    "dataset": "register_datasets",
    "loss": "register_losses",
}


class Plugins:
    """The manager, where each plugin came from, what failed, and the registries it fills."""

    def __init__(self, *, autoload: bool = True, strict: bool | None = None) -> None:
        self.strict = os.environ.get("DFKD_STRICT_PLUGINS") == "1" if strict is None else strict
        self.pm = pluggy.PluginManager("dfkd")
        self.pm.add_hookspecs(hookspecs)
        self.providers: dict[str, tuple[str, str]] = {}  # plugin name -> (distribution, version)
        self.errors: dict[str, str] = {}  # distribution or plugin -> error text
        for module_name in DEFAULT_PLUGINS:
            self.register(importlib.import_module(module_name), module_name)
        if autoload:
            self._load_entry_points()
        self._check_pending()

    def register(self, plugin: object, name: str, dist: str = "dfkd", version: str = "") -> None:
        """Register one plugin object (tests use this to add fakes)."""
        self.pm.register(plugin, name=name)
        self.providers[name] = (dist, version or (__version__ if dist == "dfkd" else ""))
        self.__dict__.pop("registries", None)

    def _fail(self, who: str, exc: BaseException) -> None:
        text = f"{type(exc).__name__}: {exc}"
        if self.strict:
            raise PluginError(f"Could not load plugin {who} ({text}).") from exc
        self.errors[who] = text

    def _load_entry_points(self) -> None:
        wanted = os.environ.get("DFKD_LOAD_PLUGINS")
        only = None if wanted is None else {w.strip() for w in wanted.split(",") if w.strip()}
        seen: set[str] = set()
        for dist in metadata.distributions():
            dist_name = dist.metadata["Name"]
            if dist_name in seen or (only is not None and dist_name not in only):
                continue
            seen.add(dist_name)
            for ep in dist.entry_points:
                if ep.group != "dfkd" or self.pm.has_plugin(ep.name):
                    continue
                try:
                    self.register(ep.load(), ep.name, dist_name, dist.version)
                except Exception as exc:  # noqa: BLE001 - any import failure must not brick the CLI
                    if self.pm.has_plugin(ep.name):
                        self.pm.unregister(name=ep.name)
                    self._fail(dist_name, exc)

    def _check_pending(self) -> None:
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            name = self.pm.get_name(exc.plugin) or repr(exc.plugin)
            self.pm.unregister(exc.plugin)
            self._fail(self.providers.get(name, (name,))[0], exc)
            self._check_pending()

    @functools.cached_property
    def registries(self) -> dict[str, Registry]:
        registries = {kind: Registry(kind) for kind in REGISTRY_HOOKS}
        for kind, hook_name in REGISTRY_HOOKS.items():
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                dist, version = self.providers.get(impl.plugin_name, (impl.plugin_name, ""))
                entries: list[Entry] = []
                try:
                    impl.function(register=_collector(entries, dist, version))
                except DfkdError:
                    raise
                except Exception as exc:  # noqa: BLE001
                    self._fail(dist, exc)
                    continue
                for entry in entries:
                    registries[kind].add(entry)
        return registries

    @property
    def methods(self) -> Registry:
        return self.registries["method"]

    @property
    def models(self) -> Registry:
        return self.registries["model"]

    @property
    def datasets(self) -> Registry:
        return self.registries["dataset"]

    @property
    def losses(self) -> Registry:
        return self.registries["loss"]

    def describe(self) -> list[dict[str, Any]]:
        """What `dfkd plugins` shows: each plugin, its distribution, hooks, and load errors."""
        rows = []
        for name, plugin in self.pm.list_name_plugin():
            dist, version = self.providers.get(name, (name, ""))
            hooks = sorted(c.name for c in self.pm.get_hookcallers(plugin) or [])
            rows.append({"name": name, "distribution": dist, "version": version, "hooks": hooks})
        rows.extend({"name": who, "error": text} for who, text in self.errors.items())
        return rows


def _collector(entries: list[Entry], dist: str, version: str) -> Callable[..., None]:
    def register(name: str, factory: Callable[..., Any] | str, summary: str = "", **info: Any):
        entries.append(Entry(name, factory, summary, dist, version, info))

    return register


@functools.lru_cache(maxsize=1)
def get_plugins() -> Plugins:
    """The process-wide plugin set: the only cached global dfkd keeps."""
    return Plugins()
