"""`dfkd export`: a trained student as an ONNX or TorchScript file a runtime loads without dfkd.

The model is rebuilt from the weights' sidecar (name, classes, channels) through the model
registry, exported, and then run side by side with the PyTorch model on seeded batches of
other sizes than the one it was traced with: that both checks the export and shows that the
batch dimension really is free. Only a file that passed is written, next to a JSON sidecar that
tells a runtime what to feed it.

By default the exported graph is the student as trained: it takes normalised input,
``(pixels - mean) / std`` with the sidecar's mean and std, at the model's input size.
``include_normalization`` bakes that normalisation into the graph, so a runtime feeds pixels
in [0, 1]; resizing to the input size stays the runtime's job (training resized bilinearly,
with antialiasing), since exporters do not carry antialiased resizing reliably.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dfkd import __version__
from dfkd.data.pipeline import normalize
from dfkd.errors import DfkdError, UsageError
from dfkd.fileio import write_atomic, write_json
from dfkd.plugins import Plugins, get_plugins
from dfkd.training.runs import RunDir, check_output
from dfkd.training.tasks import task_of
from dfkd.weights import load_weights, read_meta, sidecar_path

#: file suffix of each format
FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
#: a run directory's weights, by --which, in the order they are looked for: data-free and kd
#: runs save a student, scratch runs a model
RUN_WEIGHTS = {
    "last": ("student.safetensors", "model.safetensors"),
    "best": ("student-best.safetensors", "model-best.safetensors"),
}
ONNX_PACKAGES = ("onnx", "onnxruntime", "onnxscript")  # the exporter needs onnxscript
REQUIRED_META = ("model", "num_classes", "channels", "mean", "std")
#: the batch the graph is traced with, and the batches it is verified on: other sizes, 1
#: among them, so a graph that fixed its batch size fails verification
TRACE_BATCH = 2
VERIFY_BATCHES = (1, 5)
#: exported and PyTorch logits agree when |a - b| <= ATOL + RTOL * |b| everywhere. ONNX
#: Runtime's kernels sum in another order: 1e-8 to 5e-7 apart for the zoo's models (2e-5 for
#: wrn40_2), while a wrong graph is off by the logits' own size
ATOL, RTOL = 1e-4, 1e-3
INPUT, OUTPUT = "input", "logits"
Runner = Callable[[torch.Tensor], torch.Tensor]
#: what an exporter hands back: the file's bytes, how to load and run them, sidecar entries
ExportedFile = tuple[bytes, Callable[[bytes], Runner], dict[str, Any]]


@dataclass(frozen=True)
class Exported:
    """What `export_student` wrote, and how closely the file reproduces the PyTorch model."""

    path: Path
    sidecar: Path
    weights: Path
    format: str
    max_abs_diff: float


class Deployable(nn.Module):
    """The graph that is exported: the student's logits, from normalised input or, given mean
    and std, from pixels in [0, 1]. It also hides ``return_features``, which no runtime needs."""

    def __init__(
        self,
        model: nn.Module,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.normalizes = mean is not None and std is not None
        if self.normalizes:
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
            self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalizes:
            x = (x - self.mean) / self.std
        return self.model(x)


def find_weights(source: str | Path, which: str = "last") -> Path:
    """The weights file behind ``source``: the file itself, or a run directory's student."""
    source = Path(source)
    if which not in RUN_WEIGHTS:
        raise UsageError(f"--which must be last or best, not '{which}'.")
    if not source.exists():
        raise UsageError(f"{source} does not exist.")
    if not source.is_dir():
        if which != "last":
            raise UsageError(f"--which chooses a run directory's weights; {source} is a file.")
        return source
    for name in RUN_WEIGHTS[which]:
        if (source / name).is_file():
            return source / name
    if which == "best" and (source / RUN_WEIGHTS["last"][0]).is_file():
        raise UsageError(
            f"{source} has no best weights: a run without a test split keeps only its last "
            "epoch (--which last)."
        )
    wanted = " or ".join(RUN_WEIGHTS[which])
    raise UsageError(f"{source} has no {wanted}: not a run directory, or no epoch has finished.")


