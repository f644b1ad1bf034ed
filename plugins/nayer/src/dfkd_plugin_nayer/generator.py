"""NAYER's noisy-layer generator (docs/methods/nayer.md#objective).

A class's label embedding e_y is fixed; BatchNorm1d standardises the batch of them; the batch is
cut into consecutive chunks of K rows (K classes) and chunk i goes through its own linear "noisy
layer", re-initialised at random before every loop, so the same labels give new inputs each
time; the outputs feed the ordinary generator trunk (Linear → two upsamplings → image).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from dfkd.api import Generator


class NoisyLayerGenerator(nn.Module):
    """Label embeddings (K, D) → BatchNorm1d(D) → per-chunk Linear(D, le_emb_size) → trunk.

    ``batch`` is the largest batch it takes: it has ⌈batch / K⌉ noisy layers. The embeddings are
    a non-persistent buffer: the synthesizer keeps them (and checkpoints them) itself.
    """

    def __init__(
        self,
        embeddings: Tensor,
        batch: int,
        le_emb_size: int = 1000,
        ngf: int = 64,
        img_size: int = 32,
        channels: int = 3,
    ) -> None:
        super().__init__()
        if embeddings.dim() != 2:
            raise ValueError(f"label embeddings must be (K, D), got {tuple(embeddings.shape)}")
        self.num_classes, dim = embeddings.shape
        self.register_buffer("embeddings", embeddings.detach().float().clone(), persistent=False)
        self.norm = nn.BatchNorm1d(dim)
        count = math.ceil(batch / self.num_classes)
        self.noisy = nn.ModuleList(nn.Linear(dim, le_emb_size) for _ in range(count))
        self.trunk = Generator(le_emb_size, ngf, img_size, channels)

    @torch.no_grad()
    def reset_noisy_layers(self, generator: torch.Generator | None = None) -> None:
        """Every noisy layer: weights ~ N(0, 1), biases 0."""
        for layer in self.noisy:
            layer.weight.normal_(0.0, 1.0, generator=generator)
            layer.bias.zero_()

    def noise(self, targets: Tensor) -> Tensor:
        """The trunk's input for ``targets``: chunk i of K rows through noisy layer i."""
        e = self.norm(self.embeddings[targets])
        chunks = e.split(self.num_classes)
        if len(chunks) > len(self.noisy):
            raise ValueError(
                f"a batch of {targets.shape[0]} needs {len(chunks)} noisy layers; this generator "
                f"has {len(self.noisy)}"
            )
        return torch.cat([layer(chunk) for layer, chunk in zip(self.noisy, chunks, strict=False)])

    def forward(self, targets: Tensor) -> Tensor:
        return self.trunk(self.noise(targets))
