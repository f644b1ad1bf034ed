"""CMI's options: the loop's budget with the reference's scratch_cmi values as defaults, and every
coefficient of the synthesis (docs/methods/cmi.md). Torch-free: `dfkd list-methods --options`
reads it.
"""

from __future__ import annotations

from dataclasses import dataclass

from dfkd.api import DataFreeOptions, UsageError, option


@dataclass
class CMIOptions(DataFreeOptions):
    epochs: int = option(200, "Training epochs; test accuracy is measured after each.")
    ep_steps: int = option(400, "Student steps per epoch.")
    kd_steps: int = option(400, "Student steps after each synthesis round.")
    g_steps: int = option(200, "Generator iterations per synthesis round.")
    batch_size: int = option(128, "Student batch size, drawn from the image pool.")
    synthesis_batch_size: int = option(256, "Images added to the pool per synthesis round.")
    T: float = option(20.0, "Temperature of the student's KD loss.")
    bn: float = option(1.0, "Weight of the BN-statistics term (summed over all BN layers).", ge=0)
    oh: float = option(1.0, "Weight of the teacher's cross-entropy on the sampled targets.", ge=0)
    adv: float = option(
        0.5,
        "Weight of the decision-adversarial term: -KL(t||s) on samples the student agrees on.",
        ge=0,
    )
    cr: float = option(
        0.8, "Weight of the contrastive loss between the global and local views.", ge=0
    )
    cr_T: float = option(0.1, "Temperature of the contrastive logits.")
    head_dim: int = option(256, "Output size of the projection head.", ge=1)
    bank_size: int = option(40960, "Rows of the feature memory bank (a ring buffer; never reset).")
    n_negatives: int = option(4096, "Cached feature rows drawn from the bank as negatives.")
    lr_g: float = option(
        1e-3, "Adam learning rate of the generator, its latents and the head.", gt=0
    )
    nz: int = option(256, "Latent size of the generator.", ge=1)
    ngf: int = option(64, "Generator width (its projection has 2*ngf channels).", ge=1)
    pad: int = option(4, "Padding of the random crops (global view and student batches).")
    flip: bool = option(True, "Random horizontal flips in the views and the student batches.")
    local_scale: tuple[float, float] = option(
        (0.25, 1.0), "Area range of the local view's random resized crop."
    )
    init_images: str | None = option(
        None,
        "Dataset whose train images start the pool, e.g. folder:PATH of pre-inverted images "
        "(the reference's --cmi_init); read again on resume, never copied into the run.",
    )

    def check(self) -> None:
        """Reject values that would fail deep inside a run, or silently do nothing, before the
        run directory is written."""
        super().check()
        low, high = self.local_scale  # two numbers: build_options checks a tuple's length
        problems = [
            (
                self.syn_batch < 2,
                "the contrastive loss needs a synthesis batch of at least 2 images",
            ),
            (self.bank_size < 1, f"bank_size must be at least 1, got {self.bank_size}"),
            (self.n_negatives < 0, f"n_negatives must be >= 0, got {self.n_negatives}"),
            (self.cr_T <= 0, f"cr_T must be positive, got {self.cr_T}"),
            (self.pad < 0, f"pad must be >= 0, got {self.pad}"),
            (
                not 0 < low <= high <= 1,
                f"local_scale must satisfy 0 < low <= high <= 1, got {self.local_scale}",
            ),
        ]
        for bad, message in problems:
            if bad:
                raise UsageError(f"cmi: {message}.")
