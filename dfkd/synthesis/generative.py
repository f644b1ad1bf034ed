"""The persistent-generator synthesis of DAFL, ZSKT, DFQ, CuDFKD and DFAD (docs/methods/dafl.md,
and zskt.md, dfq.md, cudfkd.md and dfad.md beside it).

One generator and its Adam optimiser live for the whole run. Each synthesis round takes
``g_steps`` generator steps on a weighted sum of the shared loss terms; the student then learns
on fresh generator samples, one new latent batch per student step. The methods differ only in
which terms they weight, the generator they use and small details (DFAD's L1 game), so each
plugin is an options class and at most a few overrides of this class.
"""

from __future__ import annotations

from typing import Any

import torch
from accelerate.utils import broadcast, reduce
from torch import Tensor

from dfkd.errors import UsageError
from dfkd.optim import make_scheduler
from dfkd.synthesis.base import (
    SynthesisContext,
    SynthesisResult,
    Synthesizer,
    warn_without_batchnorm,
)
from dfkd.synthesis.bn_hooks import attach_bn_hooks
from dfkd.synthesis.generative_options import GenerativeOptions
from dfkd.synthesis.generators import Generator, GeneratorA, GeneratorB, LargeGenerator
from dfkd.synthesis.losses import (
    activation_l1,
    adversarial_kl,
    bn_statistics,
    class_balance,
    one_hot_ce,
)

#: the loss terms a generator step can weight, in the order they are logged
TERMS = ("oh", "act", "balance", "bn", "adv")

_GENERATORS: dict[str, type[torch.nn.Module]] = {
    "large": LargeGenerator,
    "base": Generator,
    "a": GeneratorA,
    "b": GeneratorB,
}


def build_generator(options: GenerativeOptions, channels: int, image_size: int) -> torch.nn.Module:
    """The generator named by ``options.generator``, making images the teacher can take."""
    if options.generator not in _GENERATORS:
        known = ", ".join(_GENERATORS)
        raise UsageError(f"unknown generator {options.generator!r}; known: {known}")
    cls = _GENERATORS[options.generator]
    return cls(nz=options.nz, ngf=options.ngf, img_size=image_size, channels=channels)


