"""Test helpers for dfkd and its plugins: ``pytest_plugins = ["dfkd.testing"]`` in a conftest.

Provides a plugin set with autoload off (tests never see what happens to be installed), a tiny
learnable dataset, a throw-away working folder, a CLI runner, and tiny teachers trained once
per session, the check that a run directory is complete, and a two-process torchrun launcher.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dfkd import hookimpl
from dfkd.plugins import Plugins

os.environ.setdefault("DFKD_STRICT_PLUGINS", "1")


def make_tiny_images(n: int, seed: int) -> tuple[Any, Any]:
    """Class k lights a horizontal bar at row 2 + 2k over faint noise: learnable in seconds."""
    import torch

    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 10
    images = torch.randint(0, 40, (n, 1, 28, 28), generator=g, dtype=torch.uint8)
    for i, k in enumerate(labels.tolist()):
        images[i, 0, 2 + 2 * k : 4 + 2 * k, 4:24] = 230
    return images, labels


def _tiny_source(root: Any = None, download: bool = False) -> Any:
    from dfkd.data.source import DataSource

    class TinySource(DataSource):
        name = "tiny"
        classes = [str(i) for i in range(10)]
        channels = 1
        image_size = 28
        mean = (0.2,)
        std = (0.3,)
        location = Path("/dfkd-tiny")

        def _read(self, split: str) -> Any:
            return make_tiny_images(200 if split == "train" else 100, 0 if split == "train" else 1)

    return TinySource()


class TinyDatasetPlugin:
    @hookimpl
    def register_datasets(self, register):
        register(
            "tiny",
            _tiny_source,
            "learnable toy data for tests",
            num_classes=10,
            channels=1,
            image_size=28,
        )


def make_plugins(*extra: tuple[object, str]) -> Plugins:
    """Built-ins, the tiny dataset and the given (plugin, name) pairs; nothing autoloaded."""
    plugins = Plugins(autoload=False, strict=True)
    plugins.register(TinyDatasetPlugin(), "tiny-dataset", dist="dfkd-testing")
    for plugin, name in extra:
        plugins.register(plugin, name, dist=name)
    return plugins


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


class KillAfterEpoch:
    """A reporter that interrupts a run once epoch ``n`` is checkpointed, like a Ctrl-C or a kill:
    the way a resume test stops the first half of a run."""

    def __init__(self, n: int = 1) -> None:
        self.n = n

    def start(self, epochs: int, first_epoch: int) -> None: ...
    def epoch_start(self, epoch: int, steps: int) -> None: ...
    def step(self, logs: dict[str, float]) -> None: ...
    def close(self) -> None: ...

    def epoch_end(self, row: dict[str, Any]) -> None:
        if row["epoch"] == self.n:
            raise KeyboardInterrupt


RUN_FILES = ("config.json", "metrics.jsonl", "student.safetensors", "samples.png")


def assert_complete_run(run_dir: Path, epochs: int | None = None) -> list[dict[str, Any]]:
    """Assert a finished data-free run left everything a user reads and ``--resume`` needs (and,
    given ``epochs``, one metrics row per epoch); return the metrics rows."""
    for name in RUN_FILES:
        assert (run_dir / name).is_file(), name
    assert (run_dir / "state" / "checkpoint.pt").is_file()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    if epochs is not None:
        assert [r["epoch"] for r in rows] == list(range(1, epochs + 1))
    return rows


def tiny_run_config(
    method: str, teacher: str, weights: Path, out: Path, overrides: list[str]
) -> Any:
    """A data-free RunConfig on the tiny dataset, from ``teacher`` (``weights``) to lenet5_half."""
    from dfkd.training.datafree import RunConfig

    return RunConfig(
        method=method,
        teacher=teacher,
        student="lenet5_half",
        dataset="tiny",
        teacher_weights=str(weights),
        overrides=overrides,
        out=str(out),
    )


def run_two_processes(script: Path) -> None:
    """Run ``script`` under torchrun as two processes of one thread each, in the script's folder;
    a failure fails the calling test with the end of the processes' stderr."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone"]
    done = subprocess.run(
        [*command, str(script)],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
        cwd=script.parent,
    )
    assert done.returncode == 0, done.stderr[-3000:]
