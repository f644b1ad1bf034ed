"""NAYER's options; the defaults are the reference's `nayer_100.sh` for CIFAR-100
(docs/methods/nayer.md#loop-and-hyperparameters). Torch-free: `dfkd list-methods --options`
reads it."""

from __future__ import annotations

from dataclasses import dataclass

from dfkd.api import PooledInversionOptions, option


@dataclass
class NayerOptions(PooledInversionOptions):
    epochs: int = option(120, "Training epochs, warm-up included (NAYER-100: 120).")
    ep_steps: int = option(400, "Student steps per epoch.")
    kd_steps: int = option(400, "Student steps after each synthesis round.")
    g_steps: int = option(40, "Generator steps per loop (CIFAR-10 30, CIFAR-100 40).")
    g_loops: int = option(2, "Loops per synthesis round after warm-up; each adds a batch.")
    gwp_loops: int = option(10, "Loops per synthesis round during warm-up.")
    g_life: int = option(
        10, "Epochs a generator lives: it is re-created when epoch or epoch − warmup divides by it."
    )
    batch_size: int = option(512, "Student batch size, drawn from the image pool.")
    synthesis_batch_size: int = option(400, "Images per loop (0: batch_size).")
    lr_g: float = option(4e-3, "Adam learning rate of the generator (a new Adam every loop).")
    ngf: int = option(64, "Generator width (its trunk's projection has 2*ngf channels).")
    le_emb_size: int = option(1000, "Output size of each noisy layer (the trunk's input).")
    label_embeddings: str | None = option(
        None,
        "Label-embedding file (safetensors, `dfkd nayer embed-labels`); default: "
        "<teacher weights stem>.labels.safetensors beside the teacher, if it exists.",
    )
    le_size: int = option(
        512, "Size of the fixed random per-class embedding used when no embedding file exists."
    )
    embedding_seed: int = option(0, "Seed of that fixed random embedding.")
