"""DeepInversion as a data-free method: each loss term, the kept iterate, the pool on resume,
and learning (the rest of the method contract: tests/test_method_contract.py)."""

from __future__ import annotations

import warnings
from pathlib import Path

import dfkd_plugin_deepinv
import pytest
import torch
from dfkd_plugin_deepinv.options import DeepInvOptions
from dfkd_plugin_deepinv.synthesizer import DeepInvSynthesizer
from safetensors.torch import load_file
from torch import nn

from dfkd.data import open_dataset
from dfkd.options import build_options
from dfkd.synthesis.base import SynthesisContext
from dfkd.testing import LearningContract, assert_complete_run, make_plugins, tiny_run_config
from dfkd.training.datafree import run_datafree
from dfkd.training.setup import build, load_teacher

PLUGIN = (dfkd_plugin_deepinv, "dfkd-plugin-deepinv")


class TestLearning(LearningContract):
    method = "deepinv"
    module = dfkd_plugin_deepinv
    distribution = "dfkd-plugin-deepinv"
    teacher = "lenet5_bn"
    learn_options = [
        "epochs=3",
        "ep_steps=30",
        "kd_steps=10",
        "g_steps=30",
        "batch_size=32",
        "lr=0.05",
    ]
    learn_top1 = 50.0


@pytest.fixture(scope="module")
def teacher_bn(tiny_teacher_weights: dict[str, Path]) -> Path:
    """The tiny LeNet-5-BN teacher's last-epoch weights.

    The fixture's file holds the best epoch, the first to reach 100 %, whose outputs are nearly
    uniform (mean top probability 0.14): far too soft a target to distil in a few steps. The
    scratch run keeps its last (confident) epoch beside it.
    """
    best = tiny_teacher_weights["lenet5_bn"]
    last = best.with_name("model.safetensors")
    return last if last.exists() else best


def tiny_run(out: Path, weights: Path, teacher: str = "lenet5_bn"):
    """One epoch of the smoke preset."""
    return tiny_run_config("deepinv", teacher, weights, out, ["epochs=1"], preset="smoke")


def make_synthesizer(weights: Path, **options: object) -> DeepInvSynthesizer:
    """A synthesizer over the tiny teacher, with no run directory (an in-memory pool)."""
    plugins = make_plugins()
    source = open_dataset("tiny", plugins=plugins)
    teacher, _, _ = load_teacher("lenet5_bn", source, weights, plugins)
    student, _ = build("lenet5_half", source, plugins)
    ctx = SynthesisContext(
        teacher, student, 10, 1, 32, source.mean, source.std, torch.device("cpu")
    )
    overrides = [f"{k}={v}" for k, v in options.items()]
    return DeepInvSynthesizer(ctx, build_options(DeepInvOptions, {}, overrides))


def test_one_epoch_writes_a_complete_run(workdir, teacher_bn):
    outcome = run_datafree(tiny_run(workdir / "run", teacher_bn), plugins=make_plugins(PLUGIN))
    run = workdir / "run"
    assert_complete_run(run)
    # ep_steps // kd_steps = 2 synthesis rounds of 8 images, each one chunk of the pool.
    chunks = sorted((run / "images").glob("images-*.safetensors"))
    assert len(chunks) == 2
    assert load_file(str(chunks[0]))["images"].shape == (8, 1, 32, 32)
    assert outcome.extras["images"] == run / "images"
    assert "loss_bn" in outcome.last and "loss_adv" in outcome.last


