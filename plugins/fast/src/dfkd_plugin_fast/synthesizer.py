"""FastDFKD (Fang et al., AAAI 2022) as its reference runs it (docs/methods/fast.md).

A meta-generator is learned across synthesis rounds so that a few inner steps adapt it to a new
batch. Each round clones it, optimises the clone and fresh latent codes for ``g_steps`` steps
against the frozen teacher (momentum BN statistics, one-hot targets, and after warm-up a
decision-adversarial term against the student), and then moves the meta-generator: by the sum of
the clone's gradients (first-order MAML) or towards the clone (REPTILE). The round's lowest-loss
batch joins the image pool, on which the student trains.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from dfkd.api import (
    BestIterate,
    Generator,
    MomentumBNStatistics,
    SynthesisContext,
    SynthesisResult,
    Synthesizer,
    UsageError,
    adversarial_kl,
    agreement_mask,
    one_hot_ce,
    random_crop_flip,
    warn_without_batchnorm,
)
from dfkd_plugin_fast.options import FastOptions

BETAS = (0.5, 0.999)


def accumulate_gradients(meta: nn.Module, fast: nn.Module) -> None:
    """First-order MAML: add each of ``fast``'s parameter gradients to the matching parameter of
    ``meta`` (summed over the inner steps; a missing gradient counts as zero)."""
    for p_meta, p_fast in zip(meta.parameters(), fast.parameters(), strict=True):
        if p_fast.grad is None:
            continue
        if p_meta.grad is None:
            p_meta.grad = p_fast.grad.detach().clone()
        else:
            p_meta.grad.add_(p_fast.grad)


def reptile_gradients(meta: nn.Module, fast: nn.Module, scale: float) -> None:
    """REPTILE: set each meta parameter's gradient to scale·(θ_meta − θ_fast), so a descent step
    moves the meta-generator towards the adapted clone."""
    for p_meta, p_fast in zip(meta.parameters(), fast.parameters(), strict=True):
        p_meta.grad = scale * (p_meta.detach() - p_fast.detach())


@torch.no_grad()
def reset_first_layers(generator: Generator, rng: torch.Generator | None = None) -> None:
    """The reference's reset_l0: the projection Linear and the first BatchNorm get N(0, 0.02)
    weights and zero biases."""
    for module in (generator.l1[0], generator.conv_blocks[0]):
        module.weight.normal_(0.0, 0.02, generator=rng)
        module.bias.zero_()


class FastSynthesizer(Synthesizer):
    """See the module docstring; ``options`` is a ``FastOptions``."""

    uses_pool = True

    def __init__(self, ctx: SynthesisContext, options: FastOptions) -> None:
        super().__init__(ctx, options)
        _check(options)
        warn_without_batchnorm(ctx.teacher, "fast", options.bn)
        # Private streams seeded from the run's seed make the rounds repeatable and resumable
        # on any device (the loop's checkpoint restores only the global CPU generator).
        seeds = torch.randint(2**62, (2,)).tolist()
        self._rng = torch.Generator(device=ctx.device).manual_seed(seeds[0])
        self._cpu_rng = torch.Generator().manual_seed(seeds[1])
        self.generator = Generator(options.nz, options.ngf, ctx.image_size, ctx.channels).to(
            ctx.device
        )
        self.meta_optimizer = torch.optim.Adam(
            self.generator.parameters(), lr=options.lr_g * options.g_steps, betas=BETAS
        )
        self.bn_stats = MomentumBNStatistics(ctx.teacher, options.bn_mmt)
        self.pool = ctx.image_pool()
        self.epoch = 0  # epochs finished, from end_epoch
        self.l0_was_reset = False

    @property
    def adversarial(self) -> bool:
        """The adversarial term is on once the warm-up epochs are over."""
        return bool(self.options.adv) and self.epoch >= self.options.warmup

    def synthesize(self) -> SynthesisResult:
        o, ctx = self.options, self.ctx
        self.student.eval()
        if o.reset_l0 and not self.l0_was_reset and self.epoch >= o.warmup + o.reset_l0_epoch:
            reset_first_layers(self.generator, self._rng)
            self.l0_was_reset = True
        fast = copy.deepcopy(self.generator).train()
        z = torch.randn(o.syn_batch, o.nz, device=ctx.device, generator=self._rng)
        z.requires_grad_()
        targets = (
            torch.randint(ctx.num_classes, (o.syn_batch,), device=ctx.device, generator=self._rng)
            .sort()
            .values
        )
        inner = torch.optim.Adam(
            [{"params": fast.parameters(), "lr": o.lr_g}, {"params": [z], "lr": o.lr_z}],
            betas=BETAS,
        )
        self.meta_optimizer.zero_grad(set_to_none=True)
        trained = [*fast.parameters(), z]
        best = BestIterate()
        for _ in range(o.g_steps):
            with ctx.autocast():
                x = fast(z).float()
            terms = self.losses(x, targets)
            loss = sum(getattr(o, name) * value for name, value in terms.items())
            best.offer(loss.item(), images=x, **{name: v.detach() for name, v in terms.items()})
            inner.zero_grad(set_to_none=True)
            loss.backward(inputs=trained)
            if o.meta == "maml":
                accumulate_gradients(self.generator, fast)
            inner.step()
        if o.meta == "reptile":
            reptile_gradients(self.generator, fast, o.reptile_scale)
        self.meta_optimizer.step()
        self.bn_stats.update()
        images = best["images"]
        self.pool.add(images)
        logs = {f"loss_{name}": best[name].item() for name in terms}
        return SynthesisResult(images, {"loss_g": best.loss, **logs})

    def losses(self, x: Tensor, targets: Tensor) -> dict[str, Tensor]:
        """The terms on the augmented batch: bn (momentum statistics), oh, and adv after warm-up."""
        o, ctx = self.options, self.ctx
        view = ctx.normalize(random_crop_flip(x, o.pad, o.flip, generator=self._rng))
        t = self.teacher_logits(view).float()
        terms = {"bn": self.bn_stats.loss(t), "oh": one_hot_ce(t, targets)}
        if self.adversarial:
            s = ctx.student_logits(view)
            terms["adv"] = adversarial_kl(s, t, T=1.0, mask=agreement_mask(s, t))
        return terms

    def sample(self) -> Tensor:
        """A pool batch with the dataset's train augmentation (padded crop, flip), normalised."""
        images, _ = self.pool.sample(self.options.batch_size, generator=self._cpu_rng)
        x = images.to(self.ctx.device).float().div_(255)
        x = random_crop_flip(x, self.options.pad, self.options.flip, generator=self._rng)
        return self.ctx.normalize(x)

    def end_epoch(self, epoch: int) -> dict[str, float]:
        self.epoch = epoch + 1
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator.state_dict(),
            "meta_optimizer": self.meta_optimizer.state_dict(),
            "bn_stats": self.bn_stats.state_dict(),
            "pool": self.pool.state_dict(),
            "rng": self._rng.get_state(),
            "cpu_rng": self._cpu_rng.get_state(),
            "epoch": self.epoch,
            "l0_was_reset": self.l0_was_reset,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.load_state_dict(state["generator"])
        self.meta_optimizer.load_state_dict(state["meta_optimizer"])
        self.bn_stats.load_state_dict(state["bn_stats"])
        self.pool.load_state_dict(state["pool"])
        self._rng.set_state(state["rng"])
        self._cpu_rng.set_state(state["cpu_rng"])
        self.epoch = int(state["epoch"])
        self.l0_was_reset = bool(state["l0_was_reset"])


def _check(o: FastOptions) -> None:
    """Reject option values that would fail deep inside a run, or silently do nothing."""
    problems = [
        (o.g_steps < 1, f"g_steps must be at least 1, got {o.g_steps}"),
        (not 0 <= o.bn_mmt < 1, f"bn_mmt must be in [0, 1), got {o.bn_mmt}"),
        (o.pad < 0, f"pad must be >= 0, got {o.pad}"),
        (o.lr_g <= 0 or o.lr_z < 0, f"need lr_g > 0 and lr_z >= 0, got {o.lr_g}, {o.lr_z}"),
    ]
    for bad, message in problems:
        if bad:
            raise UsageError(f"fast: {message}.")
