"""CuDFKD plugin: the curricula and loss pieces by hand, whole runs, resume, learning (the rest of
the method contract: tests/test_method_contract.py)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import dfkd_plugin_cudfkd
import pytest
import torch
from dfkd_plugin_cudfkd.curriculum import adversarial_weight, pace, spl_weights
from dfkd_plugin_cudfkd.options import CuDFKDOptions
from dfkd_plugin_cudfkd.synthesizer import CuDFKDSynthesizer
from torch import nn

from dfkd.errors import UsageError
from dfkd.models.lenet import lenet5_bn, lenet5_half
from dfkd.options import build_options
from dfkd.plugins import Plugins
from dfkd.synthesis.losses import js_divergence
from dfkd.testing import (
    KillAfterEpoch,
    LearningContract,
    assert_complete_run,
    assert_same_student,
    assert_same_tensors,
    checkpoint_objects,
    cpu_context,
    make_plugins,
    tiny_run_config,
)
from dfkd.training.datafree import RunConfig, run_datafree

DIST = "dfkd-plugin-cudfkd"


def cudfkd_plugins() -> Plugins:
    return make_plugins((dfkd_plugin_cudfkd, DIST))


def make_synth(teacher: nn.Module | None = None, **options) -> CuDFKDSynthesizer:
    torch.manual_seed(0)
    teacher = (teacher or lenet5_bn(10, 1)).eval().requires_grad_(False)
    ctx = cpu_context(
        teacher,
        lenet5_half(10, 1),
        mean=(0.2,),
        std=(0.3,),
    )
    return CuDFKDSynthesizer(ctx, CuDFKDOptions(**{"batch_size": 6, "nz": 8, "ngf": 4, **options}))


def run_config(weights: dict[str, Path], out: Path, *extra: str) -> RunConfig:
    """One epoch of the smoke preset from the tiny LeNet-5-BN teacher, then ``extra``."""
    teacher = weights["lenet5_bn"]
    overrides = ["epochs=1", *extra]
    return tiny_run_config("cudfkd", "lenet5_bn", teacher, out, overrides, preset="smoke")


class TestLearning(LearningContract):
    method = "cudfkd"
    module = dfkd_plugin_cudfkd
    distribution = DIST
    # The BN-free teacher and no BN prior: on "tiny" a BN teacher's statistics describe mostly
    # noise, and its generator never reaches confident samples in so few steps. T = 1 keeps the
    # entropy term informative for LeNet's small logits; the adversarial weight ramps up from 0
    # (0.25 in the last epoch).
    teacher = "lenet5"
    learn_options = [
        "epochs=4",
        "ep_steps=40",
        "batch_size=64",
        "nz=32",
        "ngf=8",
        "lr=0.05",
        "lr_g=0.003",
        "T=1",
        "lambda_ent=-5",
        "act=0.1",
        "bn=0",
        "adv=0",
        "adv_schedule=linear",
        "grad_adv=0.25",
    ]


def test_options_module_is_torch_free():
    code = (
        "import sys, dfkd_plugin_cudfkd, dfkd_plugin_cudfkd.options; "
        "assert 'torch' not in sys.modules, 'the options module imported torch'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- the self-paced curriculum ---------------------------------------------------------------


def test_pace_grows_linearly_with_the_student_step():
    assert pace(0, 2.0, 1e-4) == 2.0
    assert pace(10_000, 2.0, 1e-4) == pytest.approx(3.0)
    assert pace(100_000, 2.0, 1e-4) == pytest.approx(12.0)  # docs/methods/cudfkd.md's example
    assert pace(100_000, 1.5, 2e-5) == pytest.approx(3.5)


def test_log_weights_by_hand():
    # λ = 2: v = (1 + e^-2) / (1 + e^(ℓ - 2)); ℓ = 0 → 1, ℓ = λ → (1 + e^-2)/2.
    v = spl_weights(torch.tensor([0.0, 2.0, 5.0, 500.0]), 2.0, "log")
    torch.testing.assert_close(v, torch.tensor([1.0, 0.5676676, 0.0538443, 0.0]))


def test_hard_and_soft_weights_by_hand():
    losses = torch.tensor([0.0, 1.0, 2.0, 5.0])
    torch.testing.assert_close(spl_weights(losses, 2.0, "hard"), torch.tensor([1.0, 1.0, 0, 0]))
    torch.testing.assert_close(spl_weights(losses, 2.0, "soft"), torch.tensor([1.0, 0.5, 0, 0]))
    with pytest.raises(ValueError, match="unknown curriculum"):
        spl_weights(losses, 2.0, "linear")


def test_student_loss_weights_each_sample_not_the_batch_mean():
    synth = make_synth(loss="l1", curriculum="hard", lambda_0=2.0, pace=0.0)
    s = torch.zeros(2, 3, requires_grad=True)
    t = torch.tensor([[0.5, 0.5, 0.5], [10.0, 10.0, 10.0]])  # ℓ = 0.5 (easy) and 10 (hard)
    loss, logs = synth.student_loss(s, t, step=0)
    # v = [1, 0]: (1·0.5 + 0·10) / 2. Weighting the batch mean (5.25 > λ) would give 0.
    assert loss.item() == pytest.approx(0.25)
    assert logs["difficulty"] == pytest.approx(0.5) and logs["spl_weight"] == 0.5
    loss.backward()
    # the weights carry no gradient, and the hard sample's loss has weight 0
    torch.testing.assert_close(s.grad, torch.tensor([[-1 / 6] * 3, [0.0] * 3]))

    synth = make_synth(loss="l1", curriculum="log", lambda_0=2.0, pace=0.0)
    loss, _ = synth.student_loss(torch.zeros(2, 3), t, step=0)
    v_easy, v_hard = 0.9282211, 0.0003807  # (1 + e^-2) / (1 + e^(ℓ - 2))
    assert loss.item() == pytest.approx((v_easy * 0.5 + v_hard * 10) / 2, rel=1e-5)
    assert not math.isclose(loss.item(), 0.2224873, rel_tol=1e-3)  # v(mean ℓ)·mean ℓ


def test_student_kl_loss_is_per_sample_kl_times_t_squared_and_the_pace_follows_the_step():
    synth = make_synth(loss="kl", curriculum="hard", T=2.0, lambda_0=1.0, pace=0.5)
    s = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    t = torch.tensor([[2 * math.log(3), 0.0], [0.0, 0.0]])
    # sample 0: p_t = [3/4, 1/4] vs [1/2, 1/2] → KL = 3/4 ln(3/2) + 1/4 ln(1/2), ×T² = 4.
    kl0 = 4 * (0.75 * math.log(1.5) + 0.25 * math.log(0.5))
    loss, logs = synth.student_loss(s, t, step=0)  # λ = 1 > kl0 ≈ 0.52: both count
    assert loss.item() == pytest.approx(kl0 / 2, rel=1e-5)
    assert logs["lambda"] == 1.0
    loss, logs = synth.student_loss(s, t, step=4)  # λ = 1 + 0.5·4 = 3
    assert logs["lambda"] == 3.0


def test_no_easy_sample_gives_zero_loss_and_zero_difficulty():
    synth = make_synth(loss="l1", curriculum="hard", lambda_0=0.1, pace=0.0)
    loss, logs = synth.student_loss(torch.zeros(2, 3), torch.ones(2, 3), step=0)
    assert loss.item() == 0.0 and logs["difficulty"] == 0.0


# --- the adversarial term and its schedule -----------------------------------------------------


def test_adversarial_weight_ramp_before_inside_and_after_the_window():
    # 20 epochs: e_b = ⌊0.25·20⌋ = 5, e_e = ⌊0.75·20⌋ = 15.
    def ramp(epoch: int, schedule: str = "linear") -> float:
        return adversarial_weight(epoch, 20, 0.5, 0.1, 0.25, 0.75, schedule)

    assert [ramp(e) for e in (0, 4, 5)] == [0.5, 0.5, 0.5]
    assert [ramp(e) for e in (6, 10, 14)] == pytest.approx([0.6, 1.0, 1.4])
    assert [ramp(e) for e in (15, 19, 40)] == pytest.approx([1.5, 1.5, 1.5])
    assert {ramp(e, "constant") for e in range(20)} == {0.5}
    # the window edges are floored: 10 epochs → e_b = 2, e_e = 7
    assert adversarial_weight(7, 10, 0.0, 1.0, 0.25, 0.75, "linear") == 5.0
    with pytest.raises(ValueError, match="unknown adversarial schedule"):
        adversarial_weight(0, 10, 0.0, 1.0, 0.25, 0.75, "cosine")


def test_end_epoch_sets_the_generators_adversarial_weight():
    synth = make_synth(
        adv=0.0, grad_adv=0.5, adv_schedule="linear", epochs=4, begin_fraction=0.0, end_fraction=1.0
    )
    assert "adv" not in synth.weights  # no student pass while the weight is 0
    assert synth.end_epoch(0) == {"adv": 0.0} and "adv" not in synth.weights
    assert synth.end_epoch(2) == {"adv": 1.0} and synth.weights["adv"] == 1.0
    logs = synth.synthesize().logs
    assert "g_adv" in logs


def test_mask_keeps_only_samples_the_student_still_agrees_on():
    s = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    t = torch.tensor([[3.0, 0.0], [3.0, 0.0]])  # sample 0 agrees, sample 1 does not

    def kl_t3(s_row: list[float], t_row: list[float]) -> float:
        def softmax(row: list[float]) -> list[float]:
            e = [math.exp(v / 3) for v in row]
            return [v / sum(e) for v in e]

        pt, ps = softmax(t_row), softmax(s_row)
        return 9 * sum(a * math.log(a / b) for a, b in zip(pt, ps, strict=True))

    kl0, kl1 = kl_t3([2.0, 0.0], [3.0, 0.0]), kl_t3([0.0, 2.0], [3.0, 0.0])
    masked = make_synth(adv_mask=True).adversarial(s, t)
    unmasked = make_synth(adv_mask=False).adversarial(s, t)
    assert masked.item() == pytest.approx(-kl0 / 2, rel=1e-5)
    assert unmasked.item() == pytest.approx(-(kl0 + kl1) / 2, rel=1e-5)
    js = make_synth(adv_type="js").adversarial(s, t)
    assert js.item() == pytest.approx(1 - js_divergence(s, t, T=3.0).item())


# --- the generator step ------------------------------------------------------------------------


class _FixedTeacher(nn.Module):
    """Logits that do not depend on the image, so the entropy term can be worked out by hand."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, x: torch.Tensor, return_features: bool = False):
        out = self.logits + 0 * x.mean()
        return (out, out) if return_features else out


