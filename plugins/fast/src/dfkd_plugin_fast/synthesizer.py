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
from torch import nn

from dfkd.api import (
    BestIterate,
    Generator,
    PooledInversion,
    SynthesisContext,
    SynthesisResult,
)
from dfkd_plugin_fast import TEACHERS
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


def check_preset_teacher(ctx: SynthesisContext, options: FastOptions) -> None:
    """One line on stderr (from the first process) when the options' adv and oh were published
    for another teacher than the run's: they are the values that differ between teachers."""
    teacher = ctx.run_info.get("teacher")
    tuned = options.preset_teacher
    if not tuned or not teacher or teacher == tuned or ctx.process_index != 0:
        return
    own = (
        f"the {teacher} presets (e.g. cifar10-{teacher}) hold its own"
        if teacher in TEACHERS
        else "tune them with -o adv=... -o oh=..., or silence this with -o preset_teacher=none"
    )
    # imported here: a first import of rich draws from Python's random generator, which a run
    # has seeded and checkpoints
    from dfkd.api import err_console

    err_console.print(
        f"Warning: fast: the preset's adv and oh were published for a {tuned} teacher, not "
        f"{teacher}; {own}.",
        markup=False,
        highlight=False,
    )


@torch.no_grad()
def reset_first_layers(generator: Generator, rng: torch.Generator | None = None) -> None:
    """The reference's reset_l0: the projection Linear and the first BatchNorm get N(0, 0.02)
    weights and zero biases."""
    for module in (generator.l1[0], generator.conv_blocks[0]):
        module.weight.normal_(0.0, 0.02, generator=rng)
        module.bias.zero_()


class FastSynthesizer(PooledInversion):
    """See the module docstring; ``options`` is a ``FastOptions``."""

    def __init__(self, ctx: SynthesisContext, options: FastOptions) -> None:
        super().__init__(ctx, options, "fast")
        check_preset_teacher(ctx, options)
        self.generator = Generator(options.nz, options.ngf, ctx.image_size, ctx.channels).to(
            ctx.device
        )
        self.meta_optimizer = torch.optim.Adam(
            self.generator.parameters(), lr=options.lr_g * options.g_steps, betas=BETAS
        )
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

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "generator": self.generator.state_dict(),
            "meta_optimizer": self.meta_optimizer.state_dict(),
            "l0_was_reset": self.l0_was_reset,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.load_state_dict(state["generator"])
        self.meta_optimizer.load_state_dict(state["meta_optimizer"])
        self.l0_was_reset = bool(state["l0_was_reset"])
        super().load_state_dict(state)
