"""Tests of the shared synthesis building blocks against hand-computed values."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from dfkd.data.folder import ImageFolderSource
from dfkd.errors import DfkdError
from dfkd.synthesis import augment, losses
from dfkd.synthesis.bn_hooks import (
    BNStatsHook,
    InstanceMeanHook,
    attach_bn_hooks,
    has_batchnorm,
)
from dfkd.synthesis.generators import (
    Generator,
    GeneratorA,
    LargeGenerator,
    reset_parameters_dcgan,
)
from dfkd.synthesis.grid import save_grid
from dfkd.synthesis.pool import ImagePool


def close(actual: torch.Tensor, expected: float | list[float] | torch.Tensor) -> None:
    torch.testing.assert_close(actual, torch.as_tensor(expected), rtol=1e-5, atol=1e-6)


# --- generators ------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [Generator, LargeGenerator, GeneratorA])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("img_size", [28, 32])
def test_generator_output_shape_and_range(cls, channels, img_size):
    torch.manual_seed(0)
    gen = cls(nz=8, ngf=4, img_size=img_size, channels=channels)
    out = gen(torch.randn(6, 8))
    assert out.shape == (6, channels, img_size, img_size)
    if cls is GeneratorA:
        # Tanh + BatchNorm2d(affine=False) in train mode: each channel standardised over the batch.
        var, mean = torch.var_mean(out, dim=(0, 2, 3), correction=0)
        torch.testing.assert_close(mean, torch.zeros(channels), atol=1e-5, rtol=0)
        torch.testing.assert_close(var, torch.ones(channels), atol=1e-3, rtol=0)
    else:
        assert out.min() >= 0 and out.max() <= 1
    out.mean().backward()
    assert gen.l1[0].weight.grad.abs().sum() > 0


def test_generator_matches_the_reference_layout():
    # CMI's generator at nz=256, ngf=64, 32 px (docs/methods/framework.md#generators), parameters
    # counted by hand:
    # Linear 256·8192 + 8192, BN(128), conv 128·128·9, BN(128), conv 128·64·9, BN(64),
    # conv 64·3·9 + 3.
    expected = 256 * 8192 + 8192 + 256 + 128 * 128 * 9 + 256 + 128 * 64 * 9 + 128 + 64 * 3 * 9 + 3
    assert sum(p.numel() for p in Generator().parameters()) == expected
    large = LargeGenerator(nz=512)
    assert large.l1[0].out_features == 256 * 8 * 8
    assert large.conv_blocks[2].in_channels == 256 and large.conv_blocks[2].out_channels == 128
    assert large.conv_blocks[2].bias is None
    dfad = GeneratorA()
    assert dfad.conv_blocks[2].bias is not None and dfad.conv_blocks[6].bias is not None
    assert isinstance(dfad.conv_blocks[-2], nn.Tanh) and not dfad.conv_blocks[-1].affine
    with pytest.raises(ValueError, match="divisible by 4"):
        Generator(img_size=30)


def test_generator_accepts_4d_latents():
    gen = Generator(nz=8, ngf=4, img_size=8).eval()
    z = torch.randn(3, 8)
    torch.testing.assert_close(gen(z.view(3, 8, 1, 1)), gen(z))


@pytest.mark.parametrize("cls", [Generator, GeneratorA])
def test_generator_runs_channels_last_and_matches_the_plain_layout(cls):
    """The speed-up layout must not change the numbers nor leak out of the generator."""
    gen = cls(nz=8, ngf=4, img_size=8, channels=3)
    layouts = []
    gen.conv_blocks[1].register_forward_pre_hook(
        lambda _m, args: layouts.append(args[0].is_contiguous(memory_format=torch.channels_last))
    )
    z = torch.randn(5, 8)
    out = gen(z)
    plain = gen.l1(z).view(5, gen.start_channels, gen.init_size, gen.init_size)
    assert layouts == [True]
    assert out.is_contiguous()
    torch.testing.assert_close(out, gen.conv_blocks(plain), atol=1e-5, rtol=1e-5)


def test_reset_parameters_dcgan_statistics_and_seed():
    model = nn.Sequential(
        nn.Linear(100, 400),
        nn.Conv2d(16, 16, 5),
        nn.BatchNorm2d(4000),
        nn.BatchNorm2d(3, affine=False),
    )
    for p in model.parameters():
        nn.init.constant_(p, 5.0)
    reset_parameters_dcgan(model, torch.Generator().manual_seed(1))
    linear, conv, bn, _ = model
    for weight in (linear.weight, conv.weight):
        assert abs(weight.mean().item()) < 2e-3
        assert abs(weight.std().item() - 0.02) < 1e-3
    assert abs(bn.weight.mean().item() - 1.0) < 2e-3
    assert abs(bn.weight.std().item() - 0.02) < 2e-3
    for bias in (linear.bias, conv.bias, bn.bias):
        assert torch.count_nonzero(bias) == 0
    again = nn.Sequential(
        nn.Linear(100, 400),
        nn.Conv2d(16, 16, 5),
        nn.BatchNorm2d(4000),
        nn.BatchNorm2d(3, affine=False),
    )
    reset_parameters_dcgan(again, torch.Generator().manual_seed(1))
    torch.testing.assert_close(again[0].weight, linear.weight)


# --- BatchNorm hooks -------------------------------------------------------------------------


def bn_with_running_stats() -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(2).eval()
    bn.running_mean.copy_(torch.tensor([1.0, 6.0]))
    bn.running_var.copy_(torch.tensor([11.0, 8.0]))
    return bn


# Channel 0 holds 1, 3, 5, 7 (μ = 4, biased σ² = 5); channel 1 holds 2 everywhere (μ = 2, σ² = 0).
FIRST_BATCH = torch.tensor([[[[1.0, 3.0]], [[2.0, 2.0]]], [[[5.0, 7.0]], [[2.0, 2.0]]]])
# Channel 0 holds 14 everywhere, channel 1 holds 2: μ = (14, 2), σ² = (0, 0).
SECOND_BATCH = torch.tensor([[[[14.0, 14.0]], [[2.0, 2.0]]], [[[14.0, 14.0]], [[2.0, 2.0]]]])


def test_bn_stats_hook_matches_hand_computed_statistics():
    bn = bn_with_running_stats()
    hook = BNStatsHook(bn)
    x = FIRST_BATCH.clone().requires_grad_()
    bn(x)
    # ‖(11, 8) − (5, 0)‖ + ‖(1, 6) − (4, 2)‖ = ‖(6, 8)‖ + ‖(−3, 4)‖ = 10 + 5.
    close(hook.loss, 15.0)
    hook.loss.backward()
    assert x.grad.abs().sum() > 0
    with torch.no_grad():  # a student step: nothing to synthesize, nothing computed
        bn(SECOND_BATCH)
    assert hook.loss is None
    with pytest.raises(RuntimeError, match="no statistics"):
        losses.bn_statistics([hook])
    bn(FIRST_BATCH)
    close(hook.loss, 15.0)
    hook.remove()
    bn(SECOND_BATCH)
    close(hook.loss, 15.0)


def test_bn_stats_hook_momentum_blends_with_ema_and_resumes():
    bn = bn_with_running_stats()
    hook = BNStatsHook(bn, momentum=0.9)
    bn(FIRST_BATCH)
    close(hook.loss, 15.0)  # no EMA yet: the plain loss
    hook.update_ema()  # the first update stores the batch statistics
    close(hook.ema_mean, [4.0, 2.0])
    close(hook.ema_var, [5.0, 0.0])
    bn(SECOND_BATCH)
    # Blended μ = 0.1·(14, 2) + 0.9·(4, 2) = (5, 2); σ² = 0.1·(0, 0) + 0.9·(5, 0) = (4.5, 0).
    expected = math.hypot(11 - 4.5, 8 - 0) + math.hypot(1 - 5, 6 - 2)
    close(hook.loss, expected)
    hook.update_ema()  # μ̄ ← 0.9·μ̄ + 0.1·μ
    close(hook.ema_mean, [5.0, 2.0])
    close(hook.ema_var, [4.5, 0.0])

    resumed = BNStatsHook(bn_with_running_stats(), momentum=0.9)
    resumed.load_state_dict(hook.state_dict())
    bn(FIRST_BATCH)
    resumed.module(FIRST_BATCH)
    torch.testing.assert_close(resumed.loss, hook.loss)
    assert BNStatsHook(bn, momentum=0.9).state_dict() == {}
    with pytest.raises(RuntimeError, match="momentum"):
        BNStatsHook(bn).update_ema()


def test_attach_bn_hooks_and_has_batchnorm():
    model = nn.Sequential(
        nn.Conv2d(1, 2, 1),
        nn.BatchNorm2d(2),
        nn.BatchNorm2d(2, track_running_stats=False),
        nn.Flatten(),
        nn.BatchNorm1d(2),
    ).eval()
    hooks = attach_bn_hooks(model, momentum=0.5)
    assert [h.module for h in hooks] == [model[1], model[4]]
    assert all(h.momentum == 0.5 for h in hooks)
    model(torch.randn(3, 1, 1, 1))
    assert all(h.loss is not None for h in hooks)
    assert has_batchnorm(model)
    assert not has_batchnorm(
        nn.Sequential(
            nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2, affine=False, track_running_stats=False)
        )
    )
    with pytest.raises(ValueError):
        BNStatsHook(nn.Conv2d(1, 1, 1))


def test_instance_mean_hook():
    conv = nn.Identity()
    hook = InstanceMeanHook(conv)
    x = torch.arange(16.0).view(2, 2, 2, 2)
    conv(x)
    close(hook.features, [[1.5, 5.5], [9.5, 13.5]])


# --- losses ----------------------------------------------------------------------------------

# Logits whose softmax at T = 1 is known exactly.
P_T = [[0.5, 0.25, 0.25], [0.25, 0.5, 0.25]]
T_LOGITS = torch.tensor(P_T).log()
S_LOGITS = torch.zeros(2, 3)  # uniform student
KL_0 = 0.5 * math.log(0.5 * 3) + 2 * 0.25 * math.log(0.25 * 3)  # KL(p_t ‖ uniform), both rows


def test_bn_statistics_weights_the_first_layer():
    hooks = [SimpleNamespace(loss=torch.tensor(v)) for v in (1.0, 2.0, 3.0)]
    close(losses.bn_statistics(hooks), 6.0)
    close(losses.bn_statistics(hooks, first_multiplier=10.0), 15.0)
    with pytest.raises(ValueError):
        losses.bn_statistics([])
    with pytest.raises(RuntimeError):
        losses.bn_statistics([SimpleNamespace(loss=None)])


def test_one_hot_ce():
    close(losses.one_hot_ce(T_LOGITS), math.log(2))  # argmax labels 0 and 1, each p = 0.5
    close(losses.one_hot_ce(T_LOGITS, torch.tensor([2, 2])), math.log(4))


def test_entropy_and_class_balance():
    close(losses.entropy(torch.tensor([0.5, 0.5])), math.log(2))
    close(
        losses.entropy(torch.tensor([[1.0, 0.0], [0.25, 0.75]])),
        [0.0, -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))],
    )
    p = torch.tensor([1.0, 0.0], requires_grad=True)
    losses.entropy(p).backward()
    assert torch.isfinite(p.grad).all()
    # p̄ = (0.375, 0.375, 0.25)
    close(losses.class_balance(T_LOGITS), 2 * 0.375 * math.log(0.375) + 0.25 * math.log(0.25))
    # softmax((0, ln 4, 0) / 2) = (1, 2, 1) / 4
    logits = torch.tensor([[0.0, math.log(4), 0.0]])
    close(losses.class_balance(logits, T=2.0), 2 * 0.25 * math.log(0.25) + 0.5 * math.log(0.5))
    # a segmentation teacher's (N, K, H, W) logits: one scalar over every pixel, the two rows
    # of T_LOGITS as the pixels of one image
    pixels = T_LOGITS.T.reshape(1, 3, 1, 2)
    close(losses.class_balance(pixels), losses.class_balance(T_LOGITS))


def test_activation_l1_and_adversarial_l1():
    close(losses.activation_l1(torch.tensor([[1.0, -2.0], [3.0, -4.0]])), -2.5)
    s = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    close(losses.adversarial_l1(s, torch.ones(2, 3)), -1.0)


def test_agreement_mask():
    s = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    t = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 3.0]])
    close(losses.agreement_mask(s, t), [1.0, 0.0])


def test_kd_kl():
    close(losses.kd_kl(S_LOGITS, T_LOGITS), KL_0)
    close(losses.kd_kl(S_LOGITS, T_LOGITS, reduction="none"), [KL_0, KL_0])
    close(losses.kd_kl(S_LOGITS, T_LOGITS.flip(0), reduction="none"), [KL_0, KL_0])
    # Logits 2·log p soften back to p at T = 2; the KL is then scaled by T² = 4.
    close(losses.kd_kl(S_LOGITS, 2 * T_LOGITS, T=2.0), 4 * KL_0)
    close(losses.kd_kl(T_LOGITS, T_LOGITS), 0.0)
    with pytest.raises(ValueError):
        losses.kd_kl(S_LOGITS, T_LOGITS, reduction="sum")


def test_adversarial_kl():
    close(losses.adversarial_kl(S_LOGITS, T_LOGITS), -KL_0)
    close(losses.adversarial_kl(S_LOGITS, T_LOGITS, mask=torch.tensor([1.0, 0.0])), -KL_0 / 2)
    close(losses.adversarial_kl(S_LOGITS, 2 * T_LOGITS, T=2.0), -4 * KL_0)


def kl(m: list[float], p: list[float]) -> float:
    return sum(mi * math.log(mi / pi) for mi, pi in zip(m, p, strict=True))


def test_js_divergence():
    # Logits 3·log p soften back to p at the default T = 3.
    p, q = [0.5, 0.25, 0.25], [0.25, 0.5, 0.25]
    m = [(a + b) / 2 for a, b in zip(p, q, strict=True)]
    s, t = 3 * torch.tensor([p]).log(), 3 * torch.tensor([q]).log()
    close(losses.js_divergence(s, t), 0.5 * kl(m, p) + 0.5 * kl(m, q))
    close(losses.js_divergence(s, s), 0.0)
    # P = (0.995, 0.004, 0.001): M = (P + Q)/2 comes from the unclamped P; then all are clamped.
    p = [0.995, 0.004, 0.001]
    m = [(a + b) / 2 for a, b in zip(p, q, strict=True)]
    p_c, m_c = [min(max(v, 0.01), 0.99) for v in p], [min(max(v, 0.01), 0.99) for v in m]
    s = 3 * torch.tensor([p]).log()
    close(losses.js_divergence(s, t), 0.5 * kl(m_c, p_c) + 0.5 * kl(m_c, q))


def test_js_divergence_of_segmentation_maps_is_a_mean_over_pixels():
    """A map whose every pixel holds the same logits diverges as much as one such image: the
    term does not grow with the image's pixels (it did, 4096-fold at 64 px)."""
    s, t = torch.randn(2, 5, generator=torch.Generator().manual_seed(0)).unbind(0)
    s_map = s[None, :, None, None].expand(3, 5, 16, 16)
    t_map = t[None, :, None, None].expand(3, 5, 16, 16)
    close(losses.js_divergence(s_map, t_map), losses.js_divergence(s[None], t[None]).item())
    pixels = torch.randn(2, 5, 4, 4), torch.randn(2, 5, 4, 4)
    rows = [p.permute(0, 2, 3, 1).reshape(-1, 5) for p in pixels]
    close(losses.js_divergence(*pixels), losses.js_divergence(*rows).item())


