"""Leaving a process group: the status, the output and the traceback survive ``os._exit``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dfkd.training import process_group

_IN_A_GROUP = """
import sys
import torch.distributed as dist
from dfkd.training.process_group import run_then_leave

dist.init_process_group("gloo", init_method="file://" + sys.argv[1], rank=0, world_size=1)


def main():
    print("unflushed", end="")
    {body}


run_then_leave(main)
print("after run_then_leave")
"""


@pytest.mark.parametrize(
    ("body", "status", "in_stderr"),
    [
        ("pass", 0, ""),
        ("sys.exit(3)", 3, ""),
        ("sys.exit('bad input')", 1, "bad input"),
        ("raise ValueError('broken')", 1, "ValueError: broken"),
    ],
)
def test_a_process_in_a_group_leaves_with_the_status_and_output_of_its_ending(
    tmp_path: Path, body: str, status: int, in_stderr: str
) -> None:
    script = tmp_path / "leave.py"
    script.write_text(_IN_A_GROUP.replace("{body}", body))
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "rendezvous")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == status, done.stderr
    assert done.stdout == "unflushed"  # printed, and nothing ran after leaving
    assert in_stderr in done.stderr


def test_outside_a_group_run_then_leave_returns_and_reraises() -> None:
    calls = []
    process_group.run_then_leave(lambda: calls.append("ran"))
    assert calls == ["ran"]
    with pytest.raises(SystemExit):
        process_group.run_then_leave(lambda: sys.exit(2))


def test_the_cli_leaves_through_run_then_leave(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.distributed

    from dfkd.cli import main

    class Left(Exception):
        pass

    def fake_exit(status: int) -> None:
        raise Left(status)

    closed = []
    monkeypatch.setattr(process_group, "in_process_group", lambda: True)
    monkeypatch.setattr(torch.distributed, "destroy_process_group", lambda: closed.append(True))
    monkeypatch.setattr(process_group.os, "_exit", fake_exit)
    monkeypatch.setattr(sys, "argv", ["dfkd", "--version"])
    with pytest.raises(Left) as left:
        main()
    assert left.value.args == (0,)
    assert closed == [True]
