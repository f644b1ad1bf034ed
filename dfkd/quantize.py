"""`dfkd quantize`: an INT8 model a runtime runs with integer kernels, calibrated without data.

Post-training quantisation needs calibration images, which a data-free user does not have; dfkd
makes them from the teacher. By default they are the teacher's synthetic validation set
(dfkd/training/validation.py): images inverted from noise so the teacher calls them its classes
while matching its BatchNorm statistics, the "distilled data" of ZeroQ (Cai et al., CVPR 2020).
Real images can be named instead (``calibration_dataset``), as the upper limit a benchmark
compares against; the sidecar says which was used.

The model goes through the float ONNX export (dfkd/export.py), onnxruntime's pre-processing
(shape inference, and BatchNorm folded into the convolution before it) and its static
quantisation in the QDQ format: weights int8 per output channel, activations uint8 per tensor,
ranges from the calibration images. onnxruntime turns the QDQ pairs into integer kernels
(QLinearConv, QGemm, ...) when it loads the file. The file is then checked against the float
PyTorch model on held-out synthetic images and written, with its sidecar, only when it agrees.
docs/architecture.md says why onnxruntime rather than torchao, NNCF or brevitas.
"""

from __future__ import annotations

import copy
import importlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dfkd.data.pipeline import InputFormat
from dfkd.errors import DfkdError, UsageError
from dfkd.export import (
    INPUT,
    OUTPUT,
    Deployable,
    export_onnx,
    exported_sidecar,
    find_weights,
    quiet,
    read_sidecar,
    reason,
    require_onnx,
    runtime_record,
)
from dfkd.fileio import sha256_of, write_atomic, write_json
from dfkd.plugins import Plugins, get_plugins
from dfkd.training.runs import RunDir, check_output, run_owning
from dfkd.training.tasks import task_of

#: the widths onnxruntime's CPU kernels compute in: 8-bit weights and activations
SCHEMES = ("w8a8",)
#: onnxruntime's ways of turning calibration activations into ranges
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
#: synthetic images kept out of calibration to check the integer model against the float one
HELD_OUT = 100
#: an integer model that answers otherwise than its float model on more of the held-out images
#: than this is refused: it would ship a worse model without a word
MIN_AGREEMENT = 90.0
#: the operators that hold a model's weights and arithmetic: each must run as integers
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "LSTM", "GRU", "RNN", "Einsum")
SUFFIX = ".int8.onnx"


@dataclass(frozen=True)
class Quantized:
    """What `quantize_model` wrote and how closely the integer model follows the float one."""

    path: Path
    sidecar: Path
    weights: Path
    calibration: str
    calibration_images: int
    agreement: float  # % of the held-out images on which the file and ``against`` agree on top-1
    max_abs_diff: float
    float_bytes: int
    int8_bytes: int
    against: str  # the PyTorch model the file was checked against


def default_output(weights: Path) -> Path:
    """``student.int8.onnx`` beside ``student.safetensors``."""
    return weights.with_name(weights.name.removesuffix(".safetensors") + SUFFIX)


