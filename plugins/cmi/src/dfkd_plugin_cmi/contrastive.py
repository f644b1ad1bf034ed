"""CMI's contrastive term (docs/methods/cmi.md#objective): each synthesized image's local view
should be recognised among the global views of the batch and of earlier batches. Pushing an image's
teacher features away from every other image's is what keeps the inverted set diverse.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MLPHead(nn.Module):
    """Projection head: Linear(D, D) → ReLU → Linear(D, out_dim) → L2 normalisation per row."""

    def __init__(self, dim: int, out_dim: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, out_dim))

    def forward(self, h: Tensor) -> Tensor:
        return F.normalize(self.net(h), dim=1)


def contrastive_loss(
    head: nn.Module,
    h_local: Tensor,
    h_global: Tensor,
    neg_local: Tensor | None = None,
    neg_global: Tensor | None = None,
    T: float = 0.1,
) -> Tensor:
    """L_cr for a batch of B feature pairs and N' cached pairs from the memory bank.

    u = head([h_l; h_l′]), v = head([h_g; h_g′]); logits = u·stopgrad(v)ᵀ / T, (B+N')×(B+N'),
    and row i's label is i. The cross-entropy is averaged over the B current rows and over the
    N' cached rows separately and the two means are added, so that thousands of cached rows do
    not dilute the generator's gradient, which only the current rows carry. Without negatives
    it is the plain mean over the batch.
    """
    if (neg_local is None) != (neg_global is None):
        raise ValueError("pass both halves of the cached negatives, or neither")
    has_negatives = neg_local is not None and neg_local.shape[0] > 0
    if has_negatives:
        h_local = torch.cat([h_local, neg_local.to(h_local)])
        h_global = torch.cat([h_global, neg_global.to(h_global)])
    u = head(h_local)
    v = head(h_global).detach()
    logits = u @ v.T / T
    ce = F.cross_entropy(
        logits, torch.arange(logits.shape[0], device=logits.device), reduction="none"
    )
    if not has_negatives:
        return ce.mean()
    batch = logits.shape[0] - neg_local.shape[0]
    return ce[:batch].mean() + ce[batch:].mean()
