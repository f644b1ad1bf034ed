"""Where the CLI writes: data on stdout, diagnostics on stderr, errors as one line."""

from __future__ import annotations

import functools
import os
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from dfkd.plugins import FALSE_WORDS

console = Console(soft_wrap=True)  # never break a path or a command line in two
err_console = Console(stderr=True, soft_wrap=True)


def show_traceback(exc: BaseException | None) -> None:
    """Print ``exc``'s whole traceback (its causes first) on stderr where ``DFKD_TRACEBACK`` is
    set to anything but 0, false, no or off: what a bug report needs, behind the one line."""
    wanted = os.environ.get("DFKD_TRACEBACK", "").strip().lower() not in FALSE_WORDS
    if exc is not None and wanted:
        traceback.print_exception(exc)


def fail(exc: Exception) -> NoReturn:
    show_traceback(exc)
    # escaped: a message such as "pip install 'dfkd[onnx]'" is text, not rich markup; and a line
    # break the user typed (a key, a value, a path quoted back) is shown as \n, not made
    message = "\\n".join(str(exc).splitlines())
    err_console.print(f"[red]Error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(getattr(exc, "exit_code", 1))


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn dfkd errors raised by a command into one line on stderr and the error's exit code."""
    from dfkd.errors import DfkdError

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except DfkdError as exc:
            fail(exc)
        except KeyboardInterrupt:
            err_console.print("Interrupted; the last checkpoint is kept (resume with --resume).")
            raise typer.Exit(130) from None

    return wrapper


def require_options(**values: object) -> None:
    """Fail with one line naming every required flag the user left out."""
    missing = [k for k, v in values.items() if v is None or v == ""]
    if missing:
        from dfkd.errors import UsageError

        flags = ", ".join("--" + k.replace("_", "-") for k in missing)
        raise UsageError(f"Missing {flags}. See --help.")
