"""Tests of the persistent-generator synthesis that DAFL, ZSKT, DFQ and DFAD share."""

from __future__ import annotations

import copy
import subprocess
import sys
import warnings
from types import SimpleNamespace

import pytest
import torch

from dfkd.errors import UsageError
from dfkd.models.lenet import lenet5, lenet5_bn, lenet5_half
from dfkd.synthesis import losses
from dfkd.synthesis.base import SynthesisContext
from dfkd.synthesis.generative import GenerativeSynthesizer, build_generator
from dfkd.synthesis.generative_options import GenerativeOptions
from dfkd.synthesis.generators import Generator, GeneratorA, LargeGenerator
from dfkd.testing import cpu_context, run_two_processes

MEAN, STD = (0.2,), (0.3,)


def make_ctx(teacher: torch.nn.Module | None = None) -> SynthesisContext:
    torch.manual_seed(0)
    teacher = (teacher or lenet5(10, 1)).eval().requires_grad_(False)
    return cpu_context(
        teacher,
        lenet5_half(10, 1),
        mean=MEAN,
        std=STD,
    )


def small(**weights: float) -> GenerativeOptions:
    return GenerativeOptions(batch_size=6, nz=8, ngf=4, **weights)


def test_options_module_is_torch_free():
    code = (
        "import sys, dfkd.synthesis.generative_options; "
        "assert 'torch' not in sys.modules, 'generative_options imported torch'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("kind", "cls"), [("large", LargeGenerator), ("base", Generator), ("a", GeneratorA)]
)
def test_build_generator_makes_the_named_kind_at_the_teachers_size(kind, cls):
    gen = build_generator(GenerativeOptions(generator=kind, nz=8, ngf=4), channels=1, image_size=32)
    assert type(gen) is cls
    assert gen(torch.randn(2, 8)).shape == (2, 1, 32, 32)
    with pytest.raises(UsageError, match="unknown generator"):
        build_generator(GenerativeOptions(generator="huge"), channels=1, image_size=32)


def test_generator_terms_are_the_shared_losses_on_the_teachers_output():
    ctx = make_ctx()
    synth = GenerativeSynthesizer(ctx, small(oh=1.0, act=0.5, balance=2.0, adv=3.0))
    x = torch.randn(6, 1, 32, 32)
    terms = synth.generator_terms(x)
    t, f = ctx.teacher(x, return_features=True)
    s = ctx.student(x)
    assert set(terms) == {"oh", "act", "balance", "adv"}
    torch.testing.assert_close(terms["oh"], losses.one_hot_ce(t))
    torch.testing.assert_close(terms["act"], -f.abs().mean())
    torch.testing.assert_close(terms["balance"], losses.class_balance(t))
    torch.testing.assert_close(terms["adv"], -losses.kd_kl(s, t, T=1.0))


def test_synthesize_steps_only_the_generator_on_the_weighted_sum(monkeypatch):
    ctx = make_ctx()
    synth = GenerativeSynthesizer(ctx, small(oh=2.0, balance=3.0, adv=1.0))
    fixed = {"oh": torch.tensor(1.5), "balance": torch.tensor(-0.5), "adv": torch.tensor(-2.0)}
    student_before = {k: v.clone() for k, v in ctx.student.state_dict().items()}
    gen_before = [p.clone() for p in synth.generator.parameters()]
    real_terms = synth.generator_terms

    def recorded(x):
        real = real_terms(x)
        return {k: real[k] - real[k].detach() + fixed[k] for k in real}  # values fixed, grads real

    monkeypatch.setattr(synth, "generator_terms", recorded)
    shown = synth.synthesize()
    # 2·1.5 + 3·(−0.5) + 1·(−2) = −0.5
    assert shown.logs["loss_g"] == pytest.approx(-0.5)
    assert shown.logs["g_adv"] == pytest.approx(-2.0)
    assert shown.images.shape == (6, 1, 32, 32)
    assert shown.images.min() >= 0 and shown.images.max() <= 1
    after = synth.generator.parameters()
    assert any(not torch.equal(a, b) for a, b in zip(gen_before, after, strict=True))
    for name, value in ctx.student.state_dict().items():
        assert torch.equal(value, student_before[name])
    assert all(p.grad is None for p in ctx.student.parameters())
    assert not ctx.student.training  # the adversarial step sees the student in eval mode


