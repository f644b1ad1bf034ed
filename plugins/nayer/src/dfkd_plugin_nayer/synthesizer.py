"""NAYER (Tran et al., CVPR 2024) as its reference runs it (docs/methods/nayer.md).

The generator's input is not random noise but a class's label-text embedding passed through a
"noisy layer" that is re-initialised at random before every loop; the generator behind it lives
for ``g_life`` epochs and is then re-created. Each synthesis round runs ``g_loops`` loops
(``gwp_loops`` during warm-up): re-draw the noisy layers, make a new Adam, optimise the generator
for ``g_steps`` steps on balanced targets against the frozen teacher (momentum BN statistics,
cross-entropy, and after warm-up a decision-adversarial term), and add the loop's lowest-loss
batch to the image pool on which the student trains.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from dfkd.api import (
    BestIterate,
    PooledInversion,
    SynthesisContext,
    SynthesisResult,
    balanced_labels,
)
from dfkd_plugin_nayer.embeddings import default_embeddings_path, load_label_embeddings
from dfkd_plugin_nayer.generator import NoisyLayerGenerator
from dfkd_plugin_nayer.options import NayerOptions

BETAS = (0.5, 0.999)


def find_label_embeddings(ctx: SynthesisContext, o: NayerOptions) -> tuple[Tensor, str]:
    """The run's label embeddings and where they came from: ``label_embeddings``, else the file
    beside the teacher's weights, else (with a warning) a fixed random embedding per class."""
    if o.label_embeddings:
        path = Path(o.label_embeddings)
        return load_label_embeddings(path, ctx.num_classes), str(path)
    weights = ctx.run_info.get("teacher_weights")
    if weights:
        path = default_embeddings_path(weights)
        if path.is_file():
            return load_label_embeddings(path, ctx.num_classes), str(path)
    where = f" (no {default_embeddings_path(weights)})" if weights else ""
    warnings.warn(
        f"nayer: no label embeddings for this teacher{where}; using a fixed random embedding per "
        f"class (embedding_seed {o.embedding_seed}). `dfkd nayer embed-labels` makes the paper's "
        "text embeddings.",
        stacklevel=2,
    )
    rng = torch.Generator().manual_seed(o.embedding_seed)
    return torch.randn(ctx.num_classes, o.le_size, generator=rng), "random"


class NayerSynthesizer(PooledInversion):
    """See the module docstring; ``options`` is a ``NayerOptions``."""

    def __init__(self, ctx: SynthesisContext, options: NayerOptions) -> None:
        self.label_embeddings, self.embedding_source = find_label_embeddings(ctx, options)
        super().__init__(ctx, options, "nayer")
        self.generator = self._new_generator()
        self.checked_epoch = -1  # the epoch whose first round decided on re-creating the generator

    def _new_generator(self) -> NoisyLayerGenerator:
        """A generator with PyTorch's default initialisation, drawn from a seed of the private CPU
        stream (so the draw is the same on every device and after a resume)."""
        o, ctx = self.options, self.ctx
        seed = int(torch.randint(2**62, (), generator=self._cpu_rng))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            generator = NoisyLayerGenerator(
                self.label_embeddings,
                o.syn_batch,
                o.le_emb_size,
                o.ngf,
                ctx.image_size,
                ctx.channels,
            )
        return generator.to(ctx.device)

    def renews_generator(self, epoch: int) -> bool:
        """The reference's rule: a new generator when epoch − warmup or epoch is a multiple of
        g_life (so the first epoch starts one)."""
        life, warmup = self.options.g_life, self.options.warmup
        return (epoch - warmup) % life == 0 or epoch % life == 0

    @property
    def adversarial(self) -> bool:
        """The adversarial term is on after the first epoch of distillation (epoch > warmup)."""
        return bool(self.options.adv) and self.epoch > self.options.warmup

    def synthesize(self) -> SynthesisResult:
        o = self.options
        self.student.eval()
        if self.checked_epoch != self.epoch:
            self.checked_epoch = self.epoch
            if self.renews_generator(self.epoch) and self.epoch > 0:
                self.generator = self._new_generator()
        loops = o.gwp_loops if self.epoch < o.warmup else o.g_loops
        logs: dict[str, float] = {}
        for _ in range(loops):
            images, loop_logs = self._loop()
            for name, value in loop_logs.items():
                logs[name] = logs.get(name, 0.0) + value / loops
        return SynthesisResult(images, logs)

    def _loop(self) -> tuple[Tensor, dict[str, float]]:
        """One loop: new noisy layers, a new Adam, g_steps steps; the best batch joins the pool."""
        o, ctx = self.options, self.ctx
        generator = self.generator.train()
        generator.reset_noisy_layers(self._rng)
        optimizer = torch.optim.Adam(generator.parameters(), lr=o.lr_g, betas=BETAS)
        targets = balanced_labels(o.syn_batch, ctx.num_classes, self._rng, ctx.device)
        best = BestIterate()
        for _ in range(o.g_steps):
            with ctx.autocast():
                x = generator(targets).float()
            terms = self.losses(x, targets)
            loss = sum(getattr(o, name) * value for name, value in terms.items())
            best.offer(loss.item(), images=x, **{name: v.detach() for name, v in terms.items()})
            optimizer.zero_grad(set_to_none=True)
            loss.backward(inputs=list(generator.parameters()))
            optimizer.step()
        self.bn_stats.update()
        images = best["images"]
        self.pool.add(images, targets)
        logs = {f"loss_{name}": best[name].item() for name in terms}
        return images, {"loss_g": best.loss, **logs}

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "generator": self.generator.state_dict(),
            "label_embeddings": self.label_embeddings.clone(),
            "checked_epoch": self.checked_epoch,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.label_embeddings = state["label_embeddings"].float()
        self.generator = self._new_generator()  # around the restored embeddings
        self.generator.load_state_dict(state["generator"])
        self.checked_epoch = int(state["checked_epoch"])
        super().load_state_dict(state)  # after _new_generator drew from the private stream
