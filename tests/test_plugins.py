"""The plugin manager: built-ins, entry points, failures, conflicts, one test per hook; and the
packaging of the core and of every plugin distribution."""

from __future__ import annotations

import email.parser
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from dfkd import hookimpl, hookspecs
from dfkd.errors import PluginError, UsageError
from dfkd.options import option
from dfkd.plugins import REGISTRY_HOOKS, Plugins
from dfkd.testing import make_plugins


@dataclass
class FakeOptions:
    steps: int = option(3, "How many steps.")


class FakeMethod:
    @hookimpl
    def register_methods(self, register):
        register(
            "fake",
            "dfkd.synthesis.base:Synthesizer",
            "a method for tests",
            paper="Nobody 2026",
            options=FakeOptions,
            presets={"quick": {"steps": 1}},
        )


class FakeEntryPoint:
    def __init__(self, name, target):
        self.name, self.group, self._target = name, "dfkd", target

    def load(self):
        if isinstance(self._target, BaseException):
            raise self._target
        return self._target


def fake_distribution(name, *entry_points):
    return SimpleNamespace(metadata={"Name": name}, version="9.9", entry_points=list(entry_points))


@pytest.fixture
def installed(monkeypatch):
    """Replace the installed distributions with the given fakes."""

    def install(*dists):
        monkeypatch.setattr("dfkd.plugins.metadata.distributions", lambda: list(dists))

    return install


def test_builtins_register_through_the_same_hooks():
    plugins = Plugins(autoload=False)
    assert {"lenet5", "wrn40_2", "timm:"} <= set(plugins.models.names())
    assert {"fashion-mnist", "cifar10", "folder:"} <= set(plugins.datasets.names())
    assert "kd_kl" in plugins.losses.names()
    assert plugins.models.get("lenet5").provider == "dfkd"


def test_entry_point_plugin_is_loaded_with_its_distribution(installed, monkeypatch):
    monkeypatch.delenv("DFKD_LOAD_PLUGINS", raising=False)
    installed(fake_distribution("dfkd-plugin-fake", FakeEntryPoint("fake", FakeMethod())))
    plugins = Plugins(strict=True)
    entry = plugins.methods.get("fake")
    assert (entry.provider, entry.version) == ("dfkd-plugin-fake", "9.9")


def test_failing_plugin_warns_and_the_rest_keeps_working(installed, monkeypatch):
    monkeypatch.delenv("DFKD_LOAD_PLUGINS", raising=False)
    installed(
        fake_distribution("dfkd-plugin-broken", FakeEntryPoint("broken", ImportError("no torch"))),
        fake_distribution("dfkd-plugin-fake", FakeEntryPoint("fake", FakeMethod())),
    )
    plugins = Plugins(strict=False)
    assert plugins.errors == {"dfkd-plugin-broken": "ImportError: no torch"}
    assert "fake" in plugins.methods
    with pytest.raises(PluginError, match="dfkd-plugin-broken.*no torch"):
        Plugins(strict=True)


def test_load_plugins_env_selects_distributions(installed, monkeypatch):
    installed(fake_distribution("dfkd-plugin-fake", FakeEntryPoint("fake", FakeMethod())))
    monkeypatch.setenv("DFKD_LOAD_PLUGINS", "")
    assert "fake" not in Plugins().methods
    monkeypatch.setenv("DFKD_LOAD_PLUGINS", "dfkd-plugin-other, dfkd-plugin-fake")
    assert "fake" in Plugins().methods


def test_misspelled_hook_is_an_error_not_silence():
    class Misspelled:
        @hookimpl
        def register_method(self, register):  # missing the final "s"
            raise AssertionError("never called")

    with pytest.raises(PluginError, match="register_method"):
        make_plugins((Misspelled(), "dfkd-plugin-typo"))._check_pending()
    lenient = Plugins(autoload=False, strict=False)
    lenient.register(Misspelled(), "typo", dist="dfkd-plugin-typo")
    lenient._check_pending()
    assert "dfkd-plugin-typo" in lenient.errors and not lenient.pm.has_plugin("typo")