def test_sample_is_normalised_generator_output_in_eval_mode():
    ctx = make_ctx()
    synth = GenerativeSynthesizer(ctx, small(oh=1.0))
    torch.manual_seed(3)
    x = synth.sample()
    assert not synth.generator.training
    torch.manual_seed(3)
    z = torch.randn(6, 8)
    expected = (synth.generator(z) - MEAN[0]) / STD[0]
    torch.testing.assert_close(x, expected)
    assert x.shape == (6, 1, 32, 32)


def test_generator_a_output_goes_to_the_networks_unnormalised_and_can_sample_in_train_mode():
    class TrainModeSampler(GenerativeSynthesizer):
        sample_in_train_mode = True

    ctx = make_ctx()
    synth = TrainModeSampler(
        ctx, GenerativeOptions(batch_size=64, generator="a", nz=8, ngf=4, adv=1.0)
    )
    x = synth.sample()
    assert synth.generator.training
    # GeneratorA standardises each channel over the batch; a normaliser would shift it by −μ/σ.
    assert abs(x.mean().item()) < 1e-4
    assert abs(x.var(correction=0).item() - 1.0) < 1e-2


def test_bn_term_reads_the_teachers_batchnorm_and_warns_without_it():
    ctx = make_ctx(lenet5_bn(10, 1))
    synth = GenerativeSynthesizer(ctx, small(bn=1.0))
    x = torch.randn(6, 1, 32, 32)
    terms = synth.generator_terms(x)
    torch.testing.assert_close(terms["bn"], losses.bn_statistics(synth.bn_hooks))
    assert len(synth.bn_hooks) == 3

    with pytest.warns(UserWarning, match="no BatchNorm"):
        plain = GenerativeSynthesizer(make_ctx(), small(bn=1.0, oh=1.0))
    assert set(plain.weights) == {"oh"}
    with warnings.catch_warnings(), pytest.raises(UsageError, match="nothing is left"):
        warnings.simplefilter("ignore")
        GenerativeSynthesizer(make_ctx(), small(bn=1.0))


def test_refuses_options_that_cannot_train_a_generator():
    with pytest.raises(UsageError, match="every generator loss weight"):
        GenerativeSynthesizer(make_ctx(), small())
    with pytest.raises(UsageError, match="g_steps"):
        GenerativeSynthesizer(make_ctx(), GenerativeOptions(g_steps=0, oh=1.0))


def test_state_dict_round_trip_continues_identically():
    ctx = make_ctx()
    synth = GenerativeSynthesizer(ctx, small(oh=1.0, balance=1.0))
    synth.synthesize()
    state = copy.deepcopy(synth.state_dict())  # live tensors: the next step would change them
    rng = torch.get_rng_state()
    synth.synthesize()
    after = synth.sample()

    other = GenerativeSynthesizer(make_ctx(), small(oh=1.0, balance=1.0))
    other.load_state_dict(state)
    torch.set_rng_state(rng)
    other.synthesize()
    torch.testing.assert_close(other.sample(), after)


class BF16Accelerator:
    """What a generative synthesizer asks of a one-process accelerator: its autocast context."""

    num_processes = 1

    def autocast(self):
        return torch.autocast("cpu", dtype=torch.bfloat16)


def test_generator_runs_under_mixed_precision_and_hands_on_float32():
    ctx = make_ctx()
    ctx.accelerator = BF16Accelerator()
    synth = GenerativeSynthesizer(ctx, small(oh=1.0))
    seen = []
    first = next(m for m in synth.generator.modules() if isinstance(m, torch.nn.Linear))
    first.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    x = synth.sample()
    assert seen == [torch.bfloat16]
    assert x.dtype == torch.float32


def test_each_process_gets_its_own_pool_shard(tmp_path):
    ctx = make_ctx()
    ctx.run_dir = tmp_path
    assert ctx.image_pool().shard == 0
    ctx.accelerator = SimpleNamespace(process_index=3)
    pool = ctx.image_pool()
    pool.add(torch.zeros(1, 1, 2, 2))
    assert pool.shard == 3 and (tmp_path / "images" / "images-r3-00000.safetensors").exists()