def quantize_model(
    source: str | Path,
    *,
    scheme: str = "w8a8",
    which: str = "last",
    teacher_weights: str | Path | None = None,
    calibration_dataset: str | None = None,
    data_root: str | None = None,
    calibrate_method: str = "minmax",
    out: str | Path | None = None,
    overwrite: bool = False,
    include_normalization: bool = False,
    plugins: Plugins | None = None,
) -> Quantized:
    """Quantise the weights behind ``source`` (a run directory or a weights file with a
    sidecar) to ``scheme``, calibrated on the teacher's synthetic images (or on
    ``calibration_dataset``'s training images), verify it, and only then write it.

    Bad input raises UsageError before anything is written; an integer model that does not
    follow the float one raises DfkdError, and nothing is written either.
    """
    if scheme not in SCHEMES:
        raise UsageError(
            f"--scheme {scheme}: onnxruntime's CPU kernels compute with 8-bit weights and "
            f"activations, so {', '.join(SCHEMES)} is the width it runs as integers."
        )
    if calibrate_method not in CALIBRATION_METHODS:
        raise UsageError(
            f"--calibrate-method must be one of {', '.join(CALIBRATION_METHODS)}, "
            f"not '{calibrate_method}'."
        )
    plugins = plugins or get_plugins()
    weights = find_weights(source, which)
    RunDir(weights.parent).refuse_while_in_use()
    meta = read_sidecar(weights)
    task = task_of(meta.get("task"))
    if not task.quantizable:
        raise UsageError(
            f"{weights} is a {task.name} network; dfkd quantize takes classifiers (export it "
            "with dfkd export)."
        )
    size = meta.get("input_size")
    if not size:
        raise UsageError(f"{meta['model']} takes images of any size; quantize a fixed-size model.")
    path = Path(out) if out else default_output(weights)
    sidecar = exported_sidecar(path)
    for target in (path, sidecar):
        check_output(target, overwrite)
    require_onnx()
    _require("onnxruntime.quantization", "onnxruntime")

    from dfkd.models import build_model
    from dfkd.models.fake_quant import dequantize
    from dfkd.weights import load_weights

    model = build_model(meta["model"], meta["num_classes"], meta["channels"], plugins=plugins)
    load_weights(model, weights)  # a quantisation-aware student computes rounded, as trained
    model.eval()
    master = dequantize(copy.deepcopy(model))  # its float weights, for the quantiser to round
    mean, std = tuple(meta["mean"]), tuple(meta["std"])
    net = (Deployable(master, mean, std) if include_normalization else Deployable(master)).eval()
    # what the graph takes, from pixels in [0, 1] at any size
    graph_input = InputFormat(
        (0.0,) * len(mean) if include_normalization else mean,
        (1.0,) * len(std) if include_normalization else std,
        size,
    )
    model_input = InputFormat(mean, std, size)

    synthetic, described = _teacher_images(weights, teacher_weights, meta, plugins)
    # a set the time budget cut (validation.py) keeps four fifths for calibration
    kept = len(synthetic) - min(HELD_OUT, len(synthetic) // 5)
    calibration, held_out = synthetic[:kept], synthetic[kept:]
    if calibration_dataset:
        calibration, described = _real_images(calibration_dataset, data_root, meta, plugins)
    calibration_record = {**described, "images": len(calibration), "method": calibrate_method}

    with tempfile.TemporaryDirectory(prefix="dfkd-quantize-") as tmp:
        folder = Path(tmp)
        try:
            with quiet(), torch.no_grad():
                blob, _, info = export_onnx(net, graph_input.from_pixels(calibration[:2]))
        except Exception as exc:  # noqa: BLE001 - whatever the exporter raises, the model is the cause
            raise UsageError(f"Cannot export {meta['model']} to ONNX: {reason(exc)}") from exc
        float_file, prepared, quantized = (folder / n for n in ("f.onnx", "p.onnx", "q.onnx"))
        float_file.write_bytes(blob)
        quantize_onnx(
            float_file,
            prepared,
            quantized,
            [graph_input.from_pixels(batch) for batch in calibration.split(64)],
            calibrate_method,
        )
        _check_integer_ops(quantized, meta["model"])
        int8 = quantized.read_bytes()
        float_bytes = len(blob)

    # the file is checked against the model it should compute: a student trained at the file's
    # widths as it was trained; one trained narrower (w4a4) as its float weights, which the
    # file rounds less than training did
    trained = meta.get("quantized")
    reference, against = model, "the float PyTorch model"
    if trained == scheme:
        against = f"the PyTorch model, fake-quantised at {trained} as trained"
    elif trained:
        reference, against = master, f"the float weights of a student trained at {trained}"
    agreement, max_diff = _verify(
        int8, graph_input.from_pixels(held_out), reference, model_input, held_out
    )
    if agreement < MIN_AGREEMENT:
        raise DfkdError(
            f"The INT8 model agrees with the PyTorch model on only {agreement:.1f} % of "
            f"{len(held_out)} held-out synthetic images (at least {MIN_AGREEMENT:g} % needed); "
            "try --calibrate-method entropy or percentile. Nothing was written."
        )
    write_atomic(path, lambda tmp: tmp.write_bytes(int8))
    record = {
        **meta,
        **info,
        **runtime_record(
            meta,
            weights,
            size,
            include_normalization,
            f", {size}x{size} px; quantised by the graph",
        ),
        "format": "onnx",
        "output_shape": ["batch", meta["num_classes"]],
        "quantization": {
            "scheme": scheme,
            "weights": "int8, symmetric, per output channel; BatchNorm folded into the conv",
            "activations": "uint8, asymmetric, per tensor",
            "format": "ONNX QDQ (onnxruntime runs it with integer kernels)",
            "runtime": f"onnxruntime {_version('onnxruntime')}",
            "calibration": calibration_record,
            "float_bytes": float_bytes,
            "int8_bytes": len(int8),
        },
        "verification": {
            "against": against,
            "held_out_images": len(held_out),
            "top1_agreement": agreement,
            "max_abs_diff": max_diff,
        },
        "torch_version": torch.__version__,
    }
    write_json(sidecar, record)
    return Quantized(
        path,
        sidecar,
        weights,
        described["source"],
        len(calibration),
        agreement,
        max_diff,
        float_bytes,
        len(int8),
        against,
    )


def _teacher_images(
    weights: Path,
    teacher_weights: str | Path | None,
    meta: dict[str, Any],
    plugins: Plugins,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """The teacher's synthetic validation set (pixels in [0, 1]) and what to record of it. The
    teacher is ``teacher_weights``, else the one the weights' run distilled from, else the model
    itself (a teacher being quantised calibrates on its own inversion)."""
    from dfkd.models import build_model
    from dfkd.training.validation import validation_set
    from dfkd.weights import load_weights

    path = Path(teacher_weights) if teacher_weights else _run_teacher(weights) or weights
    if not path.is_file():
        raise UsageError(f"Teacher weights {path} do not exist; pass --teacher-weights FILE.")
    t_meta = read_sidecar(path)
    for key in ("num_classes", "channels"):
        if t_meta[key] != meta[key]:
            raise UsageError(
                f"Teacher {path} has {key} {t_meta[key]}, the model {meta[key]}: pass the "
                "teacher it was distilled from with --teacher-weights."
            )
    teacher = build_model(
        t_meta["model"], t_meta["num_classes"], t_meta["channels"], plugins=plugins
    )
    load_weights(teacher, path)
    teacher.eval().requires_grad_(False)
    if not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in teacher.modules()):
        raise UsageError(
            f"Teacher {t_meta['model']} ({path}) has no BatchNorm layers: its synthetic images "
            "would match no statistics of real data. Pass --teacher-weights of a teacher with "
            "BatchNorm."
        )
    image_size = t_meta.get("input_size") or t_meta["image_size"]
    fmt = InputFormat(tuple(t_meta["mean"]), tuple(t_meta["std"]), image_size)
    with tempfile.TemporaryDirectory(prefix="dfkd-valset-") as fallback:
        valset = validation_set(
            teacher,
            path,
            fmt,
            t_meta["num_classes"],
            t_meta["channels"],
            image_size,
            Path(fallback),
        )
    described = {
        "source": "synthetic: the teacher's inverted validation set (BatchNorm statistics + "
        "class targets), no real images",
        "teacher": str(path),
        "teacher_model": t_meta["model"],
        "teacher_sha256": sha256_of(path),
    }
    return valset.images, described


def _run_teacher(weights: Path) -> Path | None:
    """The teacher file of the run ``weights`` came out of, checked against the fingerprint the
    run recorded: a teacher replaced since would calibrate another model's images."""
    from dfkd.training.setup import default_weights_path

    run = run_owning(weights)
    if run is None or not (run / "config.json").is_file():
        return None
    config = RunDir(run).read_config()
    options = config["options"]
    if not options.get("teacher"):
        return None  # a scratch run: the model is its own teacher
    recorded = options.get("teacher_weights")
    path = (
        Path(recorded) if recorded else default_weights_path(options["dataset"], options["teacher"])
    )
    if not path.is_file():
        raise UsageError(
            f"Run {run} distilled from {path}, which no longer exists; pass --teacher-weights FILE."
        )
    if config.get("teacher_sha256") not in (None, sha256_of(path)):
        raise UsageError(
            f"{path} is not the teacher run {run} distilled from (its sha256 differs); pass that "
            "teacher with --teacher-weights FILE."
        )
    return path


def _real_images(
    name: str, data_root: str | None, meta: dict[str, Any], plugins: Plugins
) -> tuple[torch.Tensor, dict[str, Any]]:
    """``name``'s first training images, a fixed random draw of them, as pixels in [0, 1]: the
    calibration a user with data would do, for comparison."""
    from dfkd.data import open_dataset

    source = open_dataset(name, data_root, plugins=plugins)
    if source.channels != meta["channels"]:
        raise UsageError(
            f"{name} has {source.channels}-channel images; the model takes {meta['channels']}."
        )
    images, _ = source.load("train")
    count = 500 - HELD_OUT
    pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:count]
    return images[pick].float() / 255, {
        "source": f"real: {count} training images of {name} (not data-free; a reference)",
        "dataset": name,
    }


