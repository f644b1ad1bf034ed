"""`--mixed-precision auto`: the chooser, on workloads whose cost under each precision is known."""

from __future__ import annotations

import functools
import json

import pytest
import torch

from dfkd.errors import UsageError
from dfkd.testing import run_two_processes
from dfkd.training import precision
from dfkd.training.precision import choose_precision, distillation_workload, resolve_precision


class FakeClock:
    """A timer and a workload: each call advances the clock by the cost of the autocast
    precision it runs under, and is recorded, so timings are exact and the order is visible."""

    def __init__(self, no: float, bf16: float, first_call: float = 0.0) -> None:
        self.cost = {"no": no, "bf16": bf16}
        self.first_call = first_call
        self.now = 0.0
        self.calls: list[str] = []

    def timer(self) -> float:
        return self.now

    def workload(self) -> None:
        on = torch.is_autocast_enabled("cpu")
        assert not on or torch.get_autocast_dtype("cpu") == torch.bfloat16
        name = "bf16" if on else "no"
        self.now += self.first_call if name not in self.calls else self.cost[name]
        self.calls.append(name)


def with_clock(monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> None:
    """Make `resolve_precision` time on ``clock``."""
    timed = functools.partial(choose_precision, timer=clock.timer)
    monkeypatch.setattr(precision, "choose_precision", timed)


def test_bf16_is_chosen_when_it_is_faster_by_the_margin():
    clock = FakeClock(no=1.0, bf16=0.6)
    choice = choose_precision(clock.workload, repeats=5, timer=clock.timer)
    assert choice.precision == "bf16"
    assert choice.seconds == pytest.approx({"no": 1.0, "bf16": 0.6})


@pytest.mark.parametrize("bf16", [0.95, 1.0, 1.7])
def test_float32_stays_unless_bf16_beats_it_by_the_margin(bf16):
    clock = FakeClock(no=1.0, bf16=bf16)
    assert choose_precision(clock.workload, margin=0.1, timer=clock.timer).precision == "no"


def test_warm_up_is_not_timed_and_candidates_take_turns():
    clock = FakeClock(no=1.0, bf16=0.5, first_call=100.0)
    choice = choose_precision(clock.workload, repeats=4, timer=clock.timer)
    assert choice.seconds == pytest.approx({"no": 1.0, "bf16": 0.5})
    assert clock.calls == ["no", "bf16"] + ["no", "bf16", "bf16", "no"] * 2


def test_measuring_leaves_the_global_rng_alone():
    def workload() -> None:
        torch.rand(3)  # a workload may draw (dropout, latents)

    torch.manual_seed(5)
    expected = torch.rand(2)
    torch.manual_seed(5)
    choose_precision(workload, repeats=2)
    assert torch.equal(torch.rand(2), expected)


def test_an_unknown_precision_is_a_usage_error():
    with pytest.raises(UsageError, match="no, fp16, bf16 or auto, not 'fast'"):
        resolve_precision("fast", cpu=True)


def test_cli_rejects_an_unknown_precision_in_one_line(cli, tiny_teacher_weights):
    weights = tiny_teacher_weights["lenet5"]
    shown = cli(
        "eval", "-m", "lenet5", "-d", "tiny", "--weights", weights, "--mixed-precision", "x"
    )
    assert shown.exit_code == 2
    assert shown.output.strip().splitlines() == [
        "Error: --mixed-precision must be no, fp16, bf16 or auto, not 'x'."
    ]


def test_an_explicit_precision_is_not_measured():
    def workload() -> None:
        raise AssertionError("measured")

    assert resolve_precision("bf16", workload, cpu=True) == (
        "bf16",
        {"requested": "bf16", "chosen": "bf16"},
    )


def test_auto_on_the_cpu_records_the_times_it_chose_by(monkeypatch):
    clock = FakeClock(no=0.02, bf16=0.01)
    with_clock(monkeypatch, clock)
    chosen, record = resolve_precision("auto", clock.workload, cpu=True)
    assert chosen == "bf16"
    assert record["chosen"] == "bf16" and record["workload"] == "given"
    assert record["seconds"] == {"no": 0.02, "bf16": 0.01}
    assert record["measured"] and record["margin"] == precision.MARGIN


def test_auto_on_cuda_follows_bf16_support(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for supported, expected in ((True, "bf16"), (False, "no")):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda s=supported: s)
        chosen, record = resolve_precision("auto", lambda: None)
        assert (chosen, record["device"], record["measured"]) == (expected, "cuda", False)
    # --cpu measures even where CUDA is present
    clock = FakeClock(no=1.0, bf16=2.0)
    with_clock(monkeypatch, clock)
    assert resolve_precision("auto", clock.workload, cpu=True)[1]["device"] == "cpu"


@pytest.mark.slow
def test_the_processes_of_a_cpu_run_take_process_0s_measured_choice(tmp_path):
    script = tmp_path / "auto.py"
    script.write_text(
        "import json\n"
        "import torch.distributed as dist\n"
        "from dfkd.training.precision import resolve_precision\n"
        "chosen, record = resolve_precision('auto', cpu=True)\n"
        "rank = dist.get_rank()\n"
        "json.dump([chosen, record], open(f'auto-{rank}.json', 'w'))\n"
    )
    run_two_processes(script)
    first, second = (json.loads((tmp_path / f"auto-{r}.json").read_text()) for r in (0, 1))
    assert first == second and first[1]["decided_by"] == "process 0" and first[1]["measured"]


@pytest.fixture
def fresh_accelerate_state():
    """accelerate keeps one precision per process; start this test's accelerator afresh and
    leave none behind for the next test (accelerate's own tests reset it the same way)."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def test_make_accelerator_resolves_auto_on_the_probe(monkeypatch, fresh_accelerate_state):
    """Without a workload of the caller's, auto times the probe; here bf16 is faster on it."""
    from dfkd.training.setup import make_accelerator

    clock = FakeClock(no=1.0, bf16=0.5)
    monkeypatch.setattr(precision, "probe_workload", lambda: clock.workload)
    with_clock(monkeypatch, clock)
    accelerator = make_accelerator("auto", cpu=True)
    assert clock.calls.count("bf16") == 1 + precision.REPEATS
    assert accelerator.mixed_precision == "bf16"


@pytest.mark.parametrize("with_generator", [True, False])
def test_the_distillation_workload_leaves_its_models_untouched(with_generator):
    from dfkd.models.lenet import lenet5, lenet5_bn
    from dfkd.synthesis.generators import LargeGenerator

    teacher, student = lenet5(10, 1), lenet5_bn(10, 1)
    generator = LargeGenerator(8, 4, 32, 1) if with_generator else None
    models = [m for m in (teacher, student, generator) if m is not None]
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in models]
    work = distillation_workload(
        teacher,
        student,
        batch_size=4,
        channels=1,
        image_size=32,
        kd_steps=2,
        generator=generator,
        nz=8,
    )
    with torch.autocast("cpu", dtype=torch.bfloat16):
        work()
    for model, state in zip(models, before, strict=True):
        assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
        assert all(p.grad is None for p in model.parameters())
