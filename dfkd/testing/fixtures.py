"""The pytest plugin dfkd installs (entry point ``pytest11``), for dfkd's tests and any plugin's:
strict plugin loading, a plugin set with autoload off, a throw-away working folder, an
in-process CLI, and tiny teachers trained once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dfkd.plugins import Plugins
from dfkd.testing.plugins import make_plugins


def pytest_configure(config: pytest.Config) -> None:
    """Tests fail on a plugin that does not load instead of skipping it with a warning."""
    os.environ.setdefault("DFKD_STRICT_PLUGINS", "1")


@pytest.fixture
def plugins() -> Plugins:
    return make_plugins()


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty folder so runs/ and checkpoints/ land in tmp."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DFKD_CHECKPOINTS", raising=False)
    return tmp_path


@pytest.fixture
def cli(plugins: Plugins, workdir: Path):
    """Invoke the CLI in-process: ``cli("models")`` returns click's Result."""
    from typer.testing import CliRunner

    from dfkd.cli import make_app

    app = make_app(plugins)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="session")
def tiny_teacher_weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """LeNet-5 and LeNet-5-BN teachers on the tiny dataset, trained once per test session.

    Pass one as ``teacher_weights`` (or ``--teacher-weights``); both reach 100 % on tiny's test
    split, so a student that learns anything shows it.
    """
    from dfkd.training.supervised import ScratchConfig, train_scratch

    root = tmp_path_factory.mktemp("tiny-teachers")
    paths = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DFKD_CHECKPOINTS", str(root / "checkpoints"))
        for model in ("lenet5", "lenet5_bn"):
            cfg = ScratchConfig(
                dataset="tiny",
                model=model,
                epochs=5,
                batch_size=32,
                lr=0.05,
                out=str(root / f"run-{model}"),
            )
            # the last epoch's weights: confident; the best-scoring epoch may be an early one
            paths[model] = train_scratch(cfg, plugins=make_plugins()).weights
    return paths


@pytest.fixture(scope="session")
def tiny_seg_teacher_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """segnet_small trained on the tiny scenes once per test session (mIoU above 50 %): its
    last weights, with their sidecar."""
    from dfkd.training.supervised import ScratchConfig, train_scratch

    root = tmp_path_factory.mktemp("tiny-seg-teacher")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DFKD_CHECKPOINTS", str(root / "checkpoints"))
        cfg = ScratchConfig(
            dataset="tiny-seg",
            model="segnet_small",
            epochs=4,
            batch_size=16,
            lr=0.05,
            out=str(root / "run"),
        )
        return train_scratch(cfg, plugins=make_plugins()).weights
