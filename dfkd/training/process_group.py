"""Leaving a torchrun process: close the process group, then exit without interpreter shutdown.

A gloo worker thread can still be dropping the last reference to a collective's tensor after
the collective returned; if it takes the GIL while the interpreter finalises, it aborts a
finished process ("terminate called without an active exception"). Closing the group first
and then leaving with ``os._exit`` gives that thread no finalising interpreter to meet.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Callable


def in_process_group() -> bool:
    """Whether this process belongs to an initialised torch.distributed process group (checked
    without importing torch, so the CLI's start stays fast)."""
    torch_distributed = sys.modules.get("torch.distributed")
    return torch_distributed is not None and torch_distributed.is_initialized()


def run_then_leave(main: Callable[[], object]) -> None:
    """Run ``main``; in a process group, leave through `leave_process_group` however it ends."""
    try:
        main()
    except BaseException as outcome:
        leave_process_group(outcome)
        raise
    leave_process_group()


def leave_process_group(outcome: BaseException | None = None) -> None:
    """In a process group: report ``outcome`` as the interpreter would (a traceback, or a
    ``SystemExit`` message), close the group and exit with its status at once. Outside one,
    return and let the interpreter exit as usual."""
    if not in_process_group():
        return
    status = _report(outcome)
    import torch.distributed

    torch.distributed.destroy_process_group()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def _report(outcome: BaseException | None) -> int:
    """Print what the interpreter would print for ``outcome``; return the status it would give."""
    if outcome is None:
        return 0
    if isinstance(outcome, SystemExit):
        if outcome.code is None or isinstance(outcome.code, int):
            return outcome.code or 0
        print(outcome.code, file=sys.stderr)
        return 1
    traceback.print_exception(outcome)
    return 130 if isinstance(outcome, KeyboardInterrupt) else 1