def test_entropy_term_is_taken_at_the_kd_temperature():
    teacher = _FixedTeacher(torch.tensor([[2 * math.log(3), 0.0], [0.0, 0.0]]))
    synth = make_synth(teacher, batch_size=2, T=2.0, bn=0.0, adv=0.0)
    terms = synth.generator_terms(synth._generate(2))
    # T = 2: p = [3/4, 1/4] and [1/2, 1/2], p̄ = [5/8, 3/8] (at T = 1 it would be [7/10, 3/10])
    h = -(5 / 8 * math.log(5 / 8) + 3 / 8 * math.log(3 / 8))
    assert terms["ent"].item() == pytest.approx(h, rel=1e-6)
    assert synth.weights == {"oh": 1.0, "ent": -20.0}


def test_generator_loss_maximises_entropy_and_initialises_dcgan_style():
    synth = make_synth()
    assert synth.weights == {"oh": 1.0, "bn": 1.0, "adv": 0.5, "ent": -20.0}
    linear = synth.generator.l1[0]
    assert linear.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert linear.bias.abs().sum() == 0
    bn_weights = torch.cat(
        [m.weight for m in synth.generator.modules() if isinstance(m, nn.BatchNorm2d)]
    )
    assert 0 < (bn_weights - 1).abs().max() < 0.15
    opt = synth.optimizer.param_groups[0]
    assert opt["betas"] == (0.9, 0.99) and opt["lr"] == 1e-3
    logs = synth.synthesize().logs
    expected = -20 * logs["g_ent"] + logs["g_oh"] + logs["g_bn"] + 0.5 * logs["g_adv"]
    assert logs["loss_g"] == pytest.approx(expected, rel=1e-5)


