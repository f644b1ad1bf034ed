"""The declared plugin API: what it names resolves, plugins import nothing else, and a third-party
plugin built from the documented example installs and keeps the method contract."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import dfkd.api

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "dfkd-plugin-noise"
PLUGIN_SOURCES = sorted([*ROOT.glob("plugins/*/src/**/*.py"), *ROOT.glob("examples/*/src/**/*.py")])


def test_every_declared_name_resolves():
    for name in dfkd.api.__all__:
        assert getattr(dfkd.api, name) is not None, name
    with pytest.raises(AttributeError, match="plugin API"):
        dfkd.api.load_state_file  # noqa: B018 - internal, so not part of the API


def test_registering_a_method_does_not_import_torch():
    code = (
        "import sys\n"
        "from dfkd.api import DataFreeOptions, GenerativeOptions, hookimpl, option, UsageError\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _dfkd_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dfkd"):
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("dfkd.")]
    return found


def test_plugins_import_only_the_declared_api():
    assert PLUGIN_SOURCES
    offenders = {
        str(path.relative_to(ROOT)): module
        for path in PLUGIN_SOURCES
        for module in _dfkd_imports(path)
        if module not in ("dfkd", "dfkd.api") and not module.startswith("dfkd_plugin_")
    }
    assert offenders == {}
    for path in PLUGIN_SOURCES:  # `from dfkd import x` only for the version
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "dfkd":
                assert {a.name for a in node.names} <= {"__version__"}, path


def test_the_tutorial_shows_the_example_plugins_files_as_they_are():
    """docs/plugins.md walks through the example file by file: a change to one is a change to
    the other, or the tutorial teaches code that no longer runs."""
    doc = (ROOT / "docs" / "plugins.md").read_text()
    blocks = {b.strip() for b in re.findall(r"^```\w*\n(.*?)^```", doc, re.M | re.S)}
    for name in (
        "pyproject.toml",
        "src/dfkd_plugin_noise/__init__.py",
        "src/dfkd_plugin_noise/synthesizer.py",
        "tests/test_noise.py",
    ):
        assert (EXAMPLE / name).read_text().strip() in blocks, name


@pytest.mark.slow
def test_the_example_plugin_installs_from_its_wheel_and_keeps_the_contract(tmp_path):
    """What `pip install dfkd-plugin-noise` does for a user: built as a wheel, installed into a
    fresh target folder, found through its entry point, and run by its own contract tests."""
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist", EXAMPLE],
        check=True,
    )
    (wheel,) = (tmp_path / "dist").glob("dfkd_plugin_noise-*.whl")
    target = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", target, wheel], check=True)
    env = os.environ | {"PYTHONPATH": str(target), "DFKD_STRICT_PLUGINS": "1"}
    listed = subprocess.run(
        [sys.executable, "-m", "dfkd", "list-methods", "noise"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert "plugin:  dfkd-plugin-noise 0.1.0" in listed.stdout
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "test_noise.py").write_text((EXAMPLE / "tests" / "test_noise.py").read_text())
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow", tests],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    assert " passed" in done.stdout and "failed" not in done.stdout
    assert importlib.util.find_spec("dfkd_plugin_noise") is None  # only the wheel provides it


def test_synthesis_does_not_import_training():
    """The layers stay in order: what methods build on (dfkd.synthesis) needs nothing of the
    loop that runs them (dfkd.training)."""
    code = (
        "import sys, dfkd.synthesis.base, dfkd.synthesis.generative, dfkd.synthesis.rounds\n"
        "assert not [m for m in sys.modules if m.startswith('dfkd.training')], 'imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
