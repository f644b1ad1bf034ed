"""Model weights as ``*.safetensors`` plus a JSON sidecar that says what they are."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dfkd import __version__
from dfkd.errors import UsageError
from dfkd.fileio import write_atomic, write_json
from dfkd.options import fits_type


def sidecar_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def save_weights(model: Any, path: str | Path, meta: dict[str, Any]) -> None:
    """Weights, then sidecar, each written atomically (the sidecar last marks completeness)."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    write_atomic(path, lambda tmp: save_file(state, str(tmp)))
    write_json(sidecar_path(path), {**meta, "dfkd_version": __version__})


#: the sidecar fields dfkd reads, their types and how a message names them (null is taken as
#: absent): checked where a sidecar is read, so that a field of another type is one line naming
#: it, not a traceback or a wrong message where it is used
META_TYPES: dict[str, tuple[Any, str]] = {
    "model": (str, "a model name"),
    "dataset": (str, "a dataset name"),
    "task": (str, "a task name"),
    "run": (str, "a path"),
    "num_classes": (int, "a whole number"),
    "channels": (int, "a whole number"),
    "input_size": (int, "a whole number"),
    "image_size": (int, "a whole number"),
    "mean": (list[float], "a list of numbers"),
    "std": (list[float], "a list of numbers"),
    "classes": (list[str], "a list of names"),
    "quantized": (str, "a --quantize scheme"),
}


def read_meta(path: str | Path) -> dict[str, Any]:
    side = sidecar_path(path)
    if not side.exists():
        return {}
    try:
        meta = json.loads(side.read_text(errors="replace"))
    except json.JSONDecodeError:
        meta = None
    fix = "fix it, or delete it to load the weights without their checks."
    if not isinstance(meta, dict):
        raise UsageError(f"{side}, the description of {Path(path).name}, is damaged; {fix}")
    for key, (hint, kind) in META_TYPES.items():
        value = meta.get(key)
        if value is not None and not fits_type(value, hint):
            raise UsageError(
                f"{side}, the description of {Path(path).name}, gives {key} as "
                f"{json.dumps(value)}, not {kind}; {fix}"
            )
    return meta


def load_state_file(path: str | Path) -> dict[str, Any]:
    """A state dict from safetensors or (weights only, never arbitrary pickles) a torch file."""
    import torch

    path = Path(path)
    if not path.exists():
        raise UsageError(f"Weights file {path} does not exist.")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise UsageError(f"Cannot read {path} as safetensors: {exc}.") from exc
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means an unusable file
        raise UsageError(f"Cannot read {path} as a weights-only torch checkpoint: {exc}") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UsageError(f"{path} does not hold a state dict.")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_weights(model: Any, path: str | Path) -> Any:
    """Load weights strictly, naming the missing and unexpected keys when they don't fit.
    Weights trained fake-quantised (their sidecar's ``quantized``) make ``model`` compute as
    they were trained, rounding included (dfkd/models/fake_quant.py)."""
    state = load_state_file(path)
    scheme = read_meta(path).get("quantized")
    if scheme:
        from dfkd.models.fake_quant import SCHEMES, fake_quantize, is_fake_quantized

        if scheme not in SCHEMES:
            raise UsageError(
                f"{sidecar_path(path)} gives quantized as {scheme!r}, not one of "
                f"{', '.join(SCHEMES)}."
            )
        if not is_fake_quantized(model):
            fake_quantize(model, scheme)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong_shape = [
        f"{k} {tuple(state[k].shape)}≠{tuple(v.shape)}"
        for k, v in own.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or wrong_shape:
        parts = []
        if missing:
            parts.append(f"missing keys: {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_few(unexpected)}")
        if wrong_shape:
            parts.append(f"wrong shapes: {_few(wrong_shape)}")
        kind = type(model).__name__
        raise UsageError(f"Weights {path} do not fit {kind}: " + "; ".join(parts) + ".")
    model.load_state_dict(state)
    return model


def _few(items: list[str], limit: int = 5) -> str:
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more
