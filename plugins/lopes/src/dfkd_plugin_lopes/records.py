"""Activation records, Lopes et al.'s "meta-data": per class and per recorded layer, the moments
of the teacher's pre-activations over its training split, and optionally their spectral summary.

One safetensors file holds them. Its metadata carries a JSON header (key ``dfkd_lopes``) naming
the teacher, its weights and the dataset, so that a run refuses records of another teacher
instead of reconstructing nonsense from them.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, get_args

import torch
from torch import Tensor, nn

from dfkd.api import UsageError
from dfkd_plugin_lopes.activations import TOP, Capture, Downsample, default_layers, plan_downsample
from dfkd_plugin_lopes.moments import ClassMoments, cholesky_factor, graph_spectrum
from dfkd_plugin_lopes.options import Objective

FORMAT = "dfkd-lopes-records/1"
HEADER_KEY = "dfkd_lopes"
SPECTRAL_OBJECTIVES = ("spectral_all_layers", "spectral_layer_pairs")
GRAPH = (
    "nodes: units of the group's layers after downsampling; edges: absolute correlation of "
    "their pre-activations over the class; symmetric normalised Laplacian; k lowest modes"
)


class Records:
    """A records file in memory: its JSON header and its tensors (float32, classes first)."""

    def __init__(self, header: dict[str, Any], tensors: dict[str, Tensor]) -> None:
        self.header = header
        self.tensors = tensors

    @property
    def names(self) -> list[str]:
        """Recorded layers, bottom first; the last is always the top layer, logits/T."""
        return [layer["name"] for layer in self.header["layers"]]

    @property
    def hooked(self) -> list[str]:
        """The module paths whose outputs are recorded (every layer but the top)."""
        return self.names[:-1]

    @property
    def temperature(self) -> float:
        return float(self.header["temperature"])

    @property
    def objectives(self) -> list[str]:
        return list(self.header["objectives"])

    @property
    def groups(self) -> dict[str, list[str]]:
        """Spectral groups: "all" (every layer) and "pair<i>" (layers i and i+1)."""
        spectral = self.header.get("spectral")
        return dict(spectral["groups"]) if spectral else {}

    def size(self, name: str) -> int:
        return self.tensors[f"layer/{name}/mean"].shape[1]

    def downsamplers(self) -> dict[str, Downsample]:
        plans = self.header["spectral"]["downsample"]
        shapes = {layer["name"]: tuple(layer["shape"]) for layer in self.header["layers"]}
        return {
            name: Downsample(
                plan["kind"],
                shapes[name],
                plan.get("grid", 0),
                self.tensors.get(f"spectral/{name}/projection"),
            )
            for name, plan in plans.items()
        }

    def to(self, device: torch.device | str) -> Records:
        return Records(self.header, {k: v.to(device) for k, v in self.tensors.items()})

    def sample_layer(self, name: str, labels: Tensor, generator: torch.Generator) -> Tensor:
        """Targets â = μ + L ε with the covariance's Cholesky factor L where it was recorded,
        else μ + σ ⊙ ε; ε ~ N(0, I), one draw per example."""
        mean = self.tensors[f"layer/{name}/mean"]
        eps = torch.randn(len(labels), mean.shape[1], generator=generator).to(mean.device)
        chol = self.tensors.get(f"layer/{name}/chol")
        if chol is None:
            return mean[labels] + eps * self.tensors[f"layer/{name}/std"][labels]
        return mean[labels] + _per_class_product(eps, chol, labels)

    def sample_coefficients(self, group: str, labels: Tensor, generator: torch.Generator) -> Tensor:
        """Target graph-Fourier coefficients of a spectral group, drawn as in `sample_layer`."""
        mean = self.tensors[f"spectral/{group}/coef_mean"]
        eps = torch.randn(len(labels), mean.shape[1], generator=generator).to(mean.device)
        return mean[labels] + _per_class_product(
            eps, self.tensors[f"spectral/{group}/coef_chol"], labels
        )


def _per_class_product(eps: Tensor, factors: Tensor, labels: Tensor) -> Tensor:
    """Row i of the result is L_{labels[i]} eps_i, one matrix product per class present."""
    out = torch.empty_like(eps)
    for c in labels.unique().tolist():
        rows = labels == c
        out[rows] = eps[rows] @ factors[c].T
    return out


def teacher_fingerprint(model: nn.Module) -> str:
    """SHA-256 of the teacher's state dict: the same weights give the same text wherever they
    were loaded from, other weights of the same architecture do not."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{data.dtype}:{tuple(data.shape)};".encode())
        digest.update(data.flatten().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@torch.no_grad()
def record_teacher(
    teacher: nn.Module,
    images: Tensor,
    labels: Tensor,
    fmt: Any,
    num_classes: int,
    *,
    layers: list[str] | None = None,
    covariance: bool = False,
    spectral: bool = False,
    temperature: float = 8.0,
    batch_size: int = 500,
    max_cov_units: int = 1500,
    spectral_units: int = 256,
    spectral_k: int = 64,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> Records:
    """Stream the training split through the teacher once and keep per-class moments.

    ``images`` are uint8 (N, C, H, W), ``fmt`` an InputFormat that normalises and resizes them
    for the teacher. Covariances are kept for layers of at most ``max_cov_units`` units (a full
    covariance of LeNet's 4704-unit conv1 would take 0.9 GB per ten classes).
    """
    device = torch.device(device)
    teacher.eval()
    example = fmt.from_uint8(images[:2]).to(device)
    names = list(layers) if layers else default_layers(teacher, example)
    if TOP in names:
        raise UsageError(f"'{TOP}' is always recorded (as logits/T); do not list it in --layers.")
    capture = Capture(teacher, names)
    try:
        top = teacher(example)
        shapes = [tuple(capture.outputs[n].shape[1:]) for n in names] + [tuple(top.shape[1:])]
        sizes = [math.prod(s) for s in shapes]
        moments = [
            ClassMoments(num_classes, n, covariance and n <= max_cov_units, device) for n in sizes
        ]
        generator = torch.Generator().manual_seed(seed)
        plans = [plan_downsample(s, spectral_units, generator) for s in shapes] if spectral else []
        shrink = [p.to(device) for p in plans]
        joint = (
            ClassMoments(num_classes, sum(p.units for p in plans), True, device)
            if spectral
            else None
        )
        for start in range(0, len(images), batch_size):
            x = fmt.from_uint8(images[start : start + batch_size]).to(device)
            y = labels[start : start + batch_size].to(device)
            logits = teacher(x).float()
            acts = [capture.outputs[n].float().flatten(1) for n in names]
            acts.append(logits / temperature)
            for stats, values in zip(moments, acts, strict=True):
                stats.update(values, y)
            if joint is not None:
                joint.update(torch.cat([p(a) for p, a in zip(shrink, acts, strict=True)], 1), y)
    finally:
        capture.remove()

    all_names = [*names, TOP]
    tensors: dict[str, Tensor] = {"count": moments[0].count.round().long()}
    layer_info = []
    for name, shape, stats in zip(all_names, shapes, moments, strict=True):
        tensors[f"layer/{name}/mean"] = stats.mean.float()
        tensors[f"layer/{name}/std"] = stats.std().float()
        if stats.cross is not None:
            cov = stats.covariance()
            tensors[f"layer/{name}/chol"] = torch.stack([cholesky_factor(c) for c in cov]).float()
        layer_info.append(
            {"name": name, "shape": list(shape), "covariance": stats.cross is not None}
        )
    header: dict[str, Any] = {
        "format": FORMAT,
        "temperature": temperature,
        "num_classes": num_classes,
        "examples": int(len(images)),
        "teacher_fingerprint": teacher_fingerprint(teacher),
        "layers": layer_info,
        "objectives": [o for o in get_args(Objective) if spectral or o not in SPECTRAL_OBJECTIVES],
        "spectral": None,
    }
    if spectral:
        header["spectral"] = _spectral_summary(
            all_names, plans, joint, spectral_units, spectral_k, tensors
        )
    return Records(header, {k: v.detach().cpu().contiguous() for k, v in tensors.items()})


def _spectral_summary(
    names: list[str],
    plans: list[Downsample],
    joint: ClassMoments,
    units: int,
    k: int,
    tensors: dict[str, Tensor],
) -> dict[str, Any]:
    """Spectra of the "all" group and of each consecutive pair, per class, into ``tensors``."""
    bounds = [0]
    for plan in plans:
        bounds.append(bounds[-1] + plan.units)
    groups = {"all": names} | {f"pair{i}": names[i : i + 2] for i in range(len(names) - 1)}
    cov = joint.covariance()
    for group, members in groups.items():
        index = torch.cat(
            [torch.arange(bounds[names.index(m)], bounds[names.index(m) + 1]) for m in members]
        ).to(cov.device)
        parts = [
            graph_spectrum(joint.mean[c, index], cov[c][index][:, index], min(k, len(index)))
            for c in range(cov.shape[0])
        ]
        keys = ("eigvecs", "eigvals", "coef_mean", "coef_chol")
        for key, values in zip(keys, zip(*parts, strict=True), strict=True):
            tensors[f"spectral/{group}/{key}"] = torch.stack(values).float()
    for name, plan in zip(names, plans, strict=True):
        if plan.projection is not None:
            tensors[f"spectral/{name}/projection"] = plan.projection
    return {
        "units": units,
        "k": k,
        "graph": GRAPH,
        "downsample": {
            n: {"kind": p.kind, "grid": p.grid} for n, p in zip(names, plans, strict=True)
        },
        "groups": groups,
    }


def save_records(records: Records, path: str | Path) -> None:
    from safetensors.torch import save_file

    from dfkd.api import write_atomic

    metadata = {HEADER_KEY: json.dumps(records.header, sort_keys=True)}
    write_atomic(path, lambda tmp: save_file(records.tensors, str(tmp), metadata=metadata))


def load_records(path: str | Path) -> Records:
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise UsageError(
            f"Records file {path} does not exist; make it with "
            "'dfkd lopes record --teacher T --dataset D --out FILE'."
        )
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no iter
    except SafetensorError as exc:
        raise UsageError(f"{path} is not a safetensors file ({exc}).") from None
    header = json.loads(metadata.get(HEADER_KEY, "{}"))
    if header.get("format") != FORMAT:
        raise UsageError(f"{path} is not a dfkd lopes records file (no {FORMAT} header).")
    return Records(header, tensors)


def check_records(
    records: Records,
    path: str | Path,
    *,
    fingerprint: str,
    num_classes: int,
    teacher: str | None = None,
    dataset: str | None = None,
) -> None:
    """Refuse records of another teacher, other weights or another dataset, in one line."""
    made = f"{records.header.get('teacher', '?')} on {records.header.get('dataset', '?')}"
    if (
        teacher
        and dataset
        and (records.header.get("teacher"), records.header.get("dataset"))
        != (
            teacher,
            dataset,
        )
    ):
        raise UsageError(
            f"Records {path} describe teacher {made}, not {teacher} on {dataset}; make matching "
            f"ones with 'dfkd lopes record --teacher {teacher} --dataset {dataset}'."
        )
    if records.header["num_classes"] != num_classes:
        raise UsageError(
            f"Records {path} ({made}) have {records.header['num_classes']} classes; this run has "
            f"{num_classes}."
        )
    if records.header["teacher_fingerprint"] != fingerprint:
        raise UsageError(
            f"Records {path} were made from other weights of {made} "
            f"({records.header.get('teacher_weights', 'unknown file')}); record them again from "
            "this run's teacher weights."
        )


def default_records_path(dataset: str, teacher: str) -> Path:
    """Beside the teacher's default weights: checkpoints/<dataset>-<teacher>.lopes.safetensors."""
    from dfkd.api import default_weights_path

    return default_weights_path(dataset, teacher).with_suffix(".lopes.safetensors")


def make_records(
    teacher: str,
    dataset: str,
    *,
    teacher_weights: str | None = None,
    out: str | Path | None = None,
    overwrite: bool = False,
    data_root: str | None = None,
    download: bool = False,
    cpu: bool = False,
    plugins: Any = None,
    **options: Any,
) -> tuple[Path, Records]:
    """`dfkd lopes record` as a function: load teacher and training split by name, record, save.

    ``options`` go to `record_teacher` (layers, covariance, spectral, temperature, ...).
    """
    from dfkd import __version__
    from dfkd.api import InputFormat, load_teacher, make_accelerator, open_dataset

    path = Path(out) if out else default_records_path(dataset, teacher)
    if path.exists() and not overwrite:
        raise UsageError(f"{path} exists; pass --overwrite to replace it or --out another file.")
    source = open_dataset(dataset, data_root, download, plugins=plugins)
    model, spec, weights = load_teacher(teacher, source, teacher_weights, plugins)
    device = make_accelerator(cpu=cpu).device
    model.to(device)
    images, labels = source.load("train")
    if labels is None:
        raise UsageError(f"Dataset {source.name} has no labels; records are kept per class.")
    fmt = InputFormat.of(source, spec.size)
    records = record_teacher(
        model, images, labels, fmt, source.num_classes, device=device, **options
    )
    records.header.update(
        teacher=teacher,
        teacher_weights=str(weights),
        teacher_weights_sha256=file_sha256(weights),
        dataset=source.name,
        channels=source.channels,
        image_size=spec.size or source.image_size,
        mean=list(source.mean),
        std=list(source.std),
        dfkd_version=__version__,
    )
    save_records(records, path)
    return path, records
