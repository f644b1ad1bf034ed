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

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from dfkd.api import (
    BestIterate,
    DfkdError,
    PooledInversion,
    SynthesisContext,
    SynthesisResult,
    UsageError,
    balanced_labels,
    read_meta,
)
from dfkd_plugin_nayer.embeddings import (
    default_embeddings_path,
    describe_label_embeddings,
    load_label_embeddings,
)
from dfkd_plugin_nayer.generator import NoisyLayerGenerator
from dfkd_plugin_nayer.options import NayerOptions

BETAS = (0.5, 0.999)


def find_label_embeddings(ctx: SynthesisContext, o: NayerOptions) -> tuple[Tensor, str]:
    """The run's label embeddings and how its metrics rows name them: the file
    ``label_embeddings``, else the file beside the teacher's weights, else a fixed random embedding
    per class. ``embeddings=text`` refuses the random ones and ``embeddings=random`` looks for no
    file; with ``auto`` the fallback is one line on stderr, not a Python warning in the middle of
    the run's output."""
    weights = ctx.run_info.get("teacher_weights")
    beside = default_embeddings_path(weights) if weights else None
    if o.embeddings != "random":
        path = Path(o.label_embeddings) if o.label_embeddings else beside
        if o.label_embeddings or (beside is not None and beside.is_file()):
            return load_label_embeddings(path, ctx.num_classes), describe_label_embeddings(path)
        make = (
            f"dfkd nayer embed-labels --dataset {_dataset_of(ctx, weights)} "
            f"--teacher-weights {weights or 'WEIGHTS'}"
        )
        missing = f"there is no {beside}" if beside else "no label-embedding file was given"
        if o.embeddings == "text":
            raise UsageError(
                f"nayer: embeddings=text needs the paper's label-text embeddings, but {missing}. "
                f"Make them with `{make}` (needs pip install open_clip_torch), import finished "
                f"ones with `{make} --from FILE`, or pass -o embeddings=random to use random ones."
            )
        if ctx.process_index == 0:
            # imported here: a first import of rich draws from Python's random generator, which a
            # run has seeded and checkpoints
            from dfkd.api import err_console

            err_console.print(
                f"Warning: nayer uses random label embeddings (embedding_seed "
                f"{o.embedding_seed}): {missing}. For the paper's text embeddings run `{make}` "
                "(or add --from FILE to import finished ones).",
                markup=False,
                highlight=False,
            )
    rng = torch.Generator().manual_seed(o.embedding_seed)
    rows = torch.randn(ctx.num_classes, o.le_size, generator=rng)
    return rows, f"random (seed {o.embedding_seed})"


def _dataset_of(ctx: SynthesisContext, weights: str | None) -> str:
    """The dataset whose class names embed-labels needs: the run's, else the one the teacher's
    sidecar names (a teacher-only run has no --dataset)."""
    if ctx.run_info.get("dataset"):
        return ctx.run_info["dataset"]
    try:
        return read_meta(weights)["dataset"] if weights else "DATASET"
    except (DfkdError, OSError, KeyError):
        return "DATASET"


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
        """The adversarial term is on from the first epoch of distillation, as in the reference:
        it counts the epoch up before it tests epoch > warmup."""
        return bool(self.options.adv) and self.epoch >= self.options.warmup

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
            # as the reference: the loops after the first see the student in train mode (its
            # batch statistics, which also move its BN running averages)
            self.student.train()
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

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        """The label embeddings in every metrics row, so a report says which ones a number had."""
        return {**super().end_epoch(epoch), "embeddings": self.embedding_source}

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "generator": self.generator.state_dict(),
            "label_embeddings": self.label_embeddings.clone(),
            "embedding_source": self.embedding_source,
            "checked_epoch": self.checked_epoch,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.label_embeddings = state["label_embeddings"].float()
        self.embedding_source = str(state["embedding_source"])
        self.generator = self._new_generator()  # around the restored embeddings
        self.generator.load_state_dict(state["generator"])
        self.checked_epoch = int(state["checked_epoch"])
        super().load_state_dict(state)  # after _new_generator drew from the private stream