def test_schedule_g_decays_the_generators_rate_with_the_students_and_resumes():
    options = small(oh=1.0, lr_g=1.0, schedule="multistep", milestones=(1,), schedule_g=True)
    synth = GenerativeSynthesizer(make_ctx(), options)
    synth.synthesize()
    assert synth.end_epoch(0) == {"lr_g": pytest.approx(0.1)}

    other = GenerativeSynthesizer(make_ctx(), options)
    other.load_state_dict(copy.deepcopy(synth.state_dict()))
    assert other.optimizer.param_groups[0]["lr"] == pytest.approx(0.1)
    assert other.scheduler.last_epoch == 1


def test_without_schedule_g_the_generators_rate_stays_at_lr_g():
    synth = GenerativeSynthesizer(make_ctx(), small(oh=1.0, lr_g=1.0, schedule="multistep"))
    synth.synthesize()
    assert synth.end_epoch(0) == {} and "scheduler" not in synth.state_dict()
    assert synth.optimizer.param_groups[0]["lr"] == 1.0


def test_g_grad_clip_bounds_the_generators_step_and_grad_clip_does_not():
    def gradient_norm(**options) -> float:
        synth = GenerativeSynthesizer(make_ctx(), small(oh=1.0, **options))
        synth.synthesize()  # the gradients of its (one) step stay on the parameters
        grads = [p.grad.flatten() for p in synth.generator.parameters() if p.grad is not None]
        return torch.cat(grads).norm().item()

    assert gradient_norm(g_grad_clip=1e-3) <= 1e-3 * 1.01
    assert gradient_norm() > 1e-2
    assert gradient_norm(grad_clip=1e-3) > 1e-2  # the student's clipping, not the generator's


@pytest.mark.slow
def test_processes_of_a_run_share_one_generator(tmp_path):
    script = tmp_path / "share.py"
    script.write_text(
        "import torch\n"
        "from dfkd.models.lenet import lenet5_bn, lenet5_half\n"
        "from dfkd.synthesis.base import SynthesisContext\n"
        "from dfkd.synthesis.generative import GenerativeSynthesizer\n"
        "from dfkd.synthesis.generative_options import GenerativeOptions\n"
        "from dfkd.training.setup import make_accelerator, seed_everything\n"
        "acc = make_accelerator()\n"
        "seed_everything(0, acc.process_index)  # as a run does: each process its own stream\n"
        "ctx = SynthesisContext(teacher=lenet5_bn(10, 1).eval().requires_grad_(False),\n"
        "    student=lenet5_half(10, 1), num_classes=10, channels=1, image_size=32,\n"
        "    mean=(0.2,), std=(0.3,), device=torch.device('cpu'), accelerator=acc)\n"
        "opts = GenerativeOptions(batch_size=6, nz=8, ngf=4, oh=1.0, bn=1.0, adv=1.0)\n"
        "synth = GenerativeSynthesizer(ctx, opts)\n"
        "for _ in range(3):\n"
        "    synth.synthesize()\n"
        "    batch = synth.sample()\n"
        "w = sum(t.double().sum().item() for t in synth.generator.state_dict().values())\n"
        "open(f'gen-{acc.process_index}.txt', 'w').write(f'{w:.10f} {batch.sum().item():.6f}')\n"
    )
    run_two_processes(script)
    (weights0, batch0), (weights1, batch1) = (
        (tmp_path / f"gen-{rank}.txt").read_text().split() for rank in (0, 1)
    )
    assert weights0 == weights1  # one generator, stepped on the mean of both processes' gradients
    assert batch0 != batch1  # fed by each process's own latents


def test_generator_b_holds_the_reference_parameter_names():
    """DFAD's reference GeneratorB (Flatten + Linear in `project`, then `main`) loads as it is."""
    from dfkd.synthesis.generators import GeneratorB

    reference = ["project.1.weight", "project.1.bias"]
    reference += [f"main.0.{k}" for k in ("weight", "bias", "running_mean", "running_var")]
    for i in (1, 4, 7, 10):  # ConvTranspose2d, then BatchNorm2d, then LeakyReLU
        reference += [f"main.{i}.weight"]
        stats = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
        reference += [f"main.{i + 1}.{k}" for k in stats]
    reference += ["main.0.num_batches_tracked", "main.13.weight", "main.13.bias"]
    assert sorted(GeneratorB(nz=8, ngf=4, img_size=32).state_dict()) == sorted(reference)