def default_output(weights: Path, fmt: str) -> Path:
    """``student.onnx`` beside ``student.safetensors`` (any weights file: its stem)."""
    return weights.with_name(weights.name.removesuffix(".safetensors") + FORMATS[fmt])


def exported_sidecar(path: Path) -> Path:
    """``student.onnx.json``: ``student.json`` is already the weights' sidecar."""
    return path.with_name(path.name + ".json")


def export_student(
    source: str | Path,
    fmt: str = "onnx",
    *,
    which: str = "last",
    out: str | Path | None = None,
    overwrite: bool = False,
    include_normalization: bool = False,
    input_size: int | None = None,
    plugins: Plugins | None = None,
) -> Exported:
    """Export the weights behind ``source`` (a run directory or a weights file with a sidecar)
    to ``fmt``, verify the file against PyTorch, and only then write it and its sidecar.

    Bad input (a missing file, sidecar or package, an existing output, a model the exporter
    cannot take) raises UsageError before anything is written; a file that does not reproduce
    the model raises DfkdError, and nothing is written either.
    """
    if fmt not in FORMATS:
        raise UsageError(f"--format must be onnx or torchscript, not '{fmt}'.")
    weights = find_weights(source, which)
    RunDir(weights.parent).refuse_while_in_use()  # mid-run weights are no result to ship
    meta = read_sidecar(weights)
    if meta.get("quantized"):
        raise UsageError(
            f"{weights} was trained fake-quantised ({meta['quantized']}); a float file would drop "
            "the rounding it learned with: dfkd quantize writes the integer model."
        )
    task = task_of(meta.get("task"))
    # a per-pixel network takes any size: it is exported, by default, at its training crops
    size = (
        input_size or meta.get("input_size") or (meta.get("image_size") if task.per_pixel else None)
    )
    if not size:
        raise UsageError(
            f"{meta['model']} takes images of any size; pass --input-size, the side in pixels "
            "it was trained at."
        )
    path = Path(out) if out else default_output(weights, fmt)
    sidecar = exported_sidecar(path)
    if path.resolve() == weights.resolve():
        raise UsageError(f"--out {path} would replace the weights it is exported from.")
    for target in (path, sidecar):
        check_output(target, overwrite)
    if fmt == "onnx":
        require_onnx()

    from dfkd.models import build_model

    model = build_model(
        meta["model"], meta["num_classes"], meta["channels"], plugins=plugins or get_plugins()
    )
    load_weights(model, weights)
    model.eval()
    mean, std = tuple(meta["mean"]), tuple(meta["std"])
    net = (Deployable(model, mean, std) if include_normalization else Deployable(model)).eval()
    shape = (meta["channels"], size, size)

    def pixels(n: int, seed: int) -> torch.Tensor:
        """A seeded batch of pixels in [0, 1]."""
        return torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed))

    def feed(x01: torch.Tensor) -> torch.Tensor:
        """What the exported graph takes for pixels ``x01``."""
        return x01 if include_normalization else normalize(x01, mean, std)

    try:
        with quiet(), torch.no_grad():
            blob, loader, info = _EXPORTERS[fmt](net, feed(pixels(TRACE_BATCH, 0)))
    except Exception as exc:  # noqa: BLE001 - whatever the exporter raises, the model is the cause
        raise UsageError(f"Cannot export {meta['model']} to {fmt}: {reason(exc)}") from exc
    batches = [pixels(n, seed) for seed, n in enumerate(VERIFY_BATCHES, start=1)]
    with torch.no_grad():  # the reference: the student on the training pipeline's normalisation
        expected = [model(normalize(x, mean, std)).float() for x in batches]
    max_diff = _verify(lambda: loader(blob), [feed(x) for x in batches], expected, fmt)

    write_atomic(path, lambda tmp: tmp.write_bytes(blob))
    shapes = f", {size}x{size} px" + (
        "; per-pixel logits (export again with --input-size for another size)"
        if task.per_pixel
        else " (training resized other sizes bilinearly, with antialiasing)"
    )
    record = {
        **meta,
        **info,
        **runtime_record(meta, weights, size, include_normalization, shapes),
        "format": fmt,
        "output_shape": ["batch", meta["num_classes"], *((size, size) if task.per_pixel else ())],
        "verification": {
            "max_abs_diff": max_diff,
            "atol": ATOL,
            "rtol": RTOL,
            "batch_sizes": list(VERIFY_BATCHES),
        },
        "torch_version": torch.__version__,
        "dfkd_version": __version__,
    }
    write_json(sidecar, record)
    return Exported(path, sidecar, weights, fmt, max_diff)


