"""Lopes et al. 2017 (docs/methods/lopes.md): optimise input batches until the teacher's
activations match targets drawn from its activation records, keep them as the transfer set, distil
on it.

Each `synthesize()` reconstructs one batch of ``syn_batch`` images whose classes cycle through
all classes, and adds it to an ImagePool in the run's ``images/`` folder, until the pool holds
``pool_size`` images; later rounds add nothing. With ``warmup`` epochs covering those rounds the
whole set is reconstructed before the student's first step, as in the reference pipeline.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from dfkd.api import SynthesisContext, SynthesisResult, Synthesizer, UsageError
from dfkd_plugin_lopes.activations import TOP, Capture
from dfkd_plugin_lopes.options import LopesOptions
from dfkd_plugin_lopes.records import check_records, load_records, teacher_fingerprint

SPECTRAL = ("spectral_all_layers", "spectral_layer_pairs")


def layer_loss(act: Tensor, target: Tensor, relu: bool = True) -> Tensor:
    """mean((ReLU(â) − ReLU(a))²): the reference compares what the next layer would see."""
    if relu:
        act, target = F.relu(act), F.relu(target)
    return (target - act).square().mean()


def all_layers_loss(acts: list[Tensor], targets: list[Tensor], top_relu: bool = True) -> Tensor:
    """Σ_l (1/n_l) · layer_loss over the layers, the last one being logits/T.

    The 1/n_l on top of the mean is the reference's: it weights small layers (the logits) far
    above large ones (conv1), and is kept so the objective is the one the paper measured.
    """
    last = len(acts) - 1
    return sum(
        layer_loss(a, t, relu=top_relu or i < last) / a.shape[1]
        for i, (a, t) in enumerate(zip(acts, targets, strict=True))
    )


def spectral_loss(signal: Tensor, basis: Tensor, target: Tensor) -> Tensor:
    """mean((Uᵀz − ĉ)²): z (B, N) the group's downsampled pre-activations, U (B, N, k) the
    per-example class's graph-Fourier modes, ĉ (B, k) the target coefficients."""
    return (torch.einsum("bn,bnk->bk", signal, basis) - target).square().mean()


def soft_cross_entropy(s_logits: Tensor, t_logits: Tensor, T: float) -> Tensor:
    """−Σ softmax(t/T) log softmax(s/T), times T² so SGD sees Hinton's gradient scale.

    It equals KL(t‖s; T)·T² plus the teacher's entropy, which the student cannot change.
    """
    p = F.softmax(t_logits / T, dim=1)
    return -(p * F.log_softmax(s_logits / T, dim=1)).sum(1).mean() * T * T


