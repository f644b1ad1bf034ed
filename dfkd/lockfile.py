"""The lock: the exact package versions the test suite passed with.

`requirements.lock` (at the root of a checkout) is a pip constraints file: `make test`, `make
demo` and CI install through it, so a fresh clone gets the versions that were tested, while
`pyproject.toml` keeps honest ranges for users installing into their own environment. `make
lock` re-resolves the newest versions, runs the suite on them and rewrites the lock only when it
passes. Runs record which lock their environment matches (`config.json`'s versions, and from
there every `dfkd bench` report).

    python -m dfkd.lockfile check requirements.lock   # installed == locked, or exit 1
    python -m dfkd.lockfile moved requirements.lock   # what a fresh resolve moved, and where
    python -m dfkd.lockfile write requirements.lock   # this environment becomes the lock
"""

from __future__ import annotations

import json
import platform
import re
import sys
from datetime import date
from importlib import metadata
from pathlib import Path

from dfkd.fileio import sha256_of

LOCK_NAME = "requirements.lock"
#: The checkout's lock, when dfkd runs from one (an editable install); absent in a wheel.
CHECKOUT_LOCK = Path(__file__).resolve().parent.parent / LOCK_NAME


def canonical(name: str) -> str:
    """PEP 503's normalised name: `Typing_Extensions` and `typing-extensions` are one package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read(path: Path) -> dict[str, str]:
    """`name==version` lines of a constraints file; comments and blank lines skipped."""
    pins: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep or not name.strip() or not version.strip():
            raise ValueError(f"{path}:{number}: expected 'name==version', found {raw!r}.")
        pins[canonical(name.strip())] = version.strip()
    return pins


def _editable(dist: metadata.Distribution) -> bool:
    text = dist.read_text("direct_url.json")
    return bool(text) and bool(json.loads(text).get("dir_info", {}).get("editable"))


def installed() -> dict[str, str]:
    """Every distribution in this environment but the editable ones (dfkd and its plugins
    from the checkout), which the lock does not pin: they are the code under test. A checkout
    on sys.path also shows their `*.egg-info` folders, so a name is left out when any of its
    records is editable."""
    dists = [d for d in metadata.distributions() if d.metadata["Name"]]
    editable = {canonical(d.metadata["Name"]) for d in dists if _editable(d)}
    found: dict[str, str] = {}
    for dist in dists:
        name = canonical(dist.metadata["Name"])
        if name not in editable:
            found.setdefault(name, dist.version)
    return found


def differences(locked: dict[str, str], present: dict[str, str]) -> list[str]:
    """One line per package whose installed version is not the locked one, or that is
    installed and not locked. Locked packages that are not installed are fine: a constraints
    file pins what is installed (a platform without CUDA wheels installs fewer)."""
    lines = []
    for name in sorted(present):
        if name not in locked:
            lines.append(f"{name} {present[name]} (not in the lock)")
        elif present[name] != locked[name]:
            lines.append(f"{name} {present[name]} (lock: {locked[name]})")
    return lines


def digest(path: Path) -> str:
    return sha256_of(path)[:12]


def environment_lock(path: Path | None = None) -> str | None:
    """What a run records of the lock: `requirements.lock@<digest>` when this environment holds
    exactly its versions, what differs when not, None outside a checkout."""
    path = path or CHECKOUT_LOCK
    if not path.is_file():
        return None
    name = f"{path.name}@{digest(path)}"
    try:
        moved = differences(read(path), installed())
    except ValueError as exc:
        return f"unreadable {name}: {exc}"
    if not moved:
        return name
    shown = "; ".join(moved[:3]) + (f"; and {len(moved) - 3} more" if len(moved) > 3 else "")
    return f"differs from {name}: {shown}"


def write(path: Path) -> None:
    pins = installed()
    header = [
        "# The exact versions `make test` passed with: a pip constraints file (pip install -c).",
        f"# Written by `make lock` on {date.today().isoformat()}, Python "
        f"{platform.python_version()} on {sys.platform}-{platform.machine()}; edit with care.",
    ]
    lines = [f"{name}=={version}" for name, version in sorted(pins.items())]
    path.write_text("\n".join([*header, *lines]) + "\n")


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in {"check", "moved", "write"}:
        print("usage: python -m dfkd.lockfile check|moved|write LOCKFILE", file=sys.stderr)
        return 2
    command, path = argv[0], Path(argv[1])
    if command == "write":
        write(path)
        print(f"wrote {path}: {len(read(path))} packages")
        return 0
    if not path.is_file():
        print(f"error: no lock file {path}; `make lock` writes one.", file=sys.stderr)
        return 2
    locked, present = read(path), installed()
    moved = differences(locked, present)
    if command == "moved":
        moved += [f"{name} gone (lock: {locked[name]})" for name in sorted(locked.keys() - present)]
        print(f"moved from {path}:", *(moved or ["nothing"]), sep="\n  ")
        return 0
    if moved:
        print(f"error: this environment is not {path}:", *moved, sep="\n  ", file=sys.stderr)
        print(f"Reinstall with `pip install -c {path} ...` or remove the venv.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
