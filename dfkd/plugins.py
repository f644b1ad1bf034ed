"""The plugin manager: built-in plugins first, then the ``dfkd`` entry points, one at a time.

A plugin that fails to load, or whose ``register_*`` hook raises or registers with keywords the
core does not know, is recorded (and the CLI warns) instead of taking every command down with
it; ``DFKD_STRICT_PLUGINS=1`` turns such failures into errors, for CI.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib
import importlib.metadata as metadata
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

import pluggy

from dfkd import __version__, hookspecs
from dfkd.errors import DfkdError, PluginError, UsageError
from dfkd.registry import Entry, Registry
from dfkd.tasks import CLASSIFICATION, TASKS

DEFAULT_PLUGINS = ("dfkd.models.plugin", "dfkd.data.plugin", "dfkd.synthesis.plugin")
REGISTRY_HOOKS = {
    "method": "register_methods",
    "model": "register_models",
    "dataset": "register_datasets",
    "loss": "register_losses",
}
# The keywords each kind's register(name, factory, summary, **info) accepts: what the core reads.
INFO_KEYWORDS = {
    "method": ("paper", "options", "presets", "tasks"),
    "model": ("input_size", "family", "task"),
    "dataset": ("num_classes", "channels", "image_size", "task"),
    "loss": (),
}
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off", "")


class Plugins:
    """The manager, where each plugin came from, what failed, and the registries it fills."""

    def __init__(self, *, autoload: bool = True, strict: bool | None = None) -> None:
        self.strict = _strict_from_environment() if strict is None else strict
        self.pm = pluggy.PluginManager("dfkd")
        self.pm.add_hookspecs(hookspecs)
        self.providers: dict[str, tuple[str, str]] = {}  # plugin name -> (distribution, version)
        self.errors: dict[str, str] = {}  # distribution or plugin -> error text
        self.warnings: list[str] = []  # what the CLI should say that is not a plugin's failure
        self.not_loaded: list[str] = []  # installed distributions DFKD_LOAD_PLUGINS leaves out
        for module_name in DEFAULT_PLUGINS:
            self.register(importlib.import_module(module_name), module_name)
        if autoload:
            self._load_entry_points()
        self._check_pending()

    def register(self, plugin: object, name: str, dist: str = "dfkd", version: str = "") -> None:
        """Register one plugin object (tests use this to add fakes)."""
        self.pm.register(plugin, name=name)
        self.providers[name] = (dist, version or (__version__ if dist == "dfkd" else ""))
        self.__dict__.pop("entries", None)
        self.__dict__.pop("registries", None)

    def _fail(self, who: str, exc: BaseException, hook: str = "") -> None:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if hook:
            text = f"{hook}: {text}"
        if self.strict:
            raise PluginError(f"Could not load plugin {who} ({text}).") from exc
        self.errors[who] = f"{self.errors[who]}; {text}" if who in self.errors else text

    def _load_entry_points(self) -> None:
        wanted = os.environ.get("DFKD_LOAD_PLUGINS")
        # the names asked for, compared as pip compares them, shown as they were written
        only = None
        if wanted is not None:
            only = {_normal(w): w.strip() for w in wanted.split(",") if w.strip()}
        named: set[str] = set()  # the names in DFKD_LOAD_PLUGINS that matched something
        installed: dict[str, list[str]] = {}  # distribution -> its entry-point names
        for dist in metadata.distributions():
            dist_name = dist.metadata["Name"]
            entry_points = [ep for ep in dist.entry_points if ep.group == "dfkd"]
            if dist_name in installed or not entry_points:
                continue
            installed[dist_name] = [ep.name for ep in entry_points]
            chosen = [
                ep
                for ep in entry_points
                if only is None or {_normal(dist_name), _normal(ep.name)} & only.keys()
            ]
            if only is not None:
                named |= {_normal(n) for n in (dist_name, *installed[dist_name])} & only.keys()
            if not chosen:
                self.not_loaded.append(dist_name)
            for ep in chosen:
                if self.pm.has_plugin(ep.name):
                    continue
                try:
                    self.register(ep.load(), ep.name, dist_name, dist.version)
                except KeyboardInterrupt:
                    raise
                except BaseException as exc:  # noqa: BLE001 - even sys.exit() at import
                    if self.pm.has_plugin(ep.name):
                        self.pm.unregister(name=ep.name)
                    self._fail(dist_name, exc)
        self.not_loaded.sort()
        unknown = sorted(only[k] for k in only.keys() - named) if only is not None else []
        if unknown:
            found = ", ".join(f"{d} ({', '.join(eps)})" for d, eps in sorted(installed.items()))
            self.warnings.append(
                f"DFKD_LOAD_PLUGINS names {', '.join(unknown)}, which no installed "
                f"dfkd plugin is called (by distribution or entry point). Installed: "
                f"{found or 'none'}."
            )

    def _check_pending(self) -> None:
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            name = self.pm.get_name(exc.plugin) or repr(exc.plugin)
            self.pm.unregister(exc.plugin)
            self._fail(self.providers.get(name, (name,))[0], exc)
            self._check_pending()

    @functools.cached_property
    def entries(self) -> dict[str, list[Entry]]:
        """What every register_* hook registers, by kind. Cheap (plugins register import
        strings), so the CLI runs it up front: a hook that fails is then reported with the
        other load failures instead of its entries just being missing."""
        found: dict[str, list[Entry]] = {kind: [] for kind in REGISTRY_HOOKS}
        for kind, hook_name in REGISTRY_HOOKS.items():
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                dist, version = self.providers.get(impl.plugin_name, (impl.plugin_name, ""))
                entries: list[Entry] = []
                try:
                    impl.function(register=_collector(kind, entries, dist, version))
                except (DfkdError, KeyboardInterrupt):
                    raise
                except BaseException as exc:  # noqa: BLE001
                    self._fail(dist, exc, hook_name)
                    continue
                found[kind].extend(entries)
        return found

    @functools.cached_property
    def registries(self) -> dict[str, Registry]:
        registries = {kind: Registry(kind, self.not_loaded) for kind in REGISTRY_HOOKS}
        for kind, entries in self.entries.items():
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

    def add_commands(self, app: Any) -> None:
        """Let each plugin add its commands (``register_commands``); one whose hook raises is
        recorded like any other load failure rather than stopping every command."""
        given = {"app": app, "plugins": self}
        for impl in reversed(self.pm.hook.register_commands.get_hookimpls()):  # pluggy's order
            dist = self.providers.get(impl.plugin_name, (impl.plugin_name,))[0]
            try:
                impl.function(**{k: v for k, v in given.items() if k in impl.argnames})
            except (DfkdError, KeyboardInterrupt):
                raise
            except BaseException as exc:  # noqa: BLE001
                self._fail(dist, exc, "register_commands")

    def describe(self) -> list[dict[str, Any]]:
        """What `dfkd plugins` shows: each plugin, its distribution, hooks, and load errors."""
        self.entries  # noqa: B018 - run the register hooks, so that failing ones show as failed
        rows = []
        for name, plugin in self.pm.list_name_plugin():
            dist, version = self.providers.get(name, (name, ""))
            hooks = sorted(c.name for c in self.pm.get_hookcallers(plugin) or [])
            row = {"name": name, "distribution": dist, "version": version, "hooks": hooks}
            if dist in self.errors:
                row["error"] = self.errors[dist]
            rows.append(row)
        shown = {r["distribution"] for r in rows}
        rows.extend({"name": w, "error": t} for w, t in self.errors.items() if w not in shown)
        return rows


def _collector(kind: str, entries: list[Entry], dist: str, version: str) -> Callable[..., None]:
    def register(name: str, factory: Callable[..., Any] | str, summary: str = "", **info: Any):
        _check_info(kind, name, info)
        entries.append(Entry(name, factory, summary, dist, version, info))

    return register


def _check_info(kind: str, name: str, info: dict[str, Any]) -> None:
    """Refuse keywords the core would never read (a typo such as ``option=`` would otherwise
    only surface as a KeyError when the method is first run)."""
    known = INFO_KEYWORDS[kind]
    for key in info:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            takes = ", ".join(("summary", *known))
            raise TypeError(f"{kind} '{name}': unknown keyword '{key}'{hint}; it takes {takes}")
    tasks = info.get("tasks", ()) if kind == "method" else [info.get("task", CLASSIFICATION)]
    if isinstance(tasks, str) or any(t not in TASKS for t in tasks):
        key = "tasks= must list tasks" if kind == "method" else "task= must be one"
        raise TypeError(f"{kind} '{name}': {key} of {', '.join(TASKS)}")
    if kind != "method":
        return
    options = info.get("options")
    if not (isinstance(options, type) and dataclasses.is_dataclass(options)):
        raise TypeError(f"method '{name}' needs options=<the dataclass of its options>")
    fields = {f.name for f in dataclasses.fields(options)}
    presets = info.get("presets", {})
    if not isinstance(presets, Mapping) or not all(
        isinstance(v, Mapping) for v in presets.values()
    ):
        raise TypeError(f"method '{name}': presets= must map each name to {{option: value}}")
    for preset, values in presets.items():
        unknown = sorted(set(values) - fields)
        if unknown:
            raise TypeError(
                f"method '{name}': preset '{preset}' sets unknown options {', '.join(unknown)}"
            )


def _strict_from_environment() -> bool:
    text = os.environ.get("DFKD_STRICT_PLUGINS", "")
    if text.strip().lower() in TRUE_WORDS:
        return True
    if text.strip().lower() in FALSE_WORDS:
        return False
    raise UsageError(
        f"DFKD_STRICT_PLUGINS={text!r} is neither on ({', '.join(TRUE_WORDS)}) nor off "
        f"({', '.join(w for w in FALSE_WORDS if w)})."
    )


def _normal(name: str) -> str:
    """A distribution or entry-point name as pip compares them: case and -_. do not count."""
    return re.sub(r"[-_.]+", "-", name.strip()).lower()


@functools.lru_cache(maxsize=1)
def get_plugins() -> Plugins:
    """The process-wide plugin set: the only cached global dfkd keeps."""
    return Plugins()