class LopesSynthesizer(Synthesizer):
    uses_pool = True

    def __init__(self, ctx: SynthesisContext, options: LopesOptions) -> None:
        super().__init__(ctx, options)
        if not options.records:
            raise UsageError(
                "lopes reconstructs its inputs from the teacher's activation records: pass "
                "-o records=FILE, made by 'dfkd lopes record --teacher T --dataset D'."
            )
        records = load_records(options.records)
        teacher, dataset = ctx.run_info.get("teacher"), ctx.run_info.get("dataset")
        check_records(
            records,
            options.records,
            fingerprint=teacher_fingerprint(ctx.teacher),
            num_classes=ctx.num_classes,
            teacher=teacher,
            dataset=dataset,
        )
        if options.objective not in records.objectives:
            raise UsageError(
                f"Records {options.records} have no spectral summary, which objective "
                f"{options.objective} needs; record them again with --spectral."
            )
        self.records = records.to(ctx.device)
        self.capture = Capture(ctx.teacher, self.records.hooked)
        groups = self.records.groups
        if options.objective == "spectral_all_layers":
            self.groups = {"all": groups["all"]}
        elif options.objective == "spectral_layer_pairs":
            self.groups = {g: members for g, members in groups.items() if g != "all"}
        else:
            self.groups = {}
        self.shrink = (
            {n: d.to(ctx.device) for n, d in records.downsamplers().items()} if self.groups else {}
        )
        self.pool = ctx.image_pool()
        seeds = torch.randint(2**62, (2,)).tolist()
        self.recon_gen = torch.Generator().manual_seed(seeds[0])
        self.sample_gen = torch.Generator().manual_seed(seeds[1])
        self.next_label = 0

    def synthesize(self) -> SynthesisResult:
        missing = self.options.pool_size - len(self.pool)
        if missing <= 0:
            return SynthesisResult(None)
        n = min(self.options.syn_batch, missing)
        labels = (self.next_label + torch.arange(n)) % self.ctx.num_classes
        self.next_label = (self.next_label + n) % self.ctx.num_classes
        images, loss = self.reconstruct(labels)
        self.pool.add(images.cpu(), labels)
        return SynthesisResult(images, {"loss_g": loss})

    def reconstruct(self, labels: Tensor) -> tuple[Tensor, float]:
        """Images in [0, 1] whose activations approach targets sampled for ``labels``.

        Pixels are clamped to [0, 1] after every Adam step (the reference left them free): the
        pool stores 8-bit pixels, so what is optimised should be what is kept.
        """
        ctx, opts = self.ctx, self.options
        labels = labels.to(ctx.device)
        targets = self.sample_targets(labels)
        if opts.objective == "all_layers_dropout":
            self.capture.masks = self.dropout_masks(len(labels))
        shape = (len(labels), ctx.channels, ctx.image_size, ctx.image_size)
        noise = torch.randn(shape, generator=self.recon_gen)
        x = (opts.init_mean + opts.init_std * noise).clamp(0, 1).to(ctx.device)
        x.requires_grad_(True)
        optimizer = torch.optim.Adam([x], lr=opts.lr_g)
        try:
            for _ in range(opts.g_steps):
                loss = self.objective_loss(x, labels, targets)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                with torch.no_grad():
                    x.clamp_(0, 1)
        finally:
            self.capture.masks = {}
        return x.detach(), loss.item()

    def sample_targets(self, labels: Tensor) -> dict[str, Tensor]:
        """Fixed for the whole optimisation of a batch: per layer â (or per spectral group the
        coefficients ĉ, with the class's modes U under "<group>/basis")."""
        g = self.recon_gen
        if self.groups:
            targets = {}
            for group in self.groups:
                targets[group] = self.records.sample_coefficients(group, labels, g)
                targets[f"{group}/basis"] = self.records.tensors[f"spectral/{group}/eigvecs"][
                    labels
                ]
            return targets
        names = [TOP] if self.options.objective == "top_layer" else self.records.names
        return {name: self.records.sample_layer(name, labels, g) for name in names}

    def dropout_masks(self, n: int) -> dict[str, Tensor]:
        """Fixed Bernoulli(keep)/keep masks on every hooked layer's output for one batch: the
        reference's all_layers_dropout, for teachers trained with dropout."""
        keep = self.options.dropout_keep
        shapes = {layer["name"]: layer["shape"] for layer in self.records.header["layers"]}
        return {
            name: ((torch.rand(n, *shapes[name], generator=self.recon_gen) < keep) / keep).to(
                self.ctx.device
            )
            for name in self.records.hooked
        }

    def activations(self, x: Tensor) -> dict[str, Tensor]:
        """Flattened pre-activations of every recorded layer, and logits/T under "logits"."""
        with self.ctx.autocast():
            logits = self.teacher(self.ctx.normalize(x))
        acts = {n: self.capture.outputs[n].float().flatten(1) for n in self.records.hooked}
        acts[TOP] = logits.float() / self.records.temperature
        return acts

    def objective_loss(self, x: Tensor, labels: Tensor, targets: dict[str, Tensor]) -> Tensor:
        acts = self.activations(x)
        if self.groups:
            total = x.new_zeros(())
            for group, members in self.groups.items():
                signal = torch.cat([self.shrink[m](acts[m]) for m in members], dim=1)
                total = total + spectral_loss(signal, targets[f"{group}/basis"], targets[group])
            return total
        if self.options.objective == "top_layer":
            return layer_loss(acts[TOP], targets[TOP], relu=self.options.top_relu)
        names = self.records.names
        return all_layers_loss(
            [acts[n] for n in names], [targets[n] for n in names], self.options.top_relu
        )

    def sample(self) -> Tensor:
        images, _ = self.pool.sample(self.options.batch_size, generator=self.sample_gen)
        return self.ctx.normalize(images.to(self.ctx.device).float() / 255)

    def student_loss(
        self, s_logits: Tensor, t_logits: Tensor, step: int
    ) -> tuple[Tensor, dict[str, float]]:
        return soft_cross_entropy(s_logits, t_logits, self.options.T), {}

    def state_dict(self) -> dict[str, Any]:
        return {
            "pool": self.pool.state_dict(),
            "recon_gen": self.recon_gen.get_state(),
            "sample_gen": self.sample_gen.get_state(),
            "next_label": self.next_label,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pool.load_state_dict(state["pool"])
        self.recon_gen.set_state(state["recon_gen"])
        self.sample_gen.set_state(state["sample_gen"])
        self.next_label = int(state["next_label"])