def test_total_variation_and_l2_prior():
    x = torch.tensor([[[[1.0, 2.0], [4.0, 8.0]]]])
    # Horizontal |1−2|, |4−8|; vertical |1−4|, |2−8|; diagonals |4−2| and |1−8|.
    close(losses.tv_l1(x), (1 + 4) / 2 + (3 + 6) / 2 + 2 + 7)
    close(losses.tv_l2(x), math.sqrt(1 + 16) + math.sqrt(9 + 36) + 2 + 7)
    close(losses.l2_prior(torch.tensor([[[[3.0, 4.0]]], [[[6.0, 8.0]]]])), (5 + 10) / 2)


def test_losses_are_registered_lazily():
    import dfkd.synthesis.plugin as plugin

    registered = {}
    plugin.register_losses(lambda name, factory, summary: registered.update({name: factory}))
    assert {"kd_kl", "bn_statistics", "adversarial_kl", "js_divergence", "tv_l2"} <= set(registered)
    for name, factory in registered.items():
        module, _, attr = factory.partition(":")
        assert module == "dfkd.synthesis.losses" and callable(getattr(losses, attr)), name
    check = "import sys, dfkd.synthesis, dfkd.synthesis.plugin; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", check], check=True)


# --- augmentation ----------------------------------------------------------------------------