class GenerativeSynthesizer(Synthesizer):
    """A generator trained against the teacher (and, with ``adv``, the student) that feeds the
    student fresh samples.

    Subclasses set ``method`` (for warnings) and may override ``adversarial`` (the term behind
    the ``adv`` weight), ``init_generator``, ``sample_in_train_mode`` or
    ``adversary_in_train_mode``.
    """

    #: the method's name in warnings
    method = "generative"
    #: DFAD samples with the generator's BatchNorm on batch statistics; the DataFree methods
    #: use the running statistics (eval mode), so the student sees what the generator learned
    #: on average rather than one batch's normalisation.
    sample_in_train_mode = False
    #: DFAD's reference also keeps the student in train mode while it plays the generator's
    #: adversary; the DataFree methods switch it to eval mode for that step.
    adversary_in_train_mode = False

    def __init__(self, ctx: SynthesisContext, options: GenerativeOptions) -> None:
        super().__init__(ctx, options)
        if options.g_steps < 1:
            raise UsageError(f"{self.method}: g_steps must be at least 1, got {options.g_steps}")
        weights = self.term_weights(options)
        if not any(weights.values()):
            raise UsageError(
                f"{self.method}: every generator loss weight ({', '.join(TERMS)}) is 0, so the "
                "generator would never learn; give at least one a non-zero weight."
            )
        self.weights = {name: w for name, w in weights.items() if w}
        self.generator = build_generator(options, ctx.channels, ctx.image_size).to(ctx.device)
        self.init_generator(self.generator)
        # One generator plays the game however many processes run it: every process starts from
        # process 0's weights and steps on gradients averaged over all their batches, so two
        # processes of batch b play the game of one process of batch 2b. Any re-initialisation
        # belongs in init_generator, before this: after it, the processes would diverge.
        self.shared = ctx.num_processes > 1
        if self.shared:
            broadcast(list(self.generator.state_dict().values()), from_process=0)
        self.optimizer = torch.optim.Adam(
            self.generator.parameters(), lr=options.lr_g, betas=(options.beta1, options.beta2)
        )
        self.scheduler = (
            make_scheduler(
                self.optimizer,
                options.schedule,
                options.epochs - options.warmup,
                options.milestones,
                options.gamma,
            )
            if options.schedule_g
            else None
        )
        # GeneratorA standardises its own output and GeneratorB's Tanh matches data normalised
        # to [-1, 1]; the others make [0, 1] pixels to normalise.
        self.raw_output = isinstance(self.generator, GeneratorA | GeneratorB)
        self.bn_hooks: list[Any] = []
        if options.bn:
            warn_without_batchnorm(ctx.teacher, self.method, options.bn)
            self.bn_hooks = attach_bn_hooks(ctx.teacher)
            if not self.bn_hooks:
                del self.weights["bn"]
                if not self.weights:
                    raise UsageError(
                        f"{self.method}: the BN-statistics term was the only one weighted and the "
                        "teacher has no BatchNorm; nothing is left to train the generator on."
                    )

    # --- pieces subclasses may change ----------------------------------------------------

    def init_generator(self, generator: Generator) -> None:
        """Initialise the new generator's weights (default: as built); runs before the processes
        of a multi-process run share process 0's weights."""

    def term_weights(self, options: GenerativeOptions) -> dict[str, float]:
        """The weight of each generator loss term; a subclass adds the terms of its own."""
        return {name: getattr(options, name) for name in TERMS}

    def teacher_terms(self, t_logits: Tensor) -> dict[str, Tensor]:
        """Terms of a subclass computed from the teacher's logits on the generator's batch."""
        return {}

    def adversarial(self, s_logits: Tensor, t_logits: Tensor) -> Tensor:
        """The term the ``adv`` weight multiplies: −KL(t‖s; T=1), as in ZSKT and DFQ."""
        return adversarial_kl(s_logits, t_logits, T=1.0)

    def generator_terms(self, x: Tensor) -> dict[str, Tensor]:
        """Each weighted loss term on the generator's batch ``x`` (normalised, in the graph)."""
        need_features = "act" in self.weights
        with self.ctx.autocast():
            out = self.teacher(x, return_features=True) if need_features else self.teacher(x)
        t_logits, t_features = out if need_features else (out, None)
        t_logits = t_logits.float()
        terms = {k: v for k, v in self.teacher_terms(t_logits).items() if k in self.weights}
        if "oh" in self.weights:
            terms["oh"] = one_hot_ce(t_logits)
        if "act" in self.weights:
            terms["act"] = activation_l1(t_features.float())
        if "balance" in self.weights:
            terms["balance"] = class_balance(t_logits)
        if "bn" in self.weights:
            terms["bn"] = bn_statistics(self.bn_hooks)
        if "adv" in self.weights:
            terms["adv"] = self.adversarial(self.ctx.student_logits(x), t_logits)
        return terms

    # --- the Synthesizer interface ---------------------------------------------------------

    def synthesize(self) -> SynthesisResult:
        self.student.train(self.adversary_in_train_mode)
        self.generator.train()
        params = list(self.generator.parameters())
        for _ in range(self.options.g_steps):
            x = self._generate(self.options.syn_batch)
            terms = self.generator_terms(x)
            loss = sum(self.weights[name] * value for name, value in terms.items())
            self.optimizer.zero_grad(set_to_none=True)
            # Only the generator learns here: keep gradients out of the student's parameters.
            loss.backward(inputs=params)
            if self.shared:
                self._average([p.grad for p in params])
            if self.options.g_grad_clip:
                torch.nn.utils.clip_grad_norm_(params, self.options.g_grad_clip)
            self.optimizer.step()
        if self.shared:
            self._average_batchnorm()
        logs = {f"g_{name}": value.item() for name, value in terms.items()}
        return SynthesisResult(self._display(x.detach()), {"loss_g": loss.item(), **logs})

    @torch.no_grad()
    def sample(self) -> Tensor:
        self.generator.train(self.sample_in_train_mode)
        x = self._generate(self.options.batch_size)
        if self.shared and self.sample_in_train_mode:  # train mode moved the running statistics
            self._average_batchnorm()
        return x

    def end_epoch(self, epoch: int) -> dict[str, float]:
        """With ``schedule_g``, the generator's rate takes the student's step (after warm-up,
        like the student's)."""
        if self.scheduler is None:
            return {}
        if epoch >= self.options.warmup:
            self.scheduler.step()
        return {"lr_g": self.optimizer.param_groups[0]["lr"]}

    def state_dict(self) -> dict[str, Any]:
        state = {"generator": self.generator.state_dict(), "optimizer": self.optimizer.state_dict()}
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.load_state_dict(state["generator"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])

    # --- helpers ---------------------------------------------------------------------------

    def _generate(self, n: int) -> Tensor:
        """A normalised batch from fresh latents. The latents are drawn on the CPU generator,
        whose state the loop checkpoints, so a resumed run draws the same ones on any device."""
        z = torch.randn(n, self.options.nz).to(self.ctx.device)
        # The generator is most of a generative method's compute: it runs under mixed precision
        # too, and hands float32 on so the loss terms and the pool see full precision.
        with self.ctx.autocast():
            out = self.generator(z).float()
        return out if self.raw_output else self.ctx.normalize(out)

    def _average_batchnorm(self) -> None:
        """Each process's BatchNorm saw its own batches: one generator holds their mean."""
        self._average([b for b in self.generator.buffers() if b.is_floating_point()])

    @staticmethod
    def _average(tensors: list[Tensor]) -> None:
        """Replace each tensor, in place, by its mean over the processes."""
        for tensor, mean in zip(tensors, reduce(tensors, reduction="mean"), strict=True):
            tensor.copy_(mean)

    def _display(self, x: Tensor) -> Tensor:
        """The batch as [0, 1] pixels: how the teacher, which expects normalised input, sees it."""
        return self.ctx.denormalize(x)
