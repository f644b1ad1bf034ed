"""Typed method options: a dataclass per method, filled from a preset and ``-o key=value``."""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

from dfkd.errors import UsageError


def option(
    default: Any,
    help: str,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> Any:
    """A dataclass field that carries its help text, so the CLI can list it, and the range its
    value must lie in (``ge``: >=, ``gt``: >, ``le``: <=, ``lt``: <), so that `build_options`
    refuses a value that cannot work before a run writes anything. A float is always refused
    when it is NaN or infinite; a tuple's bounds hold for each element."""
    bounds = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None}
    return dataclasses.field(default=default, metadata={"help": help, "bounds": bounds})


def describe(options_cls: type) -> list[dict[str, str]]:
    """One row per option: name, type, default, help (for `--options` and `run METHOD --help`)."""
    hints = typing.get_type_hints(options_cls)
    return [
        {
            "name": f.name,
            "type": type_name(hints[f.name]),
            "default": repr(f.default),
            "help": f.metadata.get("help", ""),
        }
        for f in dataclasses.fields(options_cls)
    ]


def build_options(
    options_cls: type,
    preset: Mapping[str, Any] | None = None,
    overrides: Iterable[str] = (),
) -> Any:
    """The options instance: class defaults, then the preset, then each ``key=value``."""
    hints = typing.get_type_hints(options_cls)
    values: dict[str, Any] = dict(preset or {})
    for item in overrides:
        key, eq, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not eq:
            raise UsageError(f"Option '{item}' must look like key=value.")
        if key not in hints:
            close = difflib.get_close_matches(key, list(hints), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise UsageError(f"Unknown option '{key}'.{hint} Known: {', '.join(hints)}.")
        values[key] = parse_value(key, text.strip(), hints[key])
    unknown = set(values) - set(hints)
    if unknown:
        raise UsageError(f"Preset sets unknown options: {', '.join(sorted(unknown))}.")
    for key, value in values.items():
        _check_type(key, value, hints[key])
    bounds = _bounds(options_cls)
    for key, value in values.items():
        for element in value if isinstance(value, tuple | list) else (value,):
            check_range(f"Option '{key}'", element, **bounds.get(key, {}))
    options = options_cls(**values)
    check = getattr(options, "check", None)
    if check is not None:
        check()  # rules between fields: raises UsageError
    return options


_OPERATORS = {
    "ge": (">=", lambda v, b: v >= b),
    "gt": (">", lambda v, b: v > b),
    "le": ("<=", lambda v, b: v <= b),
    "lt": ("<", lambda v, b: v < b),
}


def check_range(label: str, value: Any, **bounds: float) -> None:
    """Refuse a number outside ``bounds`` (ge, gt, le, lt) and a float that is NaN or infinite,
    as one line that names ``label`` and what it must be: "Option 'lr' must be > 0, not -1.0."
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise UsageError(f"{label} must be a finite number, not {value}.")
    if not all(_OPERATORS[k][1](value, b) for k, b in bounds.items()):
        rule = " and ".join(f"{_OPERATORS[k][0]} {b}" for k, b in bounds.items())
        raise UsageError(f"{label} must be {rule}, not {value!r}.")


def _bounds(options_cls: type) -> dict[str, dict[str, float]]:
    """Each field's bounds; a field a subclass declares again without bounds keeps its base's,
    so a plugin that changes a default (CMI's ``epochs``) cannot drop a range by accident."""
    found: dict[str, dict[str, float]] = {}
    for cls in reversed(options_cls.__mro__):
        for f in getattr(cls, "__dataclass_fields__", {}).values():
            if f.metadata.get("bounds"):
                found[f.name] = f.metadata["bounds"]
    return found


def _check_type(key: str, value: Any, hint: Any) -> None:
    """A preset's value must fit its option's type (a Literal one: be one of its choices), like
    a -o value: a plugin's "0.1" for a float is one line here, not a traceback mid-run."""
    if fits_type(value, hint):
        return
    if typing.get_origin(hint) is typing.Literal:
        choices = ", ".join(map(str, typing.get_args(hint)))
        raise UsageError(f"Option '{key}' must be one of {choices}, not {value!r}.")
    raise UsageError(f"Option '{key}' must be {type_name(hint)}, not {value!r}.")


def parse_value(key: str, text: str, hint: Any) -> Any:
    """Convert the CLI text to the option's declared type, or say what was expected."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or (origin is not None and type(None) in args):
        if text.lower() in ("none", "null", ""):
            return None
        inner = [a for a in args if a is not type(None)]
        return parse_value(key, text, inner[0])
    if origin is typing.Literal:
        if text not in [str(a) for a in args]:
            raise UsageError(f"Option '{key}' must be one of {', '.join(map(str, args))}.")
        return next(a for a in args if str(a) == text)
    if origin in (tuple, list):
        parts = [p for p in text.replace(" ", "").strip("()[]").split(",") if p]
        elem = args[0] if args else str
        fixed = origin is tuple and len(args) > 1 and args[-1] is not Ellipsis
        if fixed and len(parts) != len(args):
            raise UsageError(f"Option '{key}' must be {len(args)} values, not '{text}'.")
        return origin(parse_value(key, p, elem) for p in parts)
    if hint is bool:
        lowered = text.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise UsageError(f"Option '{key}' must be true or false, not '{text}'.")
    try:
        return hint(text)
    except (TypeError, ValueError):
        raise UsageError(f"Option '{key}' must be {type_name(hint)}, not '{text}'.") from None


def fits_type(value: Any, hint: Any) -> bool:
    """Whether a JSON value (a run's config.json) can stand for a field of type ``hint``: an int
    for a float, a list for a tuple, None only where the field is optional."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(fits_type(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if origin is typing.Literal:
        return value in args
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            return False
        if origin is tuple and len(args) > 1 and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(map(fits_type, value, args))
        return not args or all(fits_type(v, args[0]) for v in value)
    if hint in (int, float) and isinstance(value, bool):
        return False
    if hint is float:
        return isinstance(value, int | float)
    return not isinstance(hint, type) or isinstance(value, hint)


def type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