def test_jitter_flip_is_a_seeded_roll_and_flip():
    x = torch.arange(2 * 1 * 5 * 5.0).view(2, 1, 5, 5)
    seen_shifts, seen_flips = set(), set()
    for seed in range(20):
        out = augment.jitter_flip(x, max_shift=2, generator=torch.Generator().manual_seed(seed))
        again = augment.jitter_flip(x, max_shift=2, generator=torch.Generator().manual_seed(seed))
        torch.testing.assert_close(out, again)
        matches = [
            (dy, dx, flip)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            for flip in (False, True)
            if torch.equal(
                out,
                torch.roll(x, (dy, dx), (2, 3)).flip(3)
                if flip
                else torch.roll(x, (dy, dx), (2, 3)),
            )
        ]
        assert len(matches) == 1
        seen_shifts.add(matches[0][:2])
        seen_flips.add(matches[0][2])
    assert len(seen_shifts) > 5 and seen_flips == {False, True}
    assert torch.equal(augment.jitter_flip(x, max_shift=0, flip=False), x)


def test_random_resized_crop():
    x = torch.rand(4, 3, 8, 8, requires_grad=True)
    out = augment.random_resized_crop(x, size=6, generator=torch.Generator().manual_seed(0))
    assert out.shape == (4, 3, 6, 6)
    out.sum().backward()
    assert x.grad.abs().sum() > 0
    # The whole image at aspect 1 is the identity; with flip some samples come back mirrored.
    whole = augment.random_resized_crop(x, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    torch.testing.assert_close(whole, x)
    flipped = augment.random_resized_crop(
        x, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=True, generator=torch.Generator().manual_seed(3)
    )
    mirrored = []
    for f, xi in zip(flipped, x, strict=True):
        assert torch.allclose(f, xi) or torch.allclose(f, xi.flip(-1))
        mirrored.append(not torch.allclose(f, xi))
    assert set(mirrored) == {True, False}
    # Quarter-area crops of identical samples land in different places.
    same = torch.arange(64.0).view(1, 1, 8, 8).expand(2, 1, 8, 8)
    small = augment.random_resized_crop(
        same, scale=(0.25, 0.25), generator=torch.Generator().manual_seed(0)
    )
    assert not torch.allclose(small[0], small[1])


def test_clip_to_pixel_range():
    x = torch.tensor([[[[-5.0, 0.0, 5.0]], [[-5.0, 0.0, 5.0]]]])
    out = augment.clip_to_pixel_range(x, mean=(0.5, 0.0), std=(0.25, 0.5))
    # Channel 0: [−0.5/0.25, 0.5/0.25] = [−2, 2]; channel 1: [0, 2].
    close(out, [[[[-2.0, 0.0, 2.0]], [[0.0, 0.0, 2.0]]]])


# --- image pool ------------------------------------------------------------------------------


def chunk_names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_pool_quantises_grows_and_persists(tmp_path):
    pool = ImagePool(tmp_path)
    pool.add(torch.tensor([0.0, 0.5, 1.0, 0.2]).view(1, 1, 2, 2), torch.tensor([3]))
    assert pool.images.dtype == torch.uint8
    assert pool.images.flatten().tolist() == [0, 128, 255, 51]
    for i in range(5):
        pool.add(torch.full((2, 1, 2, 2), i / 10), torch.tensor([i, i]))
    assert len(pool) == 11
    assert pool.labels.tolist() == [3, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert chunk_names(tmp_path) == [f"images-{i:05d}.safetensors" for i in range(6)]
    chunk = load_file(str(tmp_path / "images-00002.safetensors"))
    assert chunk["images"].dtype == torch.uint8 and chunk["labels"].tolist() == [1, 1]
    assert pool.state_dict() == {"chunks": 6, "size": 11}

    images, labels = pool.sample(7, torch.Generator().manual_seed(0))
    again, _ = pool.sample(7, torch.Generator().manual_seed(0))
    assert images.shape == (7, 1, 2, 2) and torch.equal(images, again)
    assert labels.shape == (7,)

    reloaded = ImagePool(tmp_path)
    reloaded.load_state_dict(pool.state_dict())
    assert torch.equal(reloaded.images, pool.images) and torch.equal(reloaded.labels, pool.labels)


def test_pool_resume_drops_chunks_newer_than_the_checkpoint(tmp_path):
    pool = ImagePool(tmp_path)
    pool.add(torch.zeros(2, 3, 4, 4))
    state = pool.state_dict()
    pool.add(torch.ones(3, 3, 4, 4))  # written after the checkpoint, then the run is killed
    resumed = ImagePool(tmp_path)
    resumed.load_state_dict(state)
    assert len(resumed) == 2 and resumed.labels is None
    assert chunk_names(tmp_path) == ["images-00000.safetensors"]
    resumed.add(torch.full((1, 3, 4, 4), 0.5))
    assert chunk_names(tmp_path) == ["images-00000.safetensors", "images-00001.safetensors"]
    with pytest.raises(ValueError, match="expects"):
        ImagePool(tmp_path).load_state_dict({"chunks": 2, "size": 5})


def test_pool_write_is_atomic(tmp_path, monkeypatch):
    pool = ImagePool(tmp_path)
    pool.add(torch.zeros(1, 1, 2, 2))

    def crash(src, dst):
        raise OSError("killed mid-write")

    monkeypatch.setattr("dfkd.fileio.os.replace", crash)
    with pytest.raises(DfkdError, match="killed"):
        pool.add(torch.ones(1, 1, 2, 2))
    assert chunk_names(tmp_path) == ["images-00000.safetensors"]
    assert len(pool) == 1 and pool.state_dict() == {"chunks": 1, "size": 1}


def test_pool_seed_is_kept_in_memory_only(tmp_path):
    seed = torch.full((4, 1, 2, 2), 7, dtype=torch.uint8)
    pool = ImagePool(tmp_path, seed=seed)
    pool.add(torch.zeros(2, 1, 2, 2))
    assert len(pool) == 6 and pool.images[:4].eq(7).all()
    assert chunk_names(tmp_path) == ["images-00000.safetensors"]
    resumed = ImagePool(tmp_path, seed=seed)
    resumed.load_state_dict(pool.state_dict())
    assert torch.equal(resumed.images, pool.images)
    with pytest.raises(ValueError, match="seed"):
        ImagePool(tmp_path).load_state_dict(pool.state_dict())


def test_pool_refuses_inconsistent_input(tmp_path):
    pool = ImagePool()
    pool.add(torch.zeros(2, 1, 2, 2), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="labelled"):
        pool.add(torch.zeros(2, 1, 2, 2))
    with pytest.raises(ValueError, match="shape"):
        pool.add(torch.zeros(2, 3, 2, 2), torch.tensor([0, 1]))
    with pytest.raises(TypeError):
        pool.add(torch.zeros(2, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="directory"):
        pool.load_state_dict(pool.state_dict())
    with pytest.raises(ValueError, match="empty"):
        ImagePool().sample(1)
    ImagePool(tmp_path).add(torch.zeros(1, 1, 2, 2))
    with pytest.raises(FileExistsError):
        ImagePool(tmp_path).add(torch.zeros(1, 1, 2, 2))


# --- grid ------------------------------------------------------------------------------------


def test_save_grid_writes_a_png_atomically(tmp_path):
    from PIL import Image

    path = tmp_path / "samples.png"
    save_grid(torch.rand(5, 3, 4, 4), path)
    save_grid(torch.rand(5, 3, 4, 4), path)  # replaces the first one
    assert chunk_names(tmp_path) == ["samples.png"]
    with Image.open(path) as image:
        # ⌈√5⌉ = 3 per row, 2 rows; torchvision pads by 2 px around every tile.
        assert image.format == "PNG" and image.size == (3 * 6 + 2, 2 * 6 + 2)
    save_grid(torch.rand(5, 1, 4, 4), path, nrow=5)
    with Image.open(path) as image:
        assert image.size == (5 * 6 + 2, 1 * 6 + 2)


def test_pools_of_several_processes_share_a_directory_without_collisions(tmp_path):
    first, second = ImagePool(tmp_path, shard=0), ImagePool(tmp_path, shard=1)
    first.add(torch.zeros(2, 1, 2, 2))
    second.add(torch.ones(3, 1, 2, 2))
    second.add(torch.ones(1, 1, 2, 2))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "images-00000.safetensors",
        "images-r1-00000.safetensors",
        "images-r1-00001.safetensors",
    ]
    resumed = ImagePool(tmp_path, shard=1)
    resumed.load_state_dict({"chunks": 1, "size": 3})
    assert len(resumed) == 3 and resumed.images.eq(255).all()
    assert [p.name for p in tmp_path.glob("images-r1-*")] == ["images-r1-00000.safetensors"]
    assert (tmp_path / "images-00000.safetensors").exists()
    images, _ = ImageFolderSource(arg=str(tmp_path)).load("train")
    assert len(images) == 5
