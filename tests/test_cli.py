"""The catalog commands and the option system, as a user meets them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

import pytest

from dfkd import hookimpl
from dfkd.errors import UsageError
from dfkd.options import build_options, describe, option
from dfkd.synthesis.options import DataFreeOptions
from dfkd.testing import make_plugins


@dataclass
class ToyOptions(DataFreeOptions):  # what `dfkd run` requires of a method's options
    steps: int = option(3, "How many steps.")
    rate: float = option(0.1, "Learning rate.")
    mode: Literal["kl", "l1"] = option("kl", "Which loss.")
    mask: bool = option(True, "Use the agreement mask.")
    betas: tuple[float, ...] = option((0.5, 0.999), "Adam betas.")
    init: str | None = option(None, "Optional folder.")


class ToyMethod:
    @hookimpl
    def register_methods(self, register):
        register(
            "toy",
            "dfkd.synthesis.base:Synthesizer",
            "a toy method",
            paper="Toy 2026",
            options=ToyOptions,
            presets={"fast": {"steps": 1, "rate": 0.5}},
        )


@pytest.fixture
def toy_cli(workdir):
    from typer.testing import CliRunner

    from dfkd.cli import make_app

    app = make_app(make_plugins((ToyMethod(), "dfkd-plugin-toy")))
    return lambda *args: CliRunner().invoke(app, list(args))


def test_options_parse_each_type_over_a_preset():
    opts = build_options(
        ToyOptions,
        {"steps": 1},
        ["rate=0.25", "mode=l1", "mask=false", "betas=0.9,0.99", "init=folder:x"],
    )
    assert opts == ToyOptions(
        steps=1, rate=0.25, mode="l1", mask=False, betas=(0.9, 0.99), init="folder:x"
    )
    assert build_options(ToyOptions, None, ["init=none"]).init is None


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("stpes=2", "Unknown option 'stpes'. Did you mean 'steps'?"),
        ("steps=two", "Option 'steps' must be int, not 'two'."),
        ("mode=l2", "Option 'mode' must be one of kl, l1."),
        ("mask=maybe", "Option 'mask' must be true or false"),
        ("steps", "must look like key=value"),
    ],
)
def test_bad_options_say_what_is_expected(item, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace("?", r"\?")):
        build_options(ToyOptions, None, [item])


def test_describe_lists_type_default_and_help():
    rows = {r["name"]: r for r in describe(ToyOptions)}
    assert rows["steps"] == {
        "name": "steps",
        "type": "int",
        "default": "3",
        "help": "How many steps.",
    }
    assert "Literal" in rows["mode"]["type"]


def test_list_methods_shows_name_summary_paper_plugin_version(toy_cli):
    shown = toy_cli("list-methods")
    assert shown.exit_code == 0
    for text in ("toy", "a toy method", "Toy 2026", "dfkd-plugin-toy", "fast"):
        assert text in shown.output
    assert "No methods installed matching 'zzz'" in toy_cli("list-methods", "zzz").output


def test_list_methods_options_and_run_help_list_every_option(toy_cli):
    for args in (("list-methods", "--options", "toy"), ("run", "toy", "--help")):
        shown = toy_cli(*args)
        assert shown.exit_code == 0, shown.output
        for name in ("steps", "rate", "mode", "mask", "betas", "init", "How many steps."):
            assert name in shown.output
        assert "--preset fast" in shown.output


def test_run_rejects_unknown_method_and_option_before_any_work(toy_cli, workdir):
    shown = toy_cli(
        "run", "toi", "--teacher", "lenet5", "--student", "lenet5_half", "--dataset", "tiny"
    )
    assert shown.exit_code == 2
    assert "Unknown method 'toi'. Did you mean 'toy'?" in shown.output
    shown = toy_cli(
        "run", "cmi", "--teacher", "lenet5", "--student", "lenet5_half", "--dataset", "tiny"
    )
    assert "pip install dfkd-plugin-cmi" in shown.output
    shown = toy_cli(
        "run",
        "toy",
        "--teacher",
        "lenet5",
        "--student",
        "lenet5_half",
        "--dataset",
        "tiny",
        "-o",
        "stepz=1",
    )
    assert shown.exit_code == 2 and "Did you mean 'steps'?" in shown.output
    shown = toy_cli(
        "run",
        "toy",
        "--teacher",
        "lenet5",
        "--student",
        "lenet5_half",
        "--dataset",
        "tiny",
        "--preset",
        "slow",
    )
    assert shown.exit_code == 2 and "no preset 'slow'. Presets: fast." in shown.output
    assert not (workdir / "runs").exists()


def test_models_and_datasets_list_the_builtins(cli):
    models = cli("models").output
    for name in (
        "lenet5_half",
        "lenet5_bn",
        "hinton1200",
        "hinton800",
        "wrn16_1",
        "wrn40_2",
        "resnet18",
        "resnet34",
        "vgg11",
        "timm:<name>",
        "torchvision:<name>",
    ):
        assert name in models
    assert (
        "wrn16_1" in cli("models", "wrn*").output and "lenet5" not in cli("models", "wrn*").output
    )
    datasets = cli("datasets").output
    for name in ("mnist", "fashion-mnist", "cifar10", "cifar100", "svhn", "folder:PATH", "tiny"):
        assert name in datasets


def test_plugins_json_is_valid(cli):
    rows = json.loads(cli("plugins", "--json").stdout)
    assert {r["name"] for r in rows} >= {"dfkd.models.plugin", "dfkd.data.plugin"}


def test_version(cli):
    from dfkd import __version__

    assert cli("--version").output.strip() == f"dfkd {__version__}"


def test_a_preset_value_outside_the_choices_is_refused():
    with pytest.raises(UsageError, match="'mode' must be one of kl, l1, not 'kll'"):
        build_options(ToyOptions, {"mode": "kll"})


@pytest.mark.parametrize("main_process", [True, False])
def test_only_process_0_reports_a_run(toy_cli, monkeypatch, main_process):
    """Under torchrun every process runs the command; one summary is printed, not one each."""
    from pathlib import Path

    from dfkd.training import datafree, supervised
    from dfkd.training.loop import Outcome

    def finished(*args, **kwargs):
        extras = {
            "run": "runs/x",
            "samples": "runs/x/samples.png",
            "checkpoint": "c",
            "default": "c",
        }
        rows = [{"epoch": 1, "top1": 50.0}]
        return Outcome(rows, Path("w"), Path("b"), extras=extras, main_process=main_process)

    for module, name in (
        (datafree, "run_datafree"),
        (supervised, "train_kd"),
        (supervised, "train_scratch"),
    ):
        monkeypatch.setattr(module, name, finished)
    pair = ("--teacher", "lenet5", "--student", "lenet5_half", "--dataset", "tiny")
    for args in (
        ("run", "toy", *pair),
        ("kd", *pair),
        ("scratch", "--model", "lenet5", "--dataset", "tiny"),
    ):
        shown = toy_cli(*args)
        assert shown.exit_code == 0, shown.output
        assert ("run: runs/x" in shown.output or "checkpoint: c" in shown.output) is main_process
        assert bool(shown.output) is main_process


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        (["eval"], "[default: 1000; 16 for"),
        (["make-scenes"], "[default: 2; street 3]"),
    ],
)
def test_a_default_written_in_the_help_text_is_shown_not_eaten_as_markup(cli, command, shown):
    done = cli(*command, "--help")
    assert done.exit_code == 0 and shown in " ".join(done.output.split())