def test_each_loss_term_matches_a_hand_computation():
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 2, 1)
    bn = nn.BatchNorm2d(2)
    bn.running_mean.copy_(torch.tensor([0.5, -1.0]))
    bn.running_var.copy_(torch.tensor([2.0, 0.25]))
    teacher = nn.Sequential(conv, bn, nn.Flatten(), nn.Linear(2 * 4 * 4, 3)).eval()
    teacher.requires_grad_(False)
    student = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()
    ctx = SynthesisContext(teacher, student, 3, 1, 4, (0.5,), (0.5,), torch.device("cpu"))
    weights = {"bn": 2.0, "oh": 3.0, "adv": 5.0, "tv": 7.0, "l2": 11.0}
    overrides = [f"{k}={v}" for k, v in weights.items()] + ["jitter=0", "flip=false"]
    synth = DeepInvSynthesizer(ctx, build_options(DeepInvOptions, {}, overrides))
    x = torch.randn(2, 1, 4, 4)
    y = torch.tensor([2, 0])
    terms = synth.losses(x, y)

    t, s = teacher(x), student(x)
    h = conv(x)
    mean = h.mean(dim=(0, 2, 3))
    var = ((h - mean.view(1, -1, 1, 1)) ** 2).mean(dim=(0, 2, 3))
    r = ((bn.running_var - var) ** 2).sum().sqrt() + ((bn.running_mean - mean) ** 2).sum().sqrt()
    ce = -(t.log_softmax(1)[[0, 1], [2, 0]]).mean()
    p, q = (s / 3).softmax(1), (t / 3).softmax(1)
    m = ((p + q) / 2).clamp(0.01, 0.99)
    p, q = p.clamp(0.01, 0.99), q.clamp(0.01, 0.99)
    js = 0.5 * (m * (m.log() - p.log())).sum() / 2 + 0.5 * (m * (m.log() - q.log())).sum() / 2
    img = x[:, 0]
    tv = (
        (img[:, :, :-1] - img[:, :, 1:]).abs().mean()
        + (img[:, :-1, :] - img[:, 1:, :]).abs().mean()
        + (img[:, 1:, :-1] - img[:, :-1, 1:]).abs().mean()
        + (img[:, :-1, :-1] - img[:, 1:, 1:]).abs().mean()
    )
    l2 = (x**2).sum().sqrt()
    expected = {"bn": r, "oh": ce, "adv": -js, "tv": tv, "l2": l2}
    for name, value in expected.items():
        torch.testing.assert_close(terms[name], value, rtol=1e-5, atol=1e-6, msg=name)
    total = sum(weights[k] * v for k, v in expected.items())
    torch.testing.assert_close(terms["total"], total, rtol=1e-5, atol=1e-5)


def test_the_kept_batch_is_the_lowest_loss_iterate(teacher_bn):
    # A large pixel step makes the loss jump about, so the best iterate is not the last one.
    synth = make_synthesizer(teacher_bn, g_steps=12, lr_g=3.0, synthesis_batch_size=6)
    seen: list[tuple[float, torch.Tensor]] = []
    losses = synth.losses

    def spy(x: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        terms = losses(x, targets)
        seen.append((terms["total"].item(), x.detach().clone()))
        return terms

    synth.losses = spy
    shown = synth.synthesize()
    best = min(range(len(seen)), key=lambda i: seen[i][0])
    assert best != len(seen) - 1, "choose a setting whose last iterate is not its best"
    assert shown.logs["loss_g"] == seen[best][0]
    torch.testing.assert_close(shown.images, synth.ctx.denormalize(seen[best][1]))
    assert not torch.allclose(shown.images, synth.ctx.denormalize(seen[-1][1]))
    kept = synth.pool.images.float() / 255
    torch.testing.assert_close(kept, shown.images, atol=0.5 / 255 + 1e-6, rtol=0)


def test_keep_best_false_keeps_the_final_iterate_as_the_reference_does(teacher_bn):
    synth = make_synthesizer(
        teacher_bn, g_steps=5, lr_g=3.0, synthesis_batch_size=4, keep_best=False
    )
    steps: list[torch.Tensor] = []
    step = torch.optim.Adam.step

    def record(self, *args, **kwargs):
        out = step(self, *args, **kwargs)
        steps.append(self.param_groups[0]["params"][0].detach().clone())
        return out

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.optim.Adam, "step", record)
        shown = synth.synthesize()
    final = synth.ctx.denormalize(steps[-1])  # after the last step, clamped to the pixel range
    torch.testing.assert_close(shown.images, final)


