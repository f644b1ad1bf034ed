"""NAYER's options; the defaults are the reference's `nayer_100.sh` for CIFAR-100
(docs/methods/nayer.md#loop-and-hyperparameters). Torch-free: `dfkd list-methods --options`
reads it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dfkd.api import PooledInversionOptions, UsageError, option

#: where the label embeddings come from (see the option's help)
EmbeddingSource = Literal["auto", "text", "random"]


@dataclass
class NayerOptions(PooledInversionOptions):
    epochs: int = option(120, "Training epochs, warm-up included (NAYER-100: 120).")
    ep_steps: int = option(400, "Student steps per epoch.")
    kd_steps: int = option(400, "Student steps after each synthesis round.")
    g_steps: int = option(40, "Generator steps per loop (CIFAR-10 30, CIFAR-100 40).")
    g_loops: int = option(2, "Loops per synthesis round after warm-up; each adds a batch.", ge=1)
    gwp_loops: int = option(10, "Loops per synthesis round during warm-up.", ge=1)
    g_life: int = option(
        10,
        "Epochs a generator lives: it is re-created when epoch or epoch − warmup divides by it.",
        ge=1,
    )
    batch_size: int = option(512, "Student batch size, drawn from the image pool.")
    synthesis_batch_size: int = option(400, "Images per loop (0: batch_size).")
    lr_g: float = option(4e-3, "Adam learning rate of the generator (a new Adam every loop).", gt=0)
    ngf: int = option(64, "Generator width (its trunk's projection has 2*ngf channels).")
    le_emb_size: int = option(1000, "Output size of each noisy layer (the trunk's input).", ge=1)
    label_embeddings: str | None = option(
        None,
        "Label-embedding file (safetensors, `dfkd nayer embed-labels`); default: "
        "<teacher weights stem>.labels.safetensors beside the teacher, if it exists.",
    )
    embeddings: EmbeddingSource = option(
        "auto",
        "Label embeddings: text (the paper's: a file is required, else the run is refused; the "
        "CIFAR presets), random (fixed random vectors, le_size and embedding_seed, even where a "
        "file exists), or auto (the file if there is one, else random, said in one line).",
    )
    le_size: int = option(
        512,
        "Size of the fixed random per-class embedding used when no embedding file exists.",
        ge=1,
    )
    embedding_seed: int = option(0, "Seed of that fixed random embedding.")

    def check(self) -> None:
        """The shared rules, one source of label embeddings, and a synthesis batch the
        generator's BatchNorm can take."""
        super().check()
        if self.embeddings == "random" and self.label_embeddings:
            raise UsageError(
                f"nayer: embeddings=random ignores label_embeddings={self.label_embeddings}; drop "
                "one of the two."
            )
        if self.syn_batch < 2:
            raise UsageError(
                f"Option 'synthesis_batch_size' ({self.syn_batch}) must be at least 2: the "
                "generator's BatchNorm needs two images per loop."
            )