def test_state_round_trip_restores_generator_optimiser_and_adv_weight():
    synth = make_synth(
        adv=0.0, grad_adv=0.5, adv_schedule="linear", epochs=4, begin_fraction=0.0, end_fraction=1.0
    )
    synth.end_epoch(3)
    synth.synthesize()
    state = synth.state_dict()
    assert state["adv"] == 1.5
    other = make_synth(adv=0.0)
    assert not torch.equal(other.generator.l1[0].weight, synth.generator.l1[0].weight)
    other.load_state_dict(state)
    assert other.adv == 1.5 and other.weights["adv"] == 1.5
    for a, b in zip(
        synth.generator.state_dict().values(), other.generator.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert other.optimizer.state_dict()["state"].keys() == state["optimizer"]["state"].keys()


def test_rejects_a_window_that_ends_before_it_begins():
    with pytest.raises(UsageError, match="end_fraction"):
        build_options(CuDFKDOptions, {}, ["begin_fraction=0.6", "end_fraction=0.4"])


# --- whole runs --------------------------------------------------------------------------------


def test_one_epoch_writes_a_complete_run(tiny_teacher_weights, workdir):
    outcome = run_datafree(
        run_config(tiny_teacher_weights, workdir / "run"), plugins=cudfkd_plugins()
    )
    run_dir = workdir / "run"
    assert_complete_run(run_dir)
    state = checkpoint_objects(run_dir)
    assert state["synthesizer"]["adv"] == 0.5
    assert state["counters"]["global_step"] == 4
    row = outcome.last
    assert math.isfinite(row["loss"]) and "top1" in row
    assert {"loss_g", "g_ent", "g_oh", "g_bn", "g_adv", "difficulty", "lambda", "adv"} <= set(row)
    # the pace saw steps 0..3 with α = 2e-5: λ averaged over the epoch is λ₀ + 1.5α
    assert row["lambda"] == pytest.approx(2.0 + 1.5 * 2e-5)


def test_resume_restores_generator_adv_weight_and_pace(tiny_teacher_weights, workdir):
    # The ramp only moves after epoch 2 (index 1), and from adv₀ = 0: the third epoch trains the
    # generator adversarially only if the resumed run got its weight back.
    extra = [
        "epochs=3",
        "adv=0",
        "grad_adv=0.5",
        "adv_schedule=linear",
        "begin_fraction=0",
        "end_fraction=1",
        "pace=0.05",
        "curriculum=hard",
        "lambda_0=0.3",
    ]
    run_datafree(
        run_config(tiny_teacher_weights, workdir / "straight", *extra), plugins=cudfkd_plugins()
    )
    with pytest.raises(KeyboardInterrupt):
        run_datafree(
            run_config(tiny_teacher_weights, workdir / "resumed", *extra),
            reporter=KillAfterEpoch(2),
            plugins=cudfkd_plugins(),
        )
    assert checkpoint_objects(workdir / "resumed")["synthesizer"]["adv"] == 0.5
    run_datafree(None, resume=str(workdir / "resumed"), plugins=cudfkd_plugins())

    assert_same_student(workdir / "straight", workdir / "resumed")
    ga, gb = (checkpoint_objects(workdir / d)["synthesizer"] for d in ("straight", "resumed"))
    assert_same_tensors(ga["generator"], gb["generator"], "generator")


def test_presets_build_valid_options():
    presets = {"cifar10", "cifar10-r34-r18", "fashion-mnist", "default", "smoke"}
    entry = cudfkd_plugins().methods.get("cudfkd")
    assert set(entry.info["presets"]) == presets
    for name in presets:
        build_options(CuDFKDOptions, entry.info["presets"][name])
    r34 = build_options(CuDFKDOptions, entry.info["presets"]["cifar10-r34-r18"])
    assert (r34.batch_size, r34.adv, r34.grad_adv, r34.loss) == (512, 0.0, 0.5, "l1")
