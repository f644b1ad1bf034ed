"""The plugin manager: built-in plugins first, then the ``dfkd`` entry points, one at a time.

A plugin that fails to load, or whose ``register_*`` hook raises or registers with keywords the
core does not know, is recorded (and the CLI warns) instead of taking every command down with
it, and so is a name two plugins register (the later one's is dropped); ``DFKD_STRICT_PLUGINS=1``
turns such failures into errors, for CI. ``DFKD_LOAD_PLUGINS`` and ``DFKD_DISABLE_PLUGINS`` pick
the entry points to load (docs/plugins.md#when-it-breaks).
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
        self.raised: dict[str, list[BaseException]] = {}  # the exceptions, for DFKD_TRACEBACK
        self.conflicts: dict[str, list[str]] = {}  # distribution -> its names dropped as clashes
        self.warnings: list[str] = []  # what the CLI should say that is not a plugin's failure
        self.not_loaded: list[str] = []  # installed distributions DFKD_LOAD_PLUGINS leaves out
        self.disabled: list[str] = []  # installed distributions DFKD_DISABLE_PLUGINS names
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
        self.raised.setdefault(who, []).append(exc)

    def _load_entry_points(self) -> None:
        # the names asked for, compared as pip compares them, shown as they were written
        only = _names_from_environment("DFKD_LOAD_PLUGINS")
        deny = _names_from_environment("DFKD_DISABLE_PLUGINS") or {}
        installed: dict[str, tuple[Any, list[Any]]] = {}  # distribution -> it, its entry points
        for dist in metadata.distributions():  # the first on sys.path shadows the others
            entry_points = [ep for ep in dist.entry_points if ep.group == "dfkd"]
            if entry_points:
                installed.setdefault(dist.metadata["Name"], (dist, entry_points))
        known: set[str] = set()  # every distribution and entry-point name, normalised
        # in name order, so that which of two clashing plugins loses is the same everywhere
        for dist_name in sorted(installed, key=_normal):
            dist, entry_points = installed[dist_name]
            names = {ep.name: {_normal(dist_name), _normal(ep.name)} for ep in entry_points}
            known.update(*names.values())
            allowed = [ep for ep in entry_points if only is None or names[ep.name] & only.keys()]
            chosen = [ep for ep in allowed if not names[ep.name] & deny.keys()]
            if not allowed:
                self.not_loaded.append(dist_name)
            elif not chosen:
                self.disabled.append(dist_name)
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
        found = ", ".join(
            f"{d} ({', '.join(ep.name for ep in eps)})" for d, (_, eps) in sorted(installed.items())
        )
        for variable, asked in (("DFKD_LOAD_PLUGINS", only or {}), ("DFKD_DISABLE_PLUGINS", deny)):
            unknown = sorted(asked[k] for k in asked.keys() - known)
            if unknown:
                self.warnings.append(
                    f"{variable} names {', '.join(unknown)}, which no installed dfkd plugin is "
                    f"called (by distribution or entry point). Installed: {found or 'none'}."
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
        found: dict[str, list[Entry]] = {}
        for kind, hook_name in REGISTRY_HOOKS.items():
            kept: dict[str, Entry] = {}  # the first registration of each name wins
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():  # in load order
                dist, version = self.providers.get(impl.plugin_name, (impl.plugin_name, ""))
                entries: list[Entry] = []
                try:
                    impl.function(register=_collector(kind, entries, dist, version))
                except (DfkdError, KeyboardInterrupt):
                    raise
                except BaseException as exc:  # noqa: BLE001
                    self._fail(dist, exc, hook_name)
                    continue
                for entry in entries:
                    first = kept.setdefault(entry.name, entry)
                    if first.factory != entry.factory:
                        self._clash(kind, first, entry)
            found[kind] = list(kept.values())
        return found

    def _clash(self, kind: str, first: Entry, later: Entry) -> None:
        """Drop ``later``, a name ``first`` already registered, with one warning: a clash
        between two plugins must not stop every command (it used to)."""
        what = f"{kind} '{later.name}' is registered twice: by {first.provider} and by"
        choice = f"DFKD_DISABLE_PLUGINS={later.provider}"
        if first.provider != "dfkd":  # the core's own entries cannot be disabled
            choice += f" or DFKD_DISABLE_PLUGINS={first.provider}"
        if self.strict:
            raise PluginError(
                f"{what} {later.provider}. Disable one with {choice}, or uninstall one."
            )
        self.conflicts.setdefault(later.provider, []).append(
            f"{kind} '{later.name}' dropped: {first.provider} registers it too"
        )
        self.warnings.append(
            f"{what} {later.provider}; {later.provider}'s is dropped. Disable one with {choice}, "
            "or uninstall one."
        )

    @functools.cached_property
    def registries(self) -> dict[str, Registry]:
        registries = {
            kind: Registry(kind, self.not_loaded, self.disabled) for kind in REGISTRY_HOOKS
        }
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
            if dist in self.conflicts:
                row["conflicts"] = self.conflicts[dist]
            rows.append(row)
        shown = {r["distribution"] for r in rows}
        rows.extend({"name": w, "error": t} for w, t in self.errors.items() if w not in shown)
        return rows

    def check(self) -> list[UsageError]:
        """Everything `dfkd plugins --check` reports: load failures, clashes, and each entry
        whose factory does not import or whose options or presets are wrong (that a method run
        would otherwise meet only after its run directory exists)."""
        self.entries  # noqa: B018 - run the register hooks, so that failing ones count
        problems = [
            _problem(f"{who}: could not load ({text}).") for who, text in self.errors.items()
        ]
        for dist, clashes in self.conflicts.items():
            problems += [_problem(f"{dist}: {text}.") for text in clashes]
        for kind, registry in self.registries.items():
            for entry in registry:
                problems += _entry_problems(kind, entry, [None, *entry.info.get("presets", {})])
        return problems

    def check_method(self, name: str, preset: str | None = None) -> None:
        """Refuse a method whose plugin is broken (its factory, its options class, or the preset,
        or the defaults, that the run would use) with one line naming the plugin, before any
        work: `dfkd run` otherwise fails as a traceback inside the run it has started."""
        entry = self.methods.get(name)
        if preset is None:
            chosen: list[str | None] = [None]
        elif preset in entry.info.get("presets", {}):
            chosen = [preset]
        else:  # an unknown preset is the user's error, which `dfkd run` words itself
            chosen = []
        problems = _entry_problems("method", entry, chosen)
        if problems:
            said = "; ".join(str(p).rstrip(".") for p in problems)
            raise UsageError(
                f"{said}. A fault of the plugin: dfkd plugins --check lists its problems."
            ) from problems[0].__cause__


def _problem(text: str, cause: BaseException | None = None) -> UsageError:
    """One problem `Plugins.check` found, as one line; its cause, for DFKD_TRACEBACK."""
    problem = UsageError(text)
    problem.__cause__ = cause
    return problem


def _said(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, DfkdError) else f"{type(exc).__name__}: {exc}"


def _entry_problems(kind: str, entry: Entry, presets: list[str | None]) -> list[UsageError]:
    """What is wrong with one entry: a factory that does not import, and, for a method, an
    options class the shared loop cannot read or a preset (None: the defaults) `build_options`
    refuses, as the run would refuse it."""
    where = f"{entry.provider}: {kind} '{entry.name}'"
    problems = []
    try:
        if not callable(entry.load()):
            problems.append(_problem(f"{where}: {entry.factory} is not callable."))
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - whatever the plugin's module raises
        problems.append(_problem(f"{where}: cannot load {entry.factory} ({_said(exc)}).", exc))
    if kind != "method":
        return problems
    from dfkd.options import build_options
    from dfkd.synthesis.options import DataFreeOptions

    options = entry.info["options"]
    if not issubclass(options, DataFreeOptions):
        problems.append(
            _problem(
                f"{where}: options {options.__name__} must derive from dfkd.api.DataFreeOptions."
            )
        )
    for preset in presets:
        values = entry.info["presets"][preset] if preset is not None else {}
        try:
            build_options(options, values)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - a check() of the plugin's own may raise
            source = f"preset '{preset}'" if preset is not None else "defaults"
            problems.append(_problem(f"{where}, {source}: {_said(exc)}", exc))
    return problems


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


def _names_from_environment(variable: str) -> dict[str, str] | None:
    """The comma-separated names in ``variable`` (None: unset), each normalised name mapped to
    the name as written."""
    text = os.environ.get(variable)
    if text is None:
        return None
    return {_normal(w): w.strip() for w in text.split(",") if w.strip()}


def _normal(name: str) -> str:
    """A distribution or entry-point name as pip compares them: case and -_. do not count."""
    return re.sub(r"[-_.]+", "-", name.strip()).lower()


@functools.lru_cache(maxsize=1)
def get_plugins() -> Plugins:
    """The process-wide plugin set: the only cached global dfkd keeps."""
    return Plugins()