def quantize_onnx(
    float_file: Path,
    prepared: Path,
    quantized: Path,
    batches: list[torch.Tensor],
    calibrate_method: str,
) -> None:
    """onnxruntime's pre-processing (BatchNorm folded into the conv before it) and static QDQ
    quantisation, calibrated on ``batches``."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter({INPUT: b.numpy()} for b in batches)

        def get_next(self) -> dict[str, Any] | None:
            return next(self.feeds, None)

    method = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[calibrate_method]
    try:
        with quiet():
            quant_pre_process(str(float_file), str(prepared))
            quantize_static(
                str(prepared),
                str(quantized),
                Batches(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=method,
            )
    except Exception as exc:  # noqa: BLE001 - the graph is what onnxruntime cannot take
        raise UsageError(f"onnxruntime cannot quantise this model: {reason(exc)}") from exc


def _check_integer_ops(quantized: Path, model: str) -> None:
    """Refuse a graph in which a weighted operator stayed in float: onnxruntime quantises only
    the operators it has integer kernels for, and leaves the rest as they were."""
    import onnx

    graph = onnx.load(str(quantized)).graph
    dequantized = {
        out for node in graph.node if node.op_type == "DequantizeLinear" for out in node.output
    }
    floating = [
        f"{node.op_type} '{node.name}'"
        for node in graph.node
        if node.op_type in WEIGHTED_OPS and not any(i in dequantized for i in node.input[:2])
    ]
    if floating:
        raise UsageError(
            f"onnxruntime cannot quantise {', '.join(floating[:3])} of {model}: it has no integer "
            "kernel for it. Export the model in float with dfkd export instead."
        )


def _verify(
    int8: bytes,
    graph_input: torch.Tensor,
    model: torch.nn.Module,
    model_input: InputFormat,
    pixels: torch.Tensor,
) -> tuple[float, float]:
    """Top-1 agreement (%) and the largest logit difference between the integer file and the
    PyTorch model on the held-out images."""
    import onnxruntime

    try:
        with quiet():
            session = onnxruntime.InferenceSession(int8, providers=["CPUExecutionProvider"])
            got = torch.from_numpy(session.run([OUTPUT], {INPUT: graph_input.numpy()})[0])
    except Exception as exc:  # noqa: BLE001 - a file that cannot load or run fails verification
        raise DfkdError(
            f"The INT8 model does not run: {reason(exc)}. Nothing was written."
        ) from exc
    with torch.no_grad():
        want = model(model_input.from_pixels(pixels)).float()
    agreement = 100.0 * (got.argmax(1) == want.argmax(1)).float().mean().item()
    return agreement, float((got - want).abs().max())


def _require(module: str, package: str) -> None:
    try:
        importlib.import_module(module)
    except ImportError:
        raise UsageError(f"dfkd quantize needs {package}: pip install 'dfkd[onnx]'") from None


def _version(package: str) -> str:
    return importlib.import_module(package).__version__