def test_two_providers_of_one_name_is_an_error_naming_both_in_strict_mode():
    class Other:
        @hookimpl
        def register_models(self, register):
            register("lenet5", "somewhere.else:LeNet", "another LeNet")

    plugins = make_plugins((Other(), "dfkd-plugin-other"))
    with pytest.raises(
        PluginError,
        match="model 'lenet5' is registered twice: by dfkd and by dfkd-plugin-other. Disable "
        "one with DFKD_DISABLE_PLUGINS=dfkd-plugin-other, or uninstall one.",
    ):
        plugins.models  # noqa: B018


class OtherFake:
    """A second distribution's method called "fake", with a factory of its own."""

    @hookimpl
    def register_methods(self, register):
        register("fake", "elsewhere:Fake", "another fake", options=FakeOptions)
        register("unique", "elsewhere:Unique", "only here", options=FakeOptions)


def test_a_clash_drops_the_later_plugins_entry_with_one_warning_and_every_command_works(
    installed, monkeypatch
):
    from typer.testing import CliRunner

    from dfkd.cli import make_app

    monkeypatch.delenv("DFKD_LOAD_PLUGINS", raising=False)
    installed(  # listed out of order: plugins load by distribution name, wherever installed
        fake_distribution("dfkd-plugin-zzz", FakeEntryPoint("zzz", OtherFake())),
        fake_distribution("dfkd-plugin-fake", FakeEntryPoint("fake", FakeMethod())),
    )
    plugins = Plugins(strict=False)
    runner = CliRunner()
    for args in (["list-methods"], ["models"], ["run", "--help"]):
        shown = runner.invoke(make_app(plugins), args)
        assert shown.exit_code == 0, shown.output
        assert shown.stderr.splitlines() == [
            "Warning: method 'fake' is registered twice: by dfkd-plugin-fake and by "
            "dfkd-plugin-zzz; dfkd-plugin-zzz's is dropped. Disable one with "
            "DFKD_DISABLE_PLUGINS=dfkd-plugin-zzz or DFKD_DISABLE_PLUGINS=dfkd-plugin-fake, or "
            "uninstall one."
        ]
    assert plugins.methods.get("fake").provider == "dfkd-plugin-fake"
    assert plugins.methods.get("unique").provider == "dfkd-plugin-zzz"
    rows = json.loads(runner.invoke(make_app(plugins), ["plugins", "--json"]).stdout)
    row = next(r for r in rows if r["name"] == "zzz")
    assert row["conflicts"] == ["method 'fake' dropped: dfkd-plugin-fake registers it too"]
    assert "conflicts" not in next(r for r in rows if r["name"] == "fake")
    table = runner.invoke(make_app(plugins), ["plugins"]).stdout
    lines = table.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("│ zzz "))
    assert "method 'fake' dropped:" in lines[at + 1]
    with pytest.raises(PluginError, match="by dfkd-plugin-fake and by dfkd-plugin-zzz"):
        Plugins(strict=True).methods  # noqa: B018


def test_disable_plugins_env_leaves_out_distributions_or_entry_points(installed, monkeypatch):
    from typer.testing import CliRunner

    from dfkd.cli import make_app

    monkeypatch.delenv("DFKD_LOAD_PLUGINS", raising=False)
    installed(
        fake_distribution("dfkd-plugin-zzz", FakeEntryPoint("zzz", OtherFake())),
        fake_distribution("dfkd-plugin-fake", FakeEntryPoint("fake", FakeMethod())),
    )
    monkeypatch.setenv("DFKD_DISABLE_PLUGINS", "dfkd_plugin_FAKE")  # spelt as pip would accept
    plugins = Plugins(strict=True)  # the clash is gone: nothing to refuse
    assert plugins.methods.get("fake").provider == "dfkd-plugin-zzz"
    assert plugins.disabled == ["dfkd-plugin-fake"] and not plugins.warnings
    monkeypatch.setenv("DFKD_DISABLE_PLUGINS", "zzz, fake")  # entry-point names
    with pytest.raises(UsageError, match="Disabled by DFKD_DISABLE_PLUGINS: dfkd-plugin-fake, "):
        Plugins().methods.get("fake")
    monkeypatch.setenv("DFKD_LOAD_PLUGINS", "fake")
    monkeypatch.setenv("DFKD_DISABLE_PLUGINS", "fake,dfkd-plugin-fkae")  # the deny-list wins
    plugins = Plugins()
    assert "fake" not in plugins.methods
    shown = CliRunner().invoke(make_app(plugins), ["list-methods"])
    assert shown.exit_code == 0
    assert shown.stderr.splitlines() == [
        "Warning: DFKD_DISABLE_PLUGINS names dfkd-plugin-fkae, which no installed dfkd plugin is "
        "called (by distribution or entry point). Installed: dfkd-plugin-fake (fake), "
        "dfkd-plugin-zzz (zzz)."
    ]


