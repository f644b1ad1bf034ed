"""Each round: start from noise, take a few Adam steps on the pixels so the teacher calls each
image the class it was given (a balanced draw), and let the student learn on that batch."""

from __future__ import annotations

from typing import Any

import torch

from dfkd.api import SynthesisContext, SynthesisResult, Synthesizer, one_hot_ce


class NoiseSynthesizer(Synthesizer):
    def __init__(self, ctx: SynthesisContext, options: Any) -> None:
        super().__init__(ctx, options)
        # A private stream for every draw, saved in state_dict: a resumed run draws the same.
        self.rng = ctx.rng(salt=1, device="cpu")
        self.batch: torch.Tensor | None = None

    def synthesize(self) -> SynthesisResult:
        o, ctx = self.options, self.ctx
        shape = (o.syn_batch, ctx.channels, ctx.image_size, ctx.image_size)
        pixels = torch.rand(shape, generator=self.rng).to(ctx.device).requires_grad_(True)
        targets = (torch.arange(o.syn_batch) % ctx.num_classes).to(ctx.device)
        optimizer = torch.optim.Adam([pixels], lr=o.lr_g)
        for _ in range(o.g_steps):
            loss = one_hot_ce(self.teacher_logits(ctx.normalize(pixels)).float(), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                pixels.clamp_(0, 1)
        self.batch = pixels.detach()
        return SynthesisResult(self.batch, {"loss_g": loss.item()})

    def sample(self) -> torch.Tensor:
        return self.ctx.normalize(self.batch)

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.get_state(), "batch": self.batch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.set_state(state["rng"])
        self.batch = state["batch"]
