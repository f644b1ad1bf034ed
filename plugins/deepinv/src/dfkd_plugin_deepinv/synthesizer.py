"""DeepInversion with the ADI competition term, as the DataFree benchmark runs it
(docs/methods/deepinv.md#the-datafree-benchmark).

Each synthesis round optimises a fresh batch of pixels directly (no generator): the teacher must
classify it as sorted random targets while its BatchNorm layers see the statistics they were
trained on, the student must disagree with the teacher (ADI), and the image must be smooth. The
kept batch joins an ever-growing pool, and the student distils on random batches of the whole pool.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from dfkd.api import (
    SEGMENTATION,
    BestIterate,
    SynthesisContext,
    SynthesisResult,
    Synthesizer,
    attach_bn_hooks,
    bn_statistics,
    class_layouts,
    clip_to_pixel_range,
    jitter_flip,
    js_divergence,
    one_hot_ce,
    random_crop_flip,
    tv_l1,
    warn_without_batchnorm,
)
from dfkd_plugin_deepinv.options import DeepInvOptions

ADAM_BETAS = (0.5, 0.99)


@contextlib.contextmanager
def _frozen(model: torch.nn.Module) -> Iterator[None]:
    """Let gradients flow through ``model`` to the pixels without computing its weight gradients,
    which the student's own step would discard anyway; restores each flag afterwards."""
    flags = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)


class DeepInvSynthesizer(Synthesizer):
    """Pixel optimisation per round; the student learns from the pool of every kept batch."""

    uses_pool = True

    def __init__(self, ctx: SynthesisContext, options: DeepInvOptions) -> None:
        super().__init__(ctx, options)
        warn_without_batchnorm(ctx.teacher, "deepinv", options.bn)
        self.hooks = attach_bn_hooks(ctx.teacher)
        self.pool = ctx.image_pool()
        # a segmentation teacher is asked for a layout of classes per image, not one class
        self.segmentation = ctx.task == SEGMENTATION
        size = ctx.image_size
        self.jitter = size // 8 if options.jitter is None else options.jitter
        self.padding = size // 8
        # One private stream for every draw (pixels, targets, jitter, student batches), checkpointed
        # with the pool, so a resumed run continues exactly where it stopped.
        self.rng = torch.Generator().manual_seed(int(torch.randint(2**62, ()).item()))

    def losses(self, x: Tensor, targets: Tensor) -> dict[str, Tensor]:
        """Every term of the pixel loss for the batch ``x`` (normalised) and its ``targets``.

        ``total`` = bn·Σ r_l + oh·CE(t, y) + adv·(−JS(s, t; T)) + tv·TV₁(x) + l2·‖x‖₂, with t and s
        the teacher's and the student's logits on the jittered, maybe flipped batch, while the
        smoothness and norm priors look at the un-jittered pixels
        (docs/methods/deepinv.md#the-datafree-benchmark).
        """
        o = self.options
        if self.segmentation:  # the masks move with the pixels: one roll and flip for both
            both = jitter_flip(
                torch.cat([x, targets[:, None].to(x.dtype)], 1),
                self.jitter,
                flip=o.flip,
                generator=self.rng,
            )
            x_jit, targets = both[:, :-1], both[:, -1].round().long()
        else:
            x_jit = jitter_flip(x, self.jitter, flip=o.flip, generator=self.rng)
        with self.ctx.autocast():
            t = self.teacher(x_jit).float()
        terms = {"oh": one_hot_ce(t, targets), "tv": tv_l1(x)}
        if self.hooks:
            terms["bn"] = bn_statistics(self.hooks)
        if o.adv:
            s = self.ctx.student_logits(x_jit)
            terms["adv"] = -js_divergence(s, t, T=o.adv_T)
        if o.l2:
            terms["l2"] = torch.linalg.vector_norm(x)
        terms["total"] = sum(getattr(o, name) * value for name, value in terms.items())
        return terms

    def synthesize(self) -> SynthesisResult:
        o, ctx = self.options, self.ctx
        self.student.eval()
        shape = (o.syn_batch, ctx.channels, ctx.image_size, ctx.image_size)
        x = torch.randn(shape, generator=self.rng).to(ctx.device).requires_grad_(True)
        if self.segmentation:
            targets = class_layouts(
                o.syn_batch, ctx.num_classes, ctx.image_size, generator=self.rng
            )
        else:
            targets = torch.randint(ctx.num_classes, (o.syn_batch,), generator=self.rng)
            targets = targets.sort().values
        targets = targets.to(ctx.device)
        optimizer = torch.optim.Adam([x], lr=o.lr_g, betas=ADAM_BETAS)
        best, best_terms = BestIterate(), {}
        with _frozen(self.student):
            for _ in range(o.g_steps):
                terms = self.losses(x, targets)
                loss = terms["total"].item()
                logged = {k: v.detach() for k, v in terms.items() if k != "total"}
                # The reference keeps a reference to the pixels' storage, which later steps
                # overwrite, so it ends up with the last iterate; BestIterate keeps a clone.
                if best.offer(loss, x=x):
                    best_terms = logged
                optimizer.zero_grad(set_to_none=True)
                terms["total"].backward()
                optimizer.step()
                with torch.no_grad():
                    x.copy_(clip_to_pixel_range(x, ctx.mean, ctx.std))
        if o.keep_best:
            best_loss, best_x = best.loss, best["x"]
        else:  # the final iterate, what the reference's aliasing amounts to
            best_loss, best_x, best_terms = loss, x.detach(), logged
        images = ctx.denormalize(best_x)
        # a classification pool keeps each image's class; masks are the teacher's to give
        self.pool.add(images.cpu(), None if self.segmentation else targets.cpu())
        logs = {f"loss_{k}": v.item() for k, v in best_terms.items()}
        return SynthesisResult(images, {"loss_g": best_loss, **logs})

    def sample(self) -> Tensor:
        images, _ = self.pool.sample(self.options.batch_size, generator=self.rng)
        x = images.float().div_(255)
        if self.options.augment:
            x = random_crop_flip(x, padding=self.padding, generator=self.rng)
        return self.ctx.normalize(x.to(self.ctx.device))

    def state_dict(self) -> dict[str, Any]:
        return {"pool": self.pool.state_dict(), "rng": self.rng.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pool.load_state_dict(state["pool"])
        self.rng.set_state(state["rng"])
