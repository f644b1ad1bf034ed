"""The numerics behind activation records: streamed per-class moments, a Cholesky factor that
survives rank-deficient covariances, and the spectrum of an activation graph.
"""

from __future__ import annotations

import torch
from torch import Tensor


class ClassMoments:
    """Per-class count, mean, sum of squared deviations and (optionally) cross-deviations.

    Batches are merged with Chan et al.'s pairwise update in float64: one pass over the data, no
    stored activations, and none of the cancellation that plain sums of squares suffer when the
    mean is large against the spread.
    """

    def __init__(self, num_classes: int, dim: int, covariance: bool, device: torch.device) -> None:
        kw = {"dtype": torch.float64, "device": device}
        self.count = torch.zeros(num_classes, **kw)
        self.mean = torch.zeros(num_classes, dim, **kw)
        self.m2 = torch.zeros(num_classes, dim, **kw)
        self.cross = torch.zeros(num_classes, dim, dim, **kw) if covariance else None

    def update(self, values: Tensor, labels: Tensor) -> None:
        """Fold in a batch: ``values`` (B, dim), ``labels`` (B,)."""
        values = values.detach().to(torch.float64)
        for c in labels.unique().tolist():
            batch = values[labels == c]
            n_b = batch.shape[0]
            mean_b = batch.mean(0)
            dev = batch - mean_b
            n_a = self.count[c]
            total = n_a + n_b
            delta = mean_b - self.mean[c]
            weight = n_a * n_b / total
            self.mean[c] += delta * (n_b / total)
            self.m2[c] += dev.square().sum(0) + delta.square() * weight
            if self.cross is not None:
                self.cross[c] += dev.T @ dev + torch.outer(delta, delta) * weight
            self.count[c] = total

    def _dof(self) -> Tensor:
        return (self.count - 1).clamp_min(1)

    def std(self) -> Tensor:
        """Unbiased (n − 1) standard deviation per class, as ``torch.std``."""
        return (self.m2 / self._dof()[:, None]).sqrt()

    def covariance(self) -> Tensor:
        """Unbiased covariance per class, as ``torch.cov``."""
        if self.cross is None:
            raise ValueError("these moments were streamed without covariance")
        return self.cross / self._dof()[:, None, None]


def cholesky_factor(cov: Tensor) -> Tensor:
    """Lower-triangular L with L Lᵀ ≈ ``cov``.

    Pre-activation covariances are often singular (units that never vary, more units than
    examples of a class), so a growing diagonal jitter, relative to the mean variance, is added
    until the factorisation succeeds; the reference instead gave up on covariance for the layer.
    """
    eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
    scale = cov.diagonal().mean().clamp_min(1e-12)
    for relative in (0.0, 1e-9, 1e-7, 1e-5, 1e-3):
        factor, info = torch.linalg.cholesky_ex(cov + relative * scale * eye)
        if int(info) == 0:
            return factor
    return torch.linalg.cholesky(cov + 1e-1 * scale * eye)


def graph_spectrum(mean: Tensor, cov: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The k lowest-frequency graph-Fourier modes of a class's co-activation graph.

    Nodes are units, edge weights the absolute correlations of their pre-activations over the
    class's examples; L = I − D^(-1/2) W D^(-1/2) is its normalised Laplacian. Returns the
    eigenvectors U (N, k) and eigenvalues (k,) of the k smallest eigenvalues, and the mean (k,)
    and Cholesky factor (k, k) of the coefficients Uᵀa, which follow exactly from the moments of
    a because the transform is linear.
    """
    std = cov.diagonal().clamp_min(0).sqrt()
    weights = (cov / (std[:, None] * std[None, :]).clamp_min(1e-12)).abs()
    weights.fill_diagonal_(0)
    inv_sqrt = weights.sum(1).clamp_min(1e-12).rsqrt()
    eye = torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
    laplacian = eye - inv_sqrt[:, None] * weights * inv_sqrt[None, :]
    eigvals, eigvecs = torch.linalg.eigh(laplacian)
    modes = eigvecs[:, :k]
    coef_cov = modes.T @ cov @ modes
    return modes, eigvals[:k], modes.T @ mean, cholesky_factor((coef_cov + coef_cov.T) / 2)
