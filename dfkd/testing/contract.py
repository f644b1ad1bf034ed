"""The method contract: what every data-free method keeps, as test classes.

Each class is configured by class attributes and runs the method on the tiny dataset from its
``smoke`` preset (docs/plugins.md#the-smoke-preset). ``SmokeContract`` holds the checks that need
nothing else; the core suite runs it for every registered method
(tests/test_method_contract.py). ``LearningContract`` checks that the student learns, from
option values a method must choose for itself. ``MethodContract`` is both: what a plugin's own
suite subclasses.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dfkd.plugins import Plugins
from dfkd.testing.plugins import make_plugins
from dfkd.testing.runs import (
    KillAfterEpoch,
    assert_complete_run,
    assert_same_state,
    assert_same_student,
    assert_same_tensors,
    run_two_processes,
    tiny_run_config,
)

#: the preset every method declares for runs of seconds on a tiny dataset
SMOKE = "smoke"


class _Contract:
    """Which method, and how a contract test runs it."""

    method: str
    #: the plugin object the entry point names
    module: Any
    distribution: str
    #: the tiny teacher to distil from: "lenet5" or "lenet5_bn" (BN-statistics methods)
    teacher = "lenet5"
    #: ``-o`` overrides on top of the ``smoke`` preset
    options: list[str] = []

    def contract_plugins(self) -> Plugins:
        return make_plugins((self.module, self.distribution))

    def prepare(self, teacher_weights: Path, folder: Path) -> list[str]:
        """Make what a run of the method needs besides the teacher (e.g. records from real
        data, in ``folder``) and return the ``-o`` options that point to it."""
        return []

    def require_smoke_preset(self) -> None:
        """Fail, naming the plugin, where the method declares no smoke preset: every contract
        run starts from it."""
        if SMOKE not in self.contract_plugins().methods.get(self.method).info.get("presets", {}):
            pytest.fail(
                f"{self.distribution}: method '{self.method}' declares no '{SMOKE}' preset, the "
                "option values of a run of seconds on a tiny dataset that the method contract "
                "starts from (docs/plugins.md#the-smoke-preset).",
                pytrace=False,
            )

    def contract_options(self, weights: dict[str, Path], folder: Path, teacher: str) -> list[str]:
        return [*self.options, *self.prepare(weights[teacher], folder)]

    def contract_config(
        self, weights: dict[str, Path], out: Path, extra: list[str] = (), teacher: str = ""
    ) -> Any:
        self.require_smoke_preset()
        teacher = teacher or self.teacher
        options = [*self.contract_options(weights, out.parent, teacher), *extra]
        return tiny_run_config(self.method, teacher, weights[teacher], out, options, preset=SMOKE)


class SmokeContract(_Contract):
    """The checks that run from the ``smoke`` preset alone: every preset resolves, the entry
    point loads the module, a tiny run writes a complete run directory, a run killed after an
    epoch resumes bit-identical (so state a synthesizer keeps but does not restore is caught), a
    student whose input size differs from the teacher's works, a run from the teacher's weights
    alone works, and, under torchrun, two processes resume bit-identical (a
    ``GenerativeSynthesizer``'s generator one model across them)."""

    def test_contract_presets_resolve(self) -> None:
        import dataclasses

        from dfkd.options import build_options
        from dfkd.synthesis.options import DataFreeOptions

        self.require_smoke_preset()
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
        assert_same_student(workdir / "whole", workdir / "cut")
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
    def test_contract_two_processes_resume_bit_identical(
        self, tiny_teacher_weights: dict[str, Path], workdir: Path
    ) -> None:
        import torch

        from dfkd.synthesis.generative import GenerativeSynthesizer

        self.require_smoke_preset()
        args = {
            "module": self.module.__name__,
            "distribution": self.distribution,
            "method": self.method,
            "teacher": self.teacher,
            "weights": str(tiny_teacher_weights[self.teacher]),
            "student": "lenet5_half",
            "preset": SMOKE,
            "options": [
                *self.contract_options(tiny_teacher_weights, workdir, self.teacher),
                "epochs=2",
            ],
        }
        script = workdir / "two_processes.py"
        script.write_text(_TWO_PROCESS_SCRIPT)
        run_two_processes(script, json.dumps(args))
        assert_same_student(workdir / "whole", workdir / "cut")
        whole, cut = (
            torch.load(workdir / d / "state" / "checkpoint.pt", weights_only=True)
            for d in ("whole", "cut")
        )
        assert whole["num_processes"] == 2
        for rank in (0, 1):
            assert_same_state(whole["processes"][rank], cut["processes"][rank])
        factory = self.contract_plugins().methods.get(self.method).load()
        if isinstance(factory, type) and issubclass(factory, GenerativeSynthesizer):
            first, second = (whole["processes"][r]["objects"]["synthesizer"] for r in (0, 1))
            assert_same_tensors(first["generator"], second["generator"], "shared generator")
            assert not torch.equal(
                whole["processes"][0]["rng"]["torch"], whole["processes"][1]["rng"]["torch"]
            ), "the processes must draw their own latents"


class LearningContract(_Contract):
    """The student learns the tiny task: a run from the ``smoke`` preset and ``learn_options``,
    long enough to learn, reaches ``learn_top1``. Skipped without ``learn_options``."""

    #: ``-o`` overrides for the learning check, added to ``options``
    learn_options: list[str] = []
    #: the tiny teacher of the learning check, when not ``teacher``
    learn_teacher: str | None = None
    #: top-1 % the student must reach on the tiny task (chance is 10 %)
    learn_top1 = 40.0

    @pytest.mark.slow
    def test_contract_student_learns(
        self, tiny_teacher_weights: dict[str, Path], workdir: Path
    ) -> None:
        from dfkd.training.datafree import run_datafree

        if not self.learn_options:
            pytest.skip("set learn_options: a setting in which the student learns the tiny task")
        cfg = self.contract_config(
            tiny_teacher_weights, workdir / "learn", self.learn_options, self.learn_teacher or ""
        )
        outcome = run_datafree(cfg, plugins=self.contract_plugins())
        assert outcome.last["top1"] >= self.learn_top1


class MethodContract(SmokeContract, LearningContract):
    """The whole contract a data-free method keeps: subclass it in a plugin's tests.

    ``class TestContract(MethodContract)`` with ``method``, ``module`` (the plugin object the
    entry point names) and ``distribution`` runs ``SmokeContract``'s checks from the method's
    ``smoke`` preset and, given ``learn_options``, ``LearningContract``'s. docs/plugins.md,
    "Testing", shows a complete example.
    """


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
                           student=student, preset=args["preset"])


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
