"""Label-text embeddings (docs/methods/nayer.md#label-text-embeddings): one vector per class from
a text encoder, computed once per teacher and stored beside its weights.

The encoder is anything with ``encode(list[str]) -> Tensor`` (one row per text): the paper's CLIP
ViT-B/32 text tower through ``open_clip`` or ``transformers`` when one is installed, or any
object a ``module:attribute`` names. Finished embeddings (the reference's ``{dataset}_le.pickle``)
are imported instead of encoded.
"""

from __future__ import annotations

import collections
import importlib
import importlib.util
import io
import json
import pickle
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

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
    # as the reference's label_embedding.py: "aquarium_fish" is embedded as "aquarium fish"
    texts = [prompt.format(name.replace("_", " ").replace("-", " ")) for name in class_names]
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


def describe_label_embeddings(path: str | Path) -> str:
    """How a run names the embedding file it read (in its metrics rows): the path, and the encoder
    that made the file or the file it was imported from, as its metadata says."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    if "encoder" in meta:
        return f"file:{path} (encoder: {meta['encoder']})"
    if "imported" in meta:
        return f"file:{path} (imported from {meta['imported']})"
    return f"file:{path}"


def import_label_embeddings(path: str | Path, num_classes: int) -> Tensor:
    """The (K, D) embeddings of a file made elsewhere, one row per class in the dataset's order:
    safetensors (an ``embeddings`` tensor, or its only tensor), ``torch.save`` of a tensor, or a
    pickled tensor such as the reference's ``cifar10_le.pickle``. Nothing in the file is run."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--from {path} does not exist.")
    try:
        found = _read_tensors(path)
    except Exception as exc:  # noqa: BLE001 - any unreadable file: one line, not a trace
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise UsageError(
            f"--from {path} is not a tensor file (safetensors, torch.save or a pickled tensor): "
            f"{reason}"
        ) from None
    if isinstance(found, dict):
        tensors = [v for v in found.values() if isinstance(v, Tensor)]
        found = found.get("embeddings", tensors[0] if len(tensors) == 1 else found)
    if not isinstance(found, Tensor) or found.dim() != 2 or not found.is_floating_point():
        what = f"a {tuple(found.shape)} tensor" if isinstance(found, Tensor) else "no one tensor"
        raise UsageError(f"--from {path} holds {what}, not one (classes, size) float tensor.")
    if found.shape[0] != num_classes:
        raise UsageError(
            f"--from {path} embeds {found.shape[0]} classes; the dataset has {num_classes}."
        )
    if not torch.isfinite(found).all():
        raise UsageError(f"--from {path} has NaN or infinite values.")
    return found.detach().to("cpu", torch.float32).contiguous()


def _read_tensors(path: Path) -> Any:
    """A safetensors file's tensors, or what a ``torch.save`` or pickle file holds."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    if zipfile.is_zipfile(path):  # torch.save's format
        return torch.load(path, map_location="cpu", weights_only=True)
    with path.open("rb") as f:  # pickle.dump's, as the reference wrote its files
        return _TensorUnpickler(f).load()


def _storage_from_bytes(data: bytes) -> Any:
    """A pickled tensor's storage: a small ``torch.save`` file, read weights-only onto the CPU
    (the reference's files hold CUDA storages; torch's own loader would run any code in them)."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


#: the only callables a pickled tensor may name: they rebuild it around a storage read weights-only
_TENSOR_PICKLE = {
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
    ("collections", "OrderedDict"): collections.OrderedDict,
}


class _TensorUnpickler(pickle.Unpickler):
    """Unpickles a ``pickle.dump(tensor)``, which ``torch.load`` cannot read, and nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        found = _TENSOR_PICKLE.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which is not part of a tensor")
        return found


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