def test_targets_are_sorted_and_pixels_are_clamped_after_each_step(teacher_bn):
    synth = make_synthesizer(teacher_bn, g_steps=4, lr_g=5.0, synthesis_batch_size=16)
    seen: list[torch.Tensor] = []
    losses = synth.losses

    def spy(x: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        seen.append(x.detach().clone())
        return losses(x, targets)

    synth.losses = spy
    synth.synthesize()
    labels = synth.pool.labels
    assert torch.equal(labels, labels.sort().values)
    low, high = (0 - 0.2) / 0.3, (1 - 0.2) / 0.3  # tiny's mean 0.2, std 0.3
    assert seen[0].min() < low and seen[0].max() > high  # the N(0, I) start is not clamped
    for x in seen[1:]:
        assert x.min() >= low - 1e-6 and x.max() <= high + 1e-6


def test_sample_draws_augmented_batches_from_the_whole_pool(teacher_bn):
    synth = make_synthesizer(teacher_bn, g_steps=1, synthesis_batch_size=4, batch_size=64)
    for _ in range(3):
        synth.synthesize()
    assert len(synth.pool) == 12
    pool = synth.ctx.normalize(synth.pool.images.float() / 255)
    batch = synth.sample()
    assert batch.shape == (64, 1, 32, 32)
    # Crop and flip move pixels, so most drawn images are not verbatim pool images.
    verbatim = sum(bool((pool == image).all(dim=(1, 2, 3)).any()) for image in batch)
    assert verbatim < 32
    plain = make_synthesizer(teacher_bn, g_steps=1, synthesis_batch_size=4, augment=False)
    plain.synthesize()
    pool = plain.ctx.normalize(plain.pool.images.float() / 255)
    assert all(bool((pool == image).all(dim=(1, 2, 3)).any()) for image in plain.sample())


def test_a_teacher_without_batchnorm_is_warned_about(workdir, tiny_teacher_weights):
    with pytest.warns(UserWarning, match="no BatchNorm"):
        run_datafree(
            tiny_run(workdir / "run", tiny_teacher_weights["lenet5"], "lenet5"),
            plugins=make_plugins(PLUGIN),
        )


def test_a_batchnorm_teacher_is_not_warned_about(teacher_bn):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_synthesizer(teacher_bn)


def test_resume_reloads_the_pool_from_its_chunks(teacher_bn, tmp_path):
    plugins = make_plugins()
    source = open_dataset("tiny", plugins=plugins)
    teacher, _, _ = load_teacher("lenet5_bn", source, teacher_bn, plugins)
    student, _ = build("lenet5_half", source, plugins)

    def fresh() -> DeepInvSynthesizer:
        ctx = SynthesisContext(
            teacher,
            student,
            10,
            1,
            32,
            source.mean,
            source.std,
            torch.device("cpu"),
            None,
            tmp_path,
        )
        options = build_options(DeepInvOptions, {}, ["g_steps=2", "synthesis_batch_size=4"])
        return DeepInvSynthesizer(ctx, options)

    first = fresh()
    first.synthesize()
    state = first.state_dict()
    first.synthesize()  # written after the checkpoint: a resumed run must drop it
    again = fresh()
    again.load_state_dict(state)
    assert len(again.pool) == 4
    assert torch.equal(again.pool.images, first.pool.images[:4])
    assert len(list((tmp_path / "images").glob("images-*"))) == 1
    assert torch.equal(again.rng.get_state(), state["rng"])


def test_presets_name_only_known_options():
    for name, preset in dfkd_plugin_deepinv.PRESETS.items():
        options = build_options(DeepInvOptions, preset)
        assert options.syn_batch == options.batch_size, name
