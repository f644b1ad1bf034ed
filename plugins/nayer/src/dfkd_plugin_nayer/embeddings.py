"""Label-text embeddings (docs/methods/nayer.md#label-text-embeddings): one vector per class from
a text encoder, computed once per teacher and stored beside its weights.

The encoder is anything with ``encode(list[str]) -> Tensor`` (one row per text): the paper's CLIP
ViT-B/32 text tower through ``open_clip`` or ``transformers`` when one is installed, or any
object a ``module:attribute`` names.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from dfkd.api import DfkdError, UsageError, write_atomic

#: the reference's prompt (its paper reports "a photo of" slightly better)
PROMPT = "a image of {}"
SUFFIX = ".labels.safetensors"
INSTALL = (
    "needs a CLIP text encoder: pip install open_clip_torch (or transformers), or pass "
    "--encoder module:factory"
)


@runtime_checkable
class TextEncoder(Protocol):
    def encode(self, texts: list[str]) -> Tensor:
        """One embedding row per text, shape (len(texts), D)."""
        ...


def default_embeddings_path(teacher_weights: str | Path) -> Path:
    """``<teacher weights stem>.labels.safetensors`` in the teacher's folder."""
    path = Path(teacher_weights)
    return path.with_name(path.stem + SUFFIX)


def compute_label_embeddings(
    class_names: Sequence[str], encoder: TextEncoder, prompt: str = PROMPT
) -> Tensor:
    """``encoder`` on ``prompt`` filled with each class name: a float32 (K, D) CPU tensor."""
    if not class_names:
        raise UsageError("the dataset has no class names to embed.")
    texts = [prompt.format(name) for name in class_names]
    with torch.no_grad():
        rows = encoder.encode(texts)
    if not isinstance(rows, Tensor) or rows.dim() != 2 or rows.shape[0] != len(texts):
        shape = tuple(getattr(rows, "shape", ()))
        raise DfkdError(f"the text encoder returned {shape} for {len(texts)} texts, not (K, D).")
    return rows.detach().to("cpu", torch.float32).contiguous()


def save_label_embeddings(
    path: str | Path, embeddings: Tensor, class_names: Sequence[str], **meta: str
) -> None:
    """Write the (K, D) embeddings as safetensors (key ``embeddings``), atomically, with the class
    names and ``meta`` (prompt, encoder) in the file's metadata."""
    from safetensors.torch import save_file

    metadata = {"classes": json.dumps(list(class_names)), **{k: str(v) for k, v in meta.items()}}
    tensors = {"embeddings": embeddings.detach().to("cpu", torch.float32).contiguous()}
    write_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def load_label_embeddings(path: str | Path, num_classes: int | None = None) -> Tensor:
    """The (K, D) embeddings of ``path``; a file for another number of classes is refused."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"label embeddings {path} do not exist.")
    tensors = load_file(str(path))
    rows = tensors.get("embeddings")
    if rows is None or rows.dim() != 2:
        raise UsageError(f"{path} holds no (K, D) 'embeddings' tensor.")
    if num_classes is not None and rows.shape[0] != num_classes:
        raise UsageError(f"{path} embeds {rows.shape[0]} classes; the teacher has {num_classes}.")
    return rows.float()


def load_encoder(spec: str = "clip") -> TextEncoder:
    """``clip``: CLIP ViT-B/32's text tower (open_clip first, then transformers); otherwise a
    ``module:attribute`` naming an encoder, or a class or function that makes one."""
    if spec != "clip":
        module_name, _, attribute = spec.partition(":")
        if not attribute:
            raise UsageError(f"--encoder takes 'clip' or module:attribute, not '{spec}'.")
        try:
            found = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as exc:
            raise UsageError(f"--encoder {spec}: {exc}") from None
        # a class or a factory function is called; an encoder object is used as it is
        make = isinstance(found, type) or not isinstance(found, TextEncoder)
        encoder = found() if make and callable(found) else found
        if not isinstance(encoder, TextEncoder):
            raise UsageError(f"--encoder {spec} has no encode(list[str]) method.")
        return encoder
    if importlib.util.find_spec("open_clip") is not None:
        return _OpenClip()
    if importlib.util.find_spec("transformers") is not None:
        return _TransformersClip()
    raise DfkdError(f"dfkd nayer embed-labels {INSTALL}.")


class _OpenClip:
    """CLIP ViT-B/32 (OpenAI weights) through open_clip."""

    name = "open_clip ViT-B-32 openai"

    def __init__(self) -> None:
        import open_clip

        try:
            self.model, _, _ = open_clip.create_model_and_transforms(
                "ViT-B-32", pretrained="openai"
            )
        except Exception as exc:  # weights missing and no network, a corrupt cache, ...
            raise DfkdError(f"open_clip could not load ViT-B-32 (openai) weights: {exc}") from None
        self.model.eval()
        self.tokenizer = open_clip.get_tokenizer("ViT-B-32")

    def encode(self, texts: list[str]) -> Tensor:
        return self.model.encode_text(self.tokenizer(texts)).float()


class _TransformersClip:
    """CLIP ViT-B/32 through transformers (openai/clip-vit-base-patch32)."""

    name = "transformers openai/clip-vit-base-patch32"

    def __init__(self) -> None:
        from transformers import CLIPModel, CLIPTokenizer

        repo = "openai/clip-vit-base-patch32"
        try:
            self.model = CLIPModel.from_pretrained(repo).eval()
            self.tokenizer = CLIPTokenizer.from_pretrained(repo)
        except Exception as exc:
            raise DfkdError(f"transformers could not load {repo}: {exc}") from None

    def encode(self, texts: list[str]) -> Tensor:
        tokens = self.tokenizer(texts, padding=True, return_tensors="pt")
        return self.model.get_text_features(**tokens).float()
