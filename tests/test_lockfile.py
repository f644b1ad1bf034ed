"""The lock: what `make` installs through and checks, and what runs record of it."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from dfkd import lockfile
from dfkd.training.runs import versions

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dfkd.lockfile", *args], capture_output=True, text=True
    )


def test_the_checkout_lock_pins_the_core_dependencies_exactly():
    pins = lockfile.read(ROOT / lockfile.LOCK_NAME)
    for name in ("torch", "torchvision", "accelerate", "timm", "typer", "rich", "pluggy"):
        assert name in pins, name
    assert not any(name.startswith("dfkd") for name in pins)  # the code under test floats


def test_a_lock_written_here_checks_clean_and_a_moved_package_is_named(tmp_path):
    lock = tmp_path / "requirements.lock"
    assert _cli("write", str(lock)).returncode == 0
    assert _cli("check", str(lock)).returncode == 0
    moved = (
        lock.read_text()
        .replace(f"pluggy=={metadata.version('pluggy')}", "pluggy==0.0.1")
        .replace(f"rich=={metadata.version('rich')}\n", "")
    )
    lock.write_text(moved)
    check = _cli("check", str(lock))
    assert check.returncode == 1
    assert f"pluggy {metadata.version('pluggy')} (lock: 0.0.1)" in check.stderr
    assert f"rich {metadata.version('rich')} (not in the lock)" in check.stderr
    listing = _cli("moved", str(lock))
    assert listing.returncode == 0 and "pluggy" in listing.stdout and "typer" not in listing.stdout


def test_a_package_the_lock_names_but_nothing_installed_is_listed_as_gone(tmp_path):
    lock = tmp_path / "requirements.lock"
    _cli("write", str(lock))
    lock.write_text(lock.read_text() + "no-such-package==1.0\n")
    assert _cli("check", str(lock)).returncode == 0  # a platform may need fewer packages
    assert "no-such-package gone (lock: 1.0)" in _cli("moved", str(lock)).stdout


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["check", "nowhere.lock"], 2, "no lock file nowhere.lock"),
        (["frobnicate", "x"], 2, "usage:"),
    ],
)
def test_bad_lock_commands_say_what_to_do(args, code, message):
    done = _cli(*args)
    assert done.returncode == code and message in done.stderr


def test_a_malformed_line_is_named(tmp_path):
    lock = tmp_path / "requirements.lock"
    lock.write_text("# header\ntorch>=2\n")
    with pytest.raises(ValueError, match=r"requirements.lock:2: expected 'name==version'"):
        lockfile.read(lock)


def test_a_run_records_the_lock_its_environment_matches(tmp_path, monkeypatch):
    lock = tmp_path / "requirements.lock"
    lockfile.write(lock)
    monkeypatch.setattr(lockfile, "CHECKOUT_LOCK", lock)
    assert versions()["lock"] == f"requirements.lock@{lockfile.digest(lock)}"
    lock.write_text(lock.read_text().replace(f"timm=={metadata.version('timm')}", "timm==0.1"))
    assert versions()["lock"].startswith(f"differs from requirements.lock@{lockfile.digest(lock)}")
    assert "timm" in versions()["lock"]
    monkeypatch.setattr(lockfile, "CHECKOUT_LOCK", tmp_path / "absent.lock")
    assert "lock" not in versions()  # installed from a wheel: nothing to name
