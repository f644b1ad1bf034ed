"""Contrastive Model Inversion (Fang et al., IJCAI 2021), as the DataFree benchmark runs it
(docs/methods/cmi.md).

Each synthesis round inverts one fresh batch: the generator is re-initialised and optimised
together with its latent codes for ``g_steps`` iterations against the frozen teacher (BN
statistics, one-hot targets, a decision-adversarial term against the student, and a contrastive
term that makes the batch differ from itself and from every earlier batch). The lowest-loss
iterate joins the image pool, on which the student trains, and its features join the memory
bank that supplies the contrastive negatives of later rounds.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dfkd.api import (
    BestIterate,
    BNStatsHook,
    Generator,
    InstanceMeanHook,
    SynthesisContext,
    SynthesisResult,
    Synthesizer,
    UsageError,
    adversarial_kl,
    agreement_mask,
    attach_bn_hooks,
    bn_statistics,
    one_hot_ce,
    random_crop_flip,
    random_resized_crop,
    reset_parameters_dcgan,
    warn_without_batchnorm,
)
from dfkd_plugin_cmi.contrastive import MLPHead, contrastive_loss
from dfkd_plugin_cmi.memory import MemoryBank
from dfkd_plugin_cmi.options import CMIOptions


def feature_layers(teacher: nn.Module) -> list[tuple[nn.Module, int]]:
    """The layers whose inputs give the contrastive features, with their channel counts.

    The reference (DataFree's datafree_kd.py) hooks the inputs of ``layer1``..``layer4`` of its
    ResNet-34 teacher and every BatchNorm2d of any other teacher (WRN, VGG, ...). Hooking every
    BN of a ResNet-34 instead would make an 8,512-dim feature where the reference has 512: a
    different contrastive objective, a 75 M-parameter head and a 2.8 GB memory bank. The
    reference decides by the teacher's name; here the structure decides, so any ResNet-style
    teacher with four stages ``layer1``..``layer4`` gets its stage inputs, each as wide as the
    stage's first convolution reads. A teacher without a BatchNorm2d would leave CMI without
    features at all, so then the inputs of its Conv2d layers stand in: the same kind of
    per-channel summary of what each stage sees.
    """
    stages = [getattr(teacher, f"layer{i}", None) for i in range(1, 5)]
    if all(isinstance(stage, nn.Module) for stage in stages):
        widths = [_input_channels(stage) for stage in stages]
        if None not in widths:
            return list(zip(stages, widths, strict=True))
    found = [(m, m.num_features) for m in teacher.modules() if isinstance(m, nn.BatchNorm2d)]
    if not found:
        found = [(m, m.in_channels) for m in teacher.modules() if isinstance(m, nn.Conv2d)]
    return found


def _input_channels(stage: nn.Module) -> int | None:
    """The channels a ResNet stage takes in: those its first block's first convolution reads."""
    return next((m.in_channels for m in stage.modules() if isinstance(m, nn.Conv2d)), None)


class CMISynthesizer(Synthesizer):
    """See the module docstring; ``options`` is a ``CMIOptions``."""

    uses_pool = True

    def __init__(self, ctx: SynthesisContext, options: CMIOptions) -> None:
        super().__init__(ctx, options)
        layers = feature_layers(ctx.teacher)
        if not layers:
            raise UsageError(
                "cmi needs a convolutional teacher: its contrastive features are the channel means "
                "of the teacher's BatchNorm2d (or Conv2d) inputs, and this teacher has neither."
            )
        warn_without_batchnorm(ctx.teacher, "cmi", options.bn)
        self.layers = [module for module, _ in layers]
        self.dim = sum(channels for _, channels in layers)  # D; bank rows are [h_l, h_g], 2·D
        # Private generators, seeded from the run's seed, make the synthesis repeatable and
        # resumable on any device: the loop's checkpoint restores only the global CPU generator.
        seeds = torch.randint(2**62, (2,)).tolist()
        self._rng = torch.Generator(device=ctx.device).manual_seed(seeds[0])
        self._cpu_rng = torch.Generator().manual_seed(seeds[1])
        self.generator = Generator(options.nz, options.ngf, ctx.image_size, ctx.channels).to(
            ctx.device
        )
        self.head = MLPHead(self.dim, options.head_dim).to(ctx.device)
        self.head_optimizer = torch.optim.Adam(self.head.parameters(), lr=options.lr_g)
        self.bank = MemoryBank(options.bank_size, 2 * self.dim, generator=self._cpu_rng)
        self.pool = ctx.image_pool(seed=self._initial_images())

    def _initial_images(self) -> Tensor | None:
        """The pre-inverted set that starts the pool (``init_images``), fitted to the teacher's
        input size. It is read again on every start, so resuming needs it where it was."""
        name = self.options.init_images
        if not name:
            return None
        images, _ = self.ctx.open_dataset(name).load("train")
        if images.shape[1] != self.ctx.channels:
            raise UsageError(
                f"init_images={name} has {images.shape[1]}-channel images; the teacher takes "
                f"{self.ctx.channels}."
            )
        size = self.ctx.image_size
        if images.shape[-1] != size or images.shape[-2] != size:
            resized = F.interpolate(
                images.float(), size=(size, size), mode="bilinear", antialias=True
            )
            images = resized.round_().clamp_(0, 255).to(torch.uint8)
        return images

    def synthesize(self) -> SynthesisResult:
        self.student.eval()
        bn_hooks = attach_bn_hooks(self.teacher)
        mean_hooks = [InstanceMeanHook(m) for m in self.layers]
        try:
            images, features, logs = self._invert(bn_hooks, mean_hooks)
        finally:
            for hook in (*bn_hooks, *mean_hooks):
                hook.remove()
        self.pool.add(images)
        self.bank.add(features)
        return SynthesisResult(images, logs)

    def _invert(
        self, bn_hooks: list[BNStatsHook], mean_hooks: list[InstanceMeanHook]
    ) -> tuple[Tensor, Tensor, dict[str, float]]:
        """One round: g_steps iterations on a fresh generator; the lowest-loss iterate's images,
        its features [h_local, h_global], and its loss terms."""
        o, ctx, device = self.options, self.ctx, self.ctx.device
        batch = o.syn_batch
        reset_parameters_dcgan(self.generator, generator=self._rng)
        self.generator.train()
        z = torch.randn(batch, o.nz, device=device, generator=self._rng).requires_grad_()
        targets = torch.randint(ctx.num_classes, (batch,), device=device, generator=self._rng)
        targets = targets.sort().values
        optimizer = torch.optim.Adam(
            [{"params": self.generator.parameters()}, {"params": [z]}],
            lr=o.lr_g,
            betas=(0.5, 0.999),
        )
        trained = [*self.generator.parameters(), z, *self.head.parameters()]
        best, best_logs = BestIterate(), {}
        for _ in range(o.g_steps):
            with ctx.autocast():
                x = self.generator(z).float()
            global_view = ctx.normalize(random_crop_flip(x, o.pad, o.flip, generator=self._rng))
            local_view = ctx.normalize(
                random_resized_crop(x, o.local_scale, generator=self._rng, flip=o.flip)
            )
            t_out = self.teacher_logits(global_view).float()
            h_global = _features(mean_hooks)
            terms = {
                "bn": bn_statistics(bn_hooks) if bn_hooks else t_out.new_zeros(()),
                "oh": one_hot_ce(t_out, targets),
                "adv": self._adversarial(global_view, t_out),
            }
            self.teacher_logits(local_view)
            h_local = _features(mean_hooks)
            terms["cr"] = self._contrastive(h_local, h_global)
            loss = sum(getattr(o, name) * value for name, value in terms.items())
            if best.offer(loss.item(), images=x, features=torch.cat([h_local, h_global], dim=1)):
                best_logs = {f"loss_{name}": value.item() for name, value in terms.items()}
            optimizer.zero_grad(set_to_none=True)
            self.head_optimizer.zero_grad(set_to_none=True)
            loss.backward(inputs=trained)
            optimizer.step()
            self.head_optimizer.step()
        return best["images"], best["features"], {"loss_g": best.loss, **best_logs}

    def _adversarial(self, global_view: Tensor, t_out: Tensor) -> Tensor:
        """−(1/B) Σ m_i·KL_i(t‖s) at T = 1 with the student in eval mode; skipped when adv = 0."""
        if not self.options.adv:
            return t_out.new_zeros(())
        s_out = self.ctx.student_logits(global_view)
        return adversarial_kl(s_out, t_out, T=1.0, mask=agreement_mask(s_out, t_out))

    def _contrastive(self, h_local: Tensor, h_global: Tensor) -> Tensor:
        """L_cr against min(n_negatives, filled) cached pairs from the memory bank."""
        k = min(self.options.n_negatives, self.bank.filled)
        neg_local = neg_global = None
        if k:
            cached = self.bank.get_data(k, generator=self._cpu_rng).to(h_local.device)
            neg_local, neg_global = cached[:, : self.dim], cached[:, self.dim :]
        return contrastive_loss(
            self.head, h_local, h_global, neg_local, neg_global, T=self.options.cr_T
        )

    def sample(self) -> Tensor:
        """A pool batch with the dataset's train augmentation (padded crop, flip), normalised."""
        images, _ = self.pool.sample(self.options.batch_size, generator=self._cpu_rng)
        x = images.to(self.ctx.device).float().div_(255)
        x = random_crop_flip(x, self.options.pad, self.options.flip, generator=self._rng)
        return self.ctx.normalize(x)

    def state_dict(self) -> dict[str, Any]:
        # The generator is absent on purpose: every round re-initialises it and its optimiser.
        return {
            "head": self.head.state_dict(),
            "head_optimizer": self.head_optimizer.state_dict(),
            "bank": self.bank.state_dict(),
            "pool": self.pool.state_dict(),
            "rng": self._rng.get_state(),
            "cpu_rng": self._cpu_rng.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.head.load_state_dict(state["head"])
        self.head_optimizer.load_state_dict(state["head_optimizer"])
        self.bank.load_state_dict(state["bank"])
        self.pool.load_state_dict(state["pool"])
        self._rng.set_state(state["rng"])
        self._cpu_rng.set_state(state["cpu_rng"])


def _features(hooks: list[InstanceMeanHook]) -> Tensor:
    """The concatenated per-instance channel means from the teacher's last forward, float32."""
    return torch.cat([hook.features.float() for hook in hooks], dim=1)