def runtime_record(
    meta: dict[str, Any], weights: Path, size: int, include_normalization: bool, shapes: str
) -> dict[str, Any]:
    """What an exported file's sidecar tells a runtime about its input and output, ``shapes``
    ending the input's description."""
    return {
        "input_size": size,
        "exported_from": str(weights),
        "input_name": INPUT,
        "input_shape": ["batch", meta["channels"], size, size],
        "input_dtype": "float32",
        "includes_normalization": include_normalization,
        "input": (
            "pixels in [0, 1]; the graph normalises them with mean and std"
            if include_normalization
            else "normalised pixels, (x - mean) / std per channel with x in [0, 1]"
        )
        + shapes,
        "output_name": OUTPUT,
    }


def read_sidecar(weights: Path) -> dict[str, Any]:
    meta = read_meta(weights)
    if not meta:
        raise UsageError(
            f"{weights} has no sidecar {sidecar_path(weights)}: export reads the model, classes "
            "and normalisation from it (dfkd import-weights writes one)."
        )
    missing = [key for key in REQUIRED_META if meta.get(key) is None]
    if missing:
        raise UsageError(f"Sidecar {sidecar_path(weights)} lacks {', '.join(missing)}.")
    return meta


def require_onnx() -> None:
    missing = []
    for name in ONNX_PACKAGES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise UsageError(
            f"ONNX export needs {', '.join(missing)}, which are not installed: "
            "pip install 'dfkd[onnx]'"
        )


def export_onnx(net: nn.Module, example: torch.Tensor) -> ExportedFile:
    """torch's torch.export-based exporter (its default; the TorchScript-based one is
    deprecated), to one self-contained file: no external data, the batch dimension free."""
    program = torch.onnx.export(
        net,
        (example,),
        dynamo=True,
        input_names=[INPUT],
        output_names=[OUTPUT],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        verbose=False,
    )
    proto = program.model_proto
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    return proto.SerializeToString(), _onnx_runner, {"opset": opset}


def _onnx_runner(blob: bytes) -> Runner:
    import onnxruntime

    session = onnxruntime.InferenceSession(blob, providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run([OUTPUT], {INPUT: x.numpy()})[0])


def _export_torchscript(net: nn.Module, example: torch.Tensor) -> ExportedFile:
    """A trace, which takes every zoo model (scripting would need type-annotated code)."""
    traced = torch.jit.trace(net, example, check_trace=False)
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    return buffer.getvalue(), _torchscript_runner, {}


def _torchscript_runner(blob: bytes) -> Runner:
    loaded = torch.jit.load(io.BytesIO(blob), map_location="cpu")
    return lambda x: loaded(x)


_EXPORTERS = {"onnx": export_onnx, "torchscript": _export_torchscript}
_RUNNERS = {"onnx": _onnx_runner, "torchscript": _torchscript_runner}