@pytest.mark.slow
def test_the_repositorys_own_plugins_pass_the_check_in_strict_mode():
    """What `make test` runs under: the first-party plugins load, clash with nothing, import
    every factory and build every preset."""
    done = subprocess.run(
        [sys.executable, "-m", "dfkd", "plugins", "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "DFKD_STRICT_PLUGINS": "1"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("No problems: ") and not done.stderr


def test_the_same_object_twice_is_fine():
    class Again:
        @hookimpl
        def register_models(self, register):
            register("lenet5", "dfkd.models.lenet:lenet5", "the same one")

    assert make_plugins((Again(), "dfkd-plugin-again")).models.get("lenet5")


def test_unknown_name_suggests_and_lists_and_hints_pip():
    plugins = make_plugins((FakeMethod(), "dfkd-plugin-fake"))
    with pytest.raises(UsageError) as err:
        plugins.methods.get("fkae")
    assert "Unknown method 'fkae'. Did you mean 'fake'?" in str(err.value)
    assert "Installed: fake." in str(err.value)
    with pytest.raises(UsageError, match="pip install dfkd-plugin-cmi"):
        plugins.methods.get("cmi")
    with pytest.raises(UsageError, match="Did you mean 'lenet5'"):
        plugins.models.get("lenet55")


# One test per hook: the meta-test below keeps this list complete.


def test_hook_register_methods():
    entry = make_plugins((FakeMethod(), "dfkd-plugin-fake")).methods.get("fake")
    assert entry.info["options"] is FakeOptions and entry.info["presets"] == {"quick": {"steps": 1}}


def test_hook_register_models():
    class Models:
        @hookimpl
        def register_models(self, register):
            register("tiny_net", lambda num_classes, in_channels: ("built", num_classes))

    entry = make_plugins((Models(), "m")).models.get("tiny_net")
    assert entry.build(num_classes=4, in_channels=1) == ("built", 4)


def test_hook_register_datasets():
    class Data:
        @hookimpl
        def register_datasets(self, register):
            register("zip:", lambda root=None, download=False, arg=None: f"zip of {arg}")

    assert make_plugins((Data(), "d")).datasets.get("zip:a.zip").build() == "zip of a.zip"


def test_hook_register_losses():
    class Losses:
        @hookimpl
        def register_losses(self, register):
            register("zero", lambda s, t, T=1.0: 0.0, "always zero")

    assert make_plugins((Losses(), "l")).losses.get("zero").load()(1, 2) == 0.0


def test_hook_register_commands():
    import typer

    from dfkd.cli import make_app

    class Commands:
        @hookimpl
        def register_commands(self, app, plugins):
            @app.command()
            def hello(name: str = "world"):
                typer.echo(f"hello {name}, {len(plugins.models)} models")

    from typer.testing import CliRunner

    plugins = make_plugins((Commands(), "c"))
    app = make_app(plugins)
    said = CliRunner().invoke(app, ["hello", "--name", "dfkd"]).output
    assert said == f"hello dfkd, {len(plugins.models)} models\n"


def test_every_hook_has_a_test():
    hooks = {
        n for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if n.startswith("register_")
    }
    tested = {n.removeprefix("test_hook_") for n in globals() if n.startswith("test_hook_")}
    assert hooks == tested


@pytest.mark.parametrize("args", [["--help"], ["list-methods"], ["plugins", "--json"], ["models"]])
def test_catalog_commands_do_not_import_torch(args):
    code = (
        "import sys\n"
        "from dfkd.cli import main\n"
        f"sys.argv = ['dfkd', *{args!r}]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stderr.strip().endswith("NO-TORCH"), done.stderr


def test_plugins_json_lists_hooks_and_errors(installed, monkeypatch):
    from typer.testing import CliRunner

    from dfkd.cli import make_app

    monkeypatch.delenv("DFKD_LOAD_PLUGINS", raising=False)
    installed(
        fake_distribution("dfkd-plugin-broken", FakeEntryPoint("broken", ImportError("boom")))
    )
    result = CliRunner().invoke(make_app(Plugins(strict=False)), ["plugins", "--json"])
    rows = json.loads(result.stdout)
    assert {"name": "dfkd-plugin-broken", "error": "ImportError: boom"} in rows
    assert any(r.get("hooks") == ["register_models"] for r in rows)


ROOT = Path(__file__).resolve().parents[1]
PLUGIN_DIRS = sorted(p.parent for p in (ROOT / "plugins").glob("*/pyproject.toml"))
DISTRIBUTIONS = {"dfkd": ROOT} | {p.name: p for p in PLUGIN_DIRS}

# Builds one distribution's wheel metadata through the PEP 517 hook that pip and build call, and
# says whether that imported dfkd: the core's version must be read from the source text.
_BUILD_METADATA = (
    "import sys\n"
    "from setuptools import build_meta\n"
    "print(build_meta.prepare_metadata_for_build_wheel(sys.argv[1]))\n"
    "print('IMPORTED' if 'dfkd' in sys.modules else 'NOT-IMPORTED')\n"
)


def _copy_project(src: Path, dest: Path) -> Path:
    """The files a build of ``src`` may use, alone in ``dest``: a plugin is built from its own
    folder, as a packager does, and nothing is written into the checkout."""
    skip = shutil.ignore_patterns("*.egg-info", "__pycache__", "build", "tests", "benchmarks")
    if src == ROOT:
        dest.mkdir()
        for name in ("pyproject.toml", "README.md", "LICENSE"):
            shutil.copy2(src / name, dest / name)
        shutil.copytree(src / "dfkd", dest / "dfkd", ignore=skip)
    else:
        shutil.copytree(src, dest, ignore=skip)
    return dest


@pytest.mark.slow
@pytest.mark.parametrize("project", DISTRIBUTIONS.values(), ids=DISTRIBUTIONS.keys())
def test_distribution_builds_without_warnings_and_with_complete_metadata(project, tmp_path):
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet

    import dfkd

    source = _copy_project(project, tmp_path / "src")
    out = tmp_path / "out"
    out.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", _BUILD_METADATA, str(out)],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    noise = [line for line in done.stderr.splitlines() if re.search("warn|deprecat", line, re.I)]
    assert not noise, done.stderr
    dist_info, imported = done.stdout.split()[-2:]
    assert imported == "NOT-IMPORTED"
    meta = email.parser.Parser().parsestr((out / dist_info / "METADATA").read_text())
    assert meta["License-Expression"] == "Apache-2.0"
    assert meta.get_all("License-File") == ["LICENSE"]
    assert (out / dist_info / "licenses" / "LICENSE").read_text() == (ROOT / "LICENSE").read_text()
    for field in ("Summary", "Requires-Python", "Author", "Keywords", "Description-Content-Type"):
        assert meta[field], field
    assert meta.get_all("Classifier")
    if project == ROOT:
        assert meta["Version"] == dfkd.__version__
    else:
        core = [Requirement(r) for r in meta.get_all("Requires-Dist") if r.startswith("dfkd")]
        assert [r.specifier for r in core] == [SpecifierSet(">=0.1,<0.2")]
        assert core[0].specifier.contains(dfkd.__version__)


# Plugins that fail are reported, never quietly missing.


class RaisingMethods:
    @hookimpl
    def register_methods(self, register):
        raise RuntimeError("boom")


def test_a_register_hook_that_raises_shows_as_failed_and_warns():
    from typer.testing import CliRunner

    from dfkd.cli import make_app

    lenient = Plugins(autoload=False, strict=False)
    lenient.register(RaisingMethods(), "raising", dist="dfkd-plugin-raising")
    result = CliRunner().invoke(make_app(lenient), ["plugins", "--json"])
    row = next(r for r in json.loads(result.stdout) if r["name"] == "raising")
    assert row["error"] == "register_methods: RuntimeError: boom"
    assert "could not load plugin dfkd-plugin-raising (register_methods: RuntimeError: boom)" in (
        result.stderr
    )
    with pytest.raises(PluginError, match="dfkd-plugin-raising .register_methods: .*boom"):
        make_plugins((RaisingMethods(), "dfkd-plugin-raising")).methods  # noqa: B018


def test_a_register_commands_hook_that_raises_is_a_load_failure():
    from dfkd.cli import make_app

    class RaisingCommands:
        @hookimpl
        def register_commands(self, app):
            raise ValueError("no commands today")

    lenient = Plugins(autoload=False, strict=False)
    lenient.register(RaisingCommands(), "commands", dist="dfkd-plugin-commands")
    make_app(lenient)
    assert lenient.errors == {
        "dfkd-plugin-commands": "register_commands: ValueError: no commands today"
    }


def test_a_plugin_calling_sys_exit_at_import_is_a_load_failure(installed, monkeypatch):
    from typer.testing import CliRunner

    from dfkd.cli import make_app

    monkeypatch.delenv("DFKD_LOAD_PLUGINS", raising=False)
    installed(
        fake_distribution("dfkd-plugin-exits", FakeEntryPoint("exits", SystemExit(3))),
        fake_distribution("dfkd-plugin-fake", FakeEntryPoint("fake", FakeMethod())),
    )
    plugins = Plugins(strict=False)
    assert plugins.errors == {"dfkd-plugin-exits": "SystemExit: 3"}
    assert "fake" in plugins.methods
    shown = CliRunner().invoke(make_app(plugins), ["--help"])
    assert shown.exit_code == 0 and "scratch" in shown.stdout
    with pytest.raises(PluginError, match="dfkd-plugin-exits .SystemExit: 3"):
        Plugins(strict=True)


def test_load_plugins_env_takes_entry_point_names_and_warns_of_unknown_ones(installed, monkeypatch):
    from typer.testing import CliRunner

    from dfkd.cli import make_app

    installed(fake_distribution("dfkd-plugin-fake", FakeEntryPoint("fake", FakeMethod())))
    monkeypatch.setenv("DFKD_LOAD_PLUGINS", "fake")
    assert "fake" in Plugins().methods
    monkeypatch.setenv("DFKD_LOAD_PLUGINS", "dfkd_plugin_FAKE")  # spelt as pip would accept
    assert "fake" in Plugins().methods
    monkeypatch.setenv("DFKD_LOAD_PLUGINS", "dfkd-plugin-fkae")
    plugins = Plugins()
    assert plugins.warnings == [
        "DFKD_LOAD_PLUGINS names dfkd-plugin-fkae, which no installed dfkd plugin is called (by "
        "distribution or entry point). Installed: dfkd-plugin-fake (fake)."
    ]
    shown = CliRunner().invoke(make_app(plugins), ["list-methods"])
    assert "Warning: DFKD_LOAD_PLUGINS names dfkd-plugin-fkae" in shown.stderr
    assert "No methods loaded: DFKD_LOAD_PLUGINS leaves out the installed plugins " in shown.stdout
    assert "dfkd-plugin-fake" in shown.stdout and "No methods installed" not in shown.stdout
    with pytest.raises(UsageError, match="leaves them out: dfkd-plugin-fake") as err:
        plugins.methods.get("fake")
    assert "pip install" not in str(err.value)


def test_strict_plugins_takes_the_usual_spellings(monkeypatch):
    for value, strict in [("1", True), ("true", True), ("Yes", True), ("ON", True), ("off", False)]:
        monkeypatch.setenv("DFKD_STRICT_PLUGINS", value)
        assert Plugins(autoload=False).strict is strict, value


def test_strict_plugins_garbage_is_one_line_and_exit_2():
    done = subprocess.run(
        [sys.executable, "-c", "from dfkd.cli import main; main()", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "DFKD_STRICT_PLUGINS": "sure"},
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("Error: DFKD_STRICT_PLUGINS='sure' is neither on (1, true")
    assert done.stderr.strip().count("\n") == 0


@pytest.mark.parametrize(
    ("kind", "info", "problem"),
    [
        ("method", {"option": FakeOptions}, "unknown keyword 'option' (did you mean 'options'?)"),
        ("method", {"options": FakeOptions, "preset": {}}, "unknown keyword 'preset'"),
        ("method", {"paper": "Nobody 2026"}, "method 'm' needs options=<the dataclass"),
        ("method", {"options": dict}, "method 'm' needs options=<the dataclass"),
        (
            "method",
            {"options": FakeOptions, "presets": {"quick": {"stepz": 1}}},
            "preset 'quick' sets unknown options stepz",
        ),
        ("model", {"input_sise": 32}, "unknown keyword 'input_sise' (did you mean 'input_size'?)"),
        ("dataset", {"classes": 10}, "unknown keyword 'classes'"),
        ("loss", {"temperature": 4}, "unknown keyword 'temperature'; it takes summary"),
    ],
)
def test_registration_refuses_unknown_or_missing_keywords(kind, info, problem):
    class Registering:
        pass

    def register_things(self, register):
        register("m", "dfkd.synthesis.base:Synthesizer", "summary", **info)

    setattr(Registering, REGISTRY_HOOKS[kind], hookimpl(register_things))
    with pytest.raises(PluginError, match=f"dfkd-plugin-m .{REGISTRY_HOOKS[kind]}") as err:
        make_plugins((Registering(), "dfkd-plugin-m")).registries  # noqa: B018
    assert problem in str(err.value)
    lenient = Plugins(autoload=False, strict=False)
    lenient.register(Registering(), "m", dist="dfkd-plugin-m")
    assert "m" not in lenient.registries[kind]
    assert problem in lenient.errors["dfkd-plugin-m"]


# A plugin's mistakes are found before a run starts: `dfkd plugins --check`, and `dfkd run`.


class BrokenMethods:
    """One method per mistake a plugin author makes that used to surface only mid-run."""

    @hookimpl
    def register_methods(self, register):
        from dfkd.synthesis.options import DataFreeOptions

        base = "dfkd.synthesis.base:Synthesizer"
        register("typo", "dfkd.synthesis.base:Synthesiser", "", options=DataFreeOptions)
        register("unimportable", "broken_synthesizer:Synth", "", options=DataFreeOptions)
        register("foreign", base, "", options=FakeOptions)
        presets = {"fine": {"epochs": 2}, "negative": {"lr": -1.0}, "text": {"epochs": "5"}}
        register("presets", base, "", options=DataFreeOptions, presets=presets)


@pytest.fixture
def broken_cli(tmp_path, monkeypatch, workdir):
    """The CLI with BrokenMethods installed; its unimportable synthesizer module is on the path."""
    from typer.testing import CliRunner

    from dfkd.cli import make_app

    (tmp_path / "broken_synthesizer.py").write_text("import torchh  # a typo\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    app = make_app(make_plugins((BrokenMethods(), "dfkd-plugin-broken")))
    return lambda *args: CliRunner().invoke(app, [str(a) for a in args])


def test_plugins_check_names_the_plugin_entry_and_preset_of_each_problem(broken_cli, monkeypatch):
    shown = broken_cli("plugins", "--check")
    assert shown.exit_code == 1
    assert shown.stdout.splitlines() == [
        "dfkd-plugin-broken: method 'foreign': options FakeOptions must derive from "
        "dfkd.api.DataFreeOptions.",
        "dfkd-plugin-broken: method 'presets', preset 'negative': Option 'lr' must be > 0, not "
        "-1.0.",
        "dfkd-plugin-broken: method 'presets', preset 'text': Option 'epochs' must be int, not "
        "'5'.",
        "dfkd-plugin-broken: method 'typo': cannot load dfkd.synthesis.base:Synthesiser "
        "(AttributeError: module 'dfkd.synthesis.base' has no attribute 'Synthesiser').",
        "dfkd-plugin-broken: method 'unimportable': cannot load broken_synthesizer:Synth "
        "(ModuleNotFoundError: No module named 'torchh').",
    ]
    assert shown.stderr == "5 problem(s) in the installed plugins.\n"
    monkeypatch.setenv("DFKD_TRACEBACK", "1")
    loud = broken_cli("plugins", "--check")
    assert loud.stdout == shown.stdout
    assert 'broken_synthesizer.py", line 1' in loud.stderr


def test_plugins_check_says_so_when_all_is_well(cli):
    shown = cli("plugins", "--check")
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.startswith("No problems: 4 plugins, ")


@pytest.mark.parametrize(
    ("method", "preset", "problem"),
    [
        ("typo", None, "method 'typo': cannot load dfkd.synthesis.base:Synthesiser (Attribute"),
        ("unimportable", None, "method 'unimportable': cannot load broken_synthesizer:Synth (M"),
        ("foreign", None, "method 'foreign': options FakeOptions must derive from dfkd.api"),
        ("presets", "negative", "method 'presets', preset 'negative': Option 'lr' must be > 0"),
        ("presets", "text", "method 'presets', preset 'text': Option 'epochs' must be int"),
    ],
)
def test_run_refuses_a_broken_plugin_in_one_line_before_the_run_directory(
    broken_cli, workdir, tiny_teacher_weights, method, preset, problem
):
    teacher = ["--teacher", "lenet5", "--teacher-weights", tiny_teacher_weights["lenet5"]]
    given = ["--preset", preset] if preset else []
    shown = broken_cli("run", method, *teacher, "--student", "lenet5_half", *given, "-q")
    assert shown.exit_code == 2
    assert shown.stderr.startswith(f"Error: dfkd-plugin-broken: {problem}"), shown.stderr
    assert shown.stderr.endswith(
        ". A fault of the plugin: dfkd plugins --check lists its problems.\n"
    )
    assert shown.stderr.count("\n") == 1
    assert not (workdir / "runs").exists()


def test_help_shows_the_plugin_warnings_too(installed, monkeypatch):
    from typer.testing import CliRunner

    from dfkd.cli import make_app

    monkeypatch.delenv("DFKD_LOAD_PLUGINS", raising=False)
    installed(
        fake_distribution("dfkd-plugin-broken", FakeEntryPoint("broken", ImportError("no torch")))
    )
    app = make_app(Plugins(strict=False))
    warning = (
        "Warning: could not load plugin dfkd-plugin-broken (ImportError: no torch). Disable it "
        "with DFKD_DISABLE_PLUGINS=dfkd-plugin-broken or uninstall it: pip uninstall "
        "dfkd-plugin-broken"
    )
    for args in (["--help"], [], ["models", "--help"]):
        shown = CliRunner().invoke(app, args)
        assert shown.stderr.splitlines().count(warning) == 1, (args, shown.stderr)
    assert "scratch" in CliRunner().invoke(app, ["--help"]).stdout


def test_traceback_switch_prints_the_whole_traceback_behind_each_line(installed, monkeypatch):
    from typer.testing import CliRunner

    from dfkd.cli import make_app

    monkeypatch.delenv("DFKD_LOAD_PLUGINS", raising=False)
    installed(
        fake_distribution("dfkd-plugin-broken", FakeEntryPoint("broken", ImportError("no torch")))
    )
    app = make_app(Plugins(strict=False))
    args = ["run", "nothing", "--teacher", "lenet5", "--student", "lenet5_half"]
    quiet = CliRunner().invoke(app, args)
    assert quiet.exit_code == 2 and "Traceback" not in quiet.stderr
    assert len(quiet.stderr.splitlines()) == 2  # the plugin's warning and the error
    monkeypatch.setenv("DFKD_TRACEBACK", "1")
    loud = CliRunner().invoke(app, args)
    assert loud.exit_code == 2
    assert loud.stderr.count("Traceback (most recent call last)") == 2
    assert "\nImportError: no torch\n" in loud.stderr  # the plugin's failure, then its warning
    assert "dfkd.errors.UsageError: Unknown method 'nothing'" in loud.stderr
    assert loud.stderr.splitlines()[-1].startswith("Error: Unknown method 'nothing'.")
    monkeypatch.setenv("DFKD_TRACEBACK", "off")
    assert "Traceback" not in CliRunner().invoke(app, args).stderr


def test_traceback_switch_reaches_errors_before_the_app_exists():
    done = subprocess.run(
        [sys.executable, "-c", "from dfkd.cli import main; main()", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "DFKD_STRICT_PLUGINS": "sure", "DFKD_TRACEBACK": "1"},
    )
    assert done.returncode == 2
    assert done.stderr.startswith("Traceback (most recent call last)")
    assert done.stderr.splitlines()[-1].startswith("Error: DFKD_STRICT_PLUGINS='sure' is neither")


def test_every_method_the_project_ships_earns_the_pip_hint():
    """The pip hint for a missing first-party method names exactly the plugins under plugins/."""
    from dfkd.registry import FIRST_PARTY_METHODS

    shipped = {p.name for p in (Path(__file__).parent.parent / "plugins").iterdir() if p.is_dir()}
    assert set(FIRST_PARTY_METHODS) == shipped
