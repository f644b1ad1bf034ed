"""Property tests: whatever a user types or whatever became of a file, a command succeeds or
says what is wrong in one line with exit 1 or 2, never a traceback.

Random ``-o key=value`` strings go to `build_options` and to `dfkd run`, random numbers to
`dfkd scratch` and `dfkd kd`, and damaged run files (truncated, overwritten, with flipped bytes)
to `dfkd eval --weights`, `dfkd run --teacher-weights` and `dfkd run --resume`.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from dfkd.cli import make_app
from dfkd.errors import UsageError
from dfkd.options import build_options
from dfkd.testing import make_plugins, tiny_run_config
from dfkd.training.loop import Outcome

METHODS = ["cmi", "cudfkd", "dafl", "deepinv", "dfad", "dfq", "lopes", "zskt"]
PLUGINS = make_plugins(
    *((importlib.import_module(f"dfkd_plugin_{m}"), f"dfkd-plugin-{m}") for m in METHODS)
)
OPTIONS = {m: PLUGINS.methods.get(m).info["options"] for m in METHODS}
FEW = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: what a user may type as a value: numbers of every kind, special floats, words, nothing
VALUES = st.one_of(
    st.sampled_from(
        [
            "nan",
            "-nan",
            "inf",
            "-inf",
            "1e309",
            "-1",
            "0",
            "0.0",
            "-0",
            "",
            " ",
            "none",
            "true",
            "1,2",
            "(0.5, 1)",
            "1,2,3",
            "kl",
            "１２",
            "1_000",
            "0x10",
            "1e-400",
            "２.５",
            "é",
            "∞",
        ]
    ),  # fmt: skip
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=12),
)


def option_strings(method: str) -> st.SearchStrategy[list[str]]:
    keys = st.one_of(
        st.sampled_from([f.name for f in dataclasses.fields(OPTIONS[method])]),
        st.text(max_size=8),
    )
    return st.lists(st.tuples(keys, VALUES).map(lambda kv: f"{kv[0]}={kv[1]}"), max_size=4)


def assert_sensible(options: Any) -> None:
    """What `build_options` promises about any options it returns."""
    for f in dataclasses.fields(options):
        value = getattr(options, f.name)
        for v in value if isinstance(value, tuple) else (value,):
            assert not isinstance(v, float) or math.isfinite(v), f.name
    assert options.epochs >= 1 and options.ep_steps >= 1 and options.kd_steps >= 1
    assert options.ep_steps % options.kd_steps == 0 and options.warmup < options.epochs
    assert options.batch_size >= 1 and options.g_steps >= 1 and options.synthesis_batch_size >= 0
    assert options.lr > 0 and options.T > 0 and 0 <= options.momentum < 1


@FEW
@given(method=st.sampled_from(METHODS), data=st.data())
def test_build_options_returns_sensible_options_or_a_usage_error(method, data):
    overrides = data.draw(option_strings(method))
    try:
        options = build_options(OPTIONS[method], {}, overrides)
    except UsageError:
        return
    assert_sensible(options)


def one_line_or_success(done: Any) -> None:
    assert done.exception is None or isinstance(done.exception, SystemExit), done.exception
    if done.exit_code != 0:
        assert done.exit_code in (1, 2), done.output
        assert done.output.strip() and done.output.strip().count("\n") == 0, done.output


def invoke(*args: Any) -> Any:
    return CliRunner().invoke(make_app(PLUGINS), [str(a) for a in args])


def validated_only(cfg: Any, **kwargs: Any) -> Outcome:
    """A training function as far as validation: the CLI has checked the options; nothing
    trains."""
    extras = {"run": "r", "samples": "s", "checkpoint": "c", "default": "c"}
    return Outcome([], Path("w"), Path("b"), extras=extras)


RUN = ("run", "dafl", "--teacher", "lenet5", "--student", "lenet5_half", "--dataset", "tiny")


@FEW
@given(overrides=option_strings("dafl"))
@example(overrides=["0\n0=nan"])  # quoted back in the message, the line break made two lines
def test_run_with_random_options_succeeds_or_says_why_in_one_line(overrides):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("dfkd.training.datafree.run_datafree", validated_only)
        done = invoke(*RUN, *(a for o in overrides for a in ("-o", o)), "--quiet")
    one_line_or_success(done)


#: numbers as click passes them on: any int, any float (nan and inf included)
INTS = st.integers(min_value=-(10**12), max_value=10**12).map(str)
FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5)).map(str)


@FEW
@given(
    command=st.sampled_from(["scratch", "kd"]),
    flags=st.dictionaries(
        st.sampled_from(["--epochs", "--batch-size", "--lr", "--weight-decay", "-T", "--alpha"]),
        st.none(),
        max_size=4,
    ),
    data=st.data(),
)
def test_training_flags_with_random_numbers_succeed_or_say_why_in_one_line(command, flags, data):
    args = []
    for flag in flags:
        if command == "scratch" and flag in ("-T", "--alpha"):
            continue
        args += [flag, data.draw(INTS if flag in ("--epochs", "--batch-size") else FLOATS)]
    base = (
        ("scratch", "--model", "lenet5", "--dataset", "tiny")
        if command == "scratch"
        else ("kd", "--teacher", "lenet5", "--student", "lenet5_half", "--dataset", "tiny")
    )
    train = "train_scratch" if command == "scratch" else "train_kd"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(f"dfkd.training.supervised.{train}", validated_only)
        done = invoke(*base, *args, "--quiet")
    one_line_or_success(done)


# Damaged files


@pytest.fixture(scope="module")
def pristine(tiny_teacher_weights, tmp_path_factory) -> Path:
    """A finished one-epoch DAFL run: student weights and sidecar, config, metrics, checkpoint."""
    from dfkd.training.datafree import run_datafree

    out = tmp_path_factory.mktemp("pristine") / "run"
    options = ["epochs=1", "ep_steps=2", "kd_steps=1", "batch_size=4", "nz=4", "ngf=2"]
    cfg = tiny_run_config("dafl", "lenet5", tiny_teacher_weights["lenet5"], out, options)
    cfg.student = "lenet5"  # so that the student's weights can stand in for a teacher
    run_datafree(cfg, plugins=PLUGINS)
    return out


@st.composite
def damage(draw: Any, data: bytes) -> bytes:
    """Cut short, overwritten with random bytes, some bytes changed, or garbage added."""
    kind = draw(st.sampled_from(["truncate", "random", "flip", "append"]))
    if kind == "truncate":
        return data[: draw(st.integers(0, max(0, len(data) - 1)))]
    if kind == "random":
        return draw(st.binary(max_size=300))
    if kind == "append":
        return data + draw(st.binary(min_size=1, max_size=50))
    damaged = bytearray(data)
    for _ in range(draw(st.integers(1, 8))):
        damaged[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(damaged)


WEIGHTS = ["student.safetensors", "student.json"]
RUN_FILES = ["config.json", "metrics.jsonl", "state/checkpoint.pt"]


@FEW
@given(name=st.sampled_from([*WEIGHTS, *RUN_FILES]), data=st.data())
def test_damaged_files_are_one_line_errors(pristine, tiny_teacher_weights, name, data):
    with tempfile.TemporaryDirectory() as folder:
        run = Path(folder) / "run"
        shutil.copytree(pristine, run)
        file = run / name
        file.write_bytes(data.draw(damage(file.read_bytes())))
        weights = run / "student.safetensors"
        if name in WEIGHTS:
            done = invoke("eval", "--model", "lenet5", "--dataset", "tiny", "--weights", weights)
            one_line_or_success(done)
            tiny = ["epochs=1", "ep_steps=1", "kd_steps=1", "batch_size=4", "nz=2", "ngf=2"]
            options = [a for o in tiny for a in ("-o", o)]
            done = invoke(
                *RUN, "--teacher-weights", weights, *options, "--out", Path(folder) / "new", "-q"
            )
        else:
            done = invoke("run", "--resume", run, "--quiet")
        one_line_or_success(done)