def _verify(
    load: Callable[[], Runner],
    inputs: list[torch.Tensor],
    expected: list[torch.Tensor],
    fmt: str,
) -> float:
    """The largest difference between the exported file's logits on ``inputs`` and the
    ``expected`` ones; DfkdError when the file does not load or run, or is off by more than
    the tolerance."""
    try:
        with quiet():
            run = load()
    except Exception as exc:  # noqa: BLE001 - a file that cannot load fails verification
        raise DfkdError(
            f"The exported {fmt} model does not load: {reason(exc)}. Nothing was written."
        ) from exc
    worst = 0.0
    for x, want in zip(inputs, expected, strict=True):
        n = len(x)
        try:
            with quiet(), torch.no_grad():
                got = run(x).float()
        except Exception as exc:  # noqa: BLE001 - a file that cannot run fails verification
            raise DfkdError(
                f"The exported {fmt} model fails on a batch of {n}: {reason(exc)}. "
                "Nothing was written."
            ) from exc
        if got.shape != want.shape:
            raise DfkdError(
                f"The exported {fmt} model gives shape {tuple(got.shape)} on a batch of {n}, "
                f"PyTorch {tuple(want.shape)}. Nothing was written."
            )
        diff = (got - want).abs()
        worst = max(worst, float(diff.max()))
        if not bool((diff <= ATOL + RTOL * want.abs()).all()):
            raise DfkdError(
                f"The exported {fmt} model disagrees with PyTorch on a batch of {n}: max abs "
                f"difference {worst:.3g} (tolerance {ATOL:g} + {RTOL:g}·|logit|). "
                "Nothing was written."
            )
    return worst


@contextlib.contextmanager
def quiet() -> Any:
    """Exporters print graphs, progress and warnings (TorchScript's deprecation, tracer hints);
    verification is what decides, so none of it reaches the user."""
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        yield


def reason(exc: BaseException) -> str:
    """The first line of the root cause: torch.onnx wraps the real error in a long report."""
    cause = exc.__cause__ or exc
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(cause)).strip()
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    line = line if len(line) <= 300 else line[:297] + "..."
    return f"{type(cause).__name__}: {line}" if line else type(cause).__name__


class ExportedModel(nn.Module):
    """An exported student (ONNX or TorchScript file) behind the nn.Module interface that
    evaluation uses, so `dfkd eval` scores the very file a runtime will load."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        path = Path(path)
        sidecar = exported_sidecar(path)
        if not path.is_file() or not sidecar.is_file():
            raise UsageError(f"{path} is not an exported student with its sidecar {sidecar.name}.")
        try:
            self.meta = json.loads(sidecar.read_text())
            fmt = self.meta["format"]
            runner = _RUNNERS[fmt]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise UsageError(f"{sidecar} is damaged; export the student again.") from None
        if fmt == "onnx":
            require_onnx()
        self.path = path
        try:
            with quiet():
                self._runner = runner(path.read_bytes())
        except Exception as exc:  # noqa: BLE001 - a truncated or damaged file, as the runtime says
            raise UsageError(
                f"Cannot load {path} as an exported {fmt} model ({reason(exc)}); export the "
                "student again."
            ) from exc

    def check_fits(self, source: Any, test_size: Sequence[int]) -> None:
        """Refuse a dataset the file was not exported for, as one line: other channels or sizes
        otherwise fail deep inside the runtime, and other classes are scored against the wrong
        labels without a word. ``test_size``: the test images' (height, width)."""
        channels, classes = self.meta.get("channels"), self.meta.get("num_classes")
        if channels not in (None, source.channels):
            raise UsageError(
                f"{self.path} takes {channels}-channel images; {source.name} has {source.channels}."
            )
        if classes not in (None, source.num_classes):
            raise UsageError(
                f"{self.path} was exported for {classes} classes; {source.name} has "
                f"{source.num_classes}."
            )
        size = self.meta.get("input_size")
        height, width = test_size
        if task_of(source.task).per_pixel and size and (height, width) != (size, size):
            again = (
                f"export it again with --input-size {height}"
                if height == width
                else f"score the weights it was exported from, {self.meta.get('exported_from')}"
            )
            raise UsageError(
                f"{self.path} takes {size}x{size} px images (its masks come out at that size); "
                f"{source.name}'s test images are {height}x{width} px: {again}."
            )

    @property
    def takes_pixels(self) -> bool:
        """True when the graph normalises [0, 1] pixels itself (--include-normalization)."""
        return bool(self.meta.get("includes_normalization"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._runner(x.float().cpu()).to(x.device)
