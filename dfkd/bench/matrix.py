"""A benchmark matrix: methods x pairs x seeds x option variants, as cells.

The file names one dataset; a pair may name its own (a teacher trained on other data), and a
``[method.NAME]`` table its own seeds (more where a method's spread matters), which stand even
when ``--seeds`` replaces the file's.

A matrix comes from the command line or from a TOML file (``benchmarks/*.toml``). Every name in
it is checked against the plugin registries before anything runs, so a typo in cell 40 of a
two-hour benchmark fails in a second, with one line per bad cell.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dfkd.errors import DfkdError, UsageError

#: keys a bench file may set at the top level, and in a ``[method.NAME]`` table
TOP_KEYS = {
    "dataset",
    "methods",
    "pairs",
    "seeds",
    "preset",
    "options",
    "variants",
    "epochs",
    "mixed_precision",
    "quantize",
    "data_root",
    "method",
}
METHOD_KEYS = {"preset", "options", "mixed_precision", "quantize", "seeds"}
PAIR_KEYS = {"name", "teacher", "student", "teacher_weights", "dataset", "preset"}
#: pair keys that hold one non-empty string
PAIR_STRINGS = ("name", "teacher", "student", "teacher_weights", "dataset")
VARIANT_KEYS = {"label", "options"}


@dataclass(frozen=True)
class Pair:
    teacher: str
    student: str
    teacher_weights: str | None = None
    #: tells apart pairs of the same teacher and student (other weights, other data)
    name: str | None = None
    dataset: str | None = None  # None: the matrix's

    @property
    def label(self) -> str:
        models = f"{self.teacher} → {self.student}"
        return f"{self.name} ({models})" if self.name else models


@dataclass(frozen=True)
class Variant:
    """A labelled set of ``-o`` options; the unlabelled one is the preset as it is."""

    label: str = ""
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class Cell:
    """One run of the benchmark: what ``dfkd run`` is called with, and where it goes."""

    method: str
    pair: Pair
    seed: int
    dataset: str
    preset: str | None
    variant: Variant = Variant()
    options: tuple[str, ...] = ()  # the method's and the variant's, then epochs
    mixed_precision: str = "no"
    data_root: str | None = None
    quantize: str | None = None  # `dfkd run --quantize`: a fake-quantised student

    @property
    def name(self) -> str:
        """The cell's folder name: readable, unique in a matrix, safe on any filesystem."""
        pair = self.pair
        parts = [self.method, self.variant.label, pair.name, pair.teacher, pair.student]
        text = "-".join(p for p in parts if p) + f"-seed{self.seed}"
        return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)

    @property
    def group(self) -> tuple[str, str, str]:
        """What a table row and column aggregate over seeds: (method, variant, pair)."""
        return (self.method, self.variant.label, self.pair.label)

    def run_arguments(self, out: Path) -> list[str]:
        """The ``dfkd run`` arguments of a fresh run of this cell into ``out``."""
        args = ["run", self.method, "--teacher", self.pair.teacher, "--student", self.pair.student]
        args += ["--dataset", self.dataset, "--seed", str(self.seed), "--out", str(out)]
        if self.preset:
            args += ["--preset", self.preset]
        for option in self.options:
            args += ["-o", option]
        if self.pair.teacher_weights:
            args += ["--teacher-weights", self.pair.teacher_weights]
        if self.mixed_precision != "no":
            args += ["--mixed-precision", self.mixed_precision]
        if self.data_root:
            args += ["--data-root", self.data_root]
        if self.quantize:
            args += ["--quantize", self.quantize]
        return args

    def describe(self) -> dict[str, Any]:
        """What ``cell.json`` and the report say about the cell's settings."""
        return {
            "cell": self.name,
            "method": self.method,
            "variant": self.variant.label,
            "teacher": self.pair.teacher,
            "student": self.pair.student,
            "pair": self.pair.label,
            "seed": self.seed,
            "dataset": self.dataset,
            "preset": self.preset,
            "options": list(self.options),
            "mixed_precision": self.mixed_precision,
            "quantize": self.quantize,
        }


@dataclass
class Matrix:
    """A matrix before its presets are resolved: ``preset`` may list fallbacks per method."""

    dataset: str
    methods: list[str]
    pairs: list[Pair]
    seeds: list[int]
    preset: list[str] = field(default_factory=list)  # the first the method has; [] = defaults
    options: list[str] = field(default_factory=list)
    variants: list[Variant] = field(default_factory=lambda: [Variant()])
    epochs: int | None = None
    mixed_precision: str = "no"
    quantize: str | None = None
    data_root: str | None = None
    per_method: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: {pair label: {method: preset}}: a preset written for one pair (a paper's script per pair)
    pair_presets: dict[str, dict[str, Any]] = field(default_factory=dict)

    def groups(self) -> list[tuple[str, Pair, Variant]]:
        return [(m, p, v) for m in self.methods for p in self.pairs for v in self.variants]


def parse_pairs(text: str) -> list[Pair]:
    """``lenet5:lenet5_half,lenet5_bn:lenet5_half``; ``TEACHER->STUDENT`` where a model name
    has a colon (``timm:resnet18``); ``@WEIGHTS`` after a pair names the teacher's file."""
    pairs = []
    for item in (p.strip() for p in text.split(",")):
        if not item:
            continue
        models, _, weights = item.partition("@")
        if "->" in models:
            teacher, _, student = models.partition("->")
        elif models.count(":") == 1:
            teacher, _, student = models.partition(":")
        else:
            raise UsageError(
                f"Pair '{item}' must be TEACHER:STUDENT (or TEACHER->STUDENT when a name has a "
                "colon), optionally @TEACHER_WEIGHTS."
            )
        if not teacher.strip() or not student.strip():
            raise UsageError(f"Pair '{item}' needs both a teacher and a student.")
        pairs.append(Pair(teacher.strip(), student.strip(), weights.strip() or None))
    return pairs


def seed_list(value: Any, where: str) -> list[int]:
    """``3`` means seeds 0, 1, 2; a list is taken as it is."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return list(range(value))
    if isinstance(value, list) and value and all(isinstance(s, int) for s in value):
        return list(value)
    raise UsageError(f"{where}: seeds must be a count (3) or a list of seeds ([0, 1, 2]).")


def _strings(value: Any, key: str, where: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise UsageError(f"{where}: '{key}' must be a string or a list of strings.")


def _check_keys(table: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise UsageError(
            f"{where}: unknown key(s) {', '.join(unknown)}. Known: {', '.join(sorted(allowed))}."
        )


def load_matrix(path: Path) -> Matrix:
    """Read a bench file; its shape is checked here, its names by :func:`resolve`."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: the same parser as a package
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise UsageError(
                "Reading a bench file needs Python 3.11, or on 3.10: pip install tomli"
            ) from None
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"No bench file {path}.") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path} is not valid TOML: {exc}.") from None
    where = str(path)
    _check_keys(data, TOP_KEYS, where)
    for key in ("dataset", "methods", "pairs"):
        if key not in data:
            raise UsageError(f"{where}: '{key}' is required.")
    pairs = []
    pair_presets = {}
    for i, pair in enumerate(data["pairs"] if isinstance(data["pairs"], list) else [None]):
        if not isinstance(pair, dict) or not {"teacher", "student"} <= set(pair):
            raise UsageError(f"{where}: pairs[{i}] needs teacher and student.")
        _check_keys(pair, PAIR_KEYS, f"{where}: pairs[{i}]")
        for key in PAIR_STRINGS:
            if key in pair and (not isinstance(pair[key], str) or not pair[key].strip()):
                raise UsageError(f"{where}: pairs[{i}].{key} must be a non-empty string.")
        pairs.append(
            Pair(
                pair["teacher"],
                pair["student"],
                pair.get("teacher_weights"),
                pair.get("name"),
                pair.get("dataset"),
            )
        )
        if not isinstance(pair.get("preset", {}), dict):
            raise UsageError(f"{where}: pairs[{i}].preset must be a table {{method = preset}}.")
        pair_presets[pairs[-1].label] = pair.get("preset", {})
    variants = []
    for i, variant in enumerate(data.get("variants", [])):
        _check_keys(variant, VARIANT_KEYS, f"{where}: variants[{i}]")
        if not variant.get("label"):
            raise UsageError(f"{where}: variants[{i}] needs a label.")
        options = _strings(variant.get("options", []), "options", f"{where}: variants[{i}]")
        variants.append(Variant(variant["label"], tuple(options)))
    per_method = data.get("method", {})
    for name, table in per_method.items():
        _check_keys(table, METHOD_KEYS, f"{where}: [method.{name}]")
        if name not in data["methods"]:
            raise UsageError(f"{where}: [method.{name}] configures a method not in 'methods'.")
        if "seeds" in table:
            table["seeds"] = seed_list(table["seeds"], f"{where}: [method.{name}]")
    epochs = data.get("epochs")
    if epochs is not None and (not isinstance(epochs, int) or epochs < 1):
        raise UsageError(f"{where}: epochs must be a positive integer.")
    return Matrix(
        dataset=data["dataset"],
        methods=_strings(data["methods"], "methods", where),
        pairs=pairs,
        seeds=seed_list(data.get("seeds", 1), where),
        preset=_strings(data.get("preset", []), "preset", where),
        options=_strings(data.get("options", []), "options", where),
        variants=variants or [Variant()],
        epochs=epochs,
        mixed_precision=data.get("mixed_precision", "no"),
        quantize=data.get("quantize"),
        data_root=data.get("data_root"),
        per_method=per_method,
        pair_presets=pair_presets,
    )


def resolve(matrix: Matrix, plugins: Any) -> tuple[list[Cell], list[str]]:
    """The matrix's cells, and one error line per bad (method, pair, variant): an unknown
    method, model, dataset, preset or option, checked as ``dfkd run`` would check it."""
    from dfkd.models import check_model_name
    from dfkd.models.fake_quant import SCHEMES
    from dfkd.options import build_options
    from dfkd.synthesis.options import fit_milestones
    from dfkd.training.precision import PRECISIONS

    errors: list[str] = []
    try:
        plugins.datasets.get(matrix.dataset)
    except DfkdError as exc:
        errors.append(f"dataset: {exc}")
    for pair in (p for p in matrix.pairs if p.dataset):
        try:
            plugins.datasets.get(pair.dataset)
        except DfkdError as exc:
            errors.append(f"{pair.label}: dataset: {exc}")
    cells: list[Cell] = []
    for method, pair, variant in matrix.groups():
        settings = matrix.per_method.get(method, {})
        where = " ".join(p for p in (method, variant.label, pair.label) if p)
        try:
            for model in (pair.teacher, pair.student):
                check_model_name(model, plugins)
            entry = plugins.methods.get(method)
            presets = entry.info.get("presets", {})
            chosen = matrix.pair_presets.get(pair.label, {}).get(
                method, settings.get("preset", matrix.preset)
            )
            wanted = _strings(chosen, "preset", where)
            preset = next((p for p in wanted if p in presets), None)
            if wanted and preset is None:
                known = ", ".join(presets) or "none"
                tried = " or ".join(f"'{p}'" for p in wanted)
                raise UsageError(f"method {method} has no preset {tried}. Presets: {known}.")
            options = [
                *matrix.options,
                *_strings(settings.get("options", []), "options", where),
                *variant.options,
                *([f"epochs={matrix.epochs}"] if matrix.epochs else []),
            ]
            values, _ = fit_milestones(entry.info["options"], presets.get(preset, {}), options)
            build_options(entry.info["options"], values, options)
        except DfkdError as exc:
            errors.append(f"{where}: {exc}")
            continue
        precision = settings.get("mixed_precision", matrix.mixed_precision)
        if precision not in PRECISIONS:
            errors.append(
                f"{where}: mixed_precision must be {', '.join(PRECISIONS)}, not '{precision}'."
            )
            continue
        quantize = settings.get("quantize", matrix.quantize)
        if quantize is not None and quantize not in SCHEMES:
            errors.append(f"{where}: quantize must be {', '.join(SCHEMES)}, not '{quantize}'.")
            continue
        cells += [
            Cell(
                method,
                pair,
                seed,
                pair.dataset or matrix.dataset,
                preset,
                variant,
                tuple(options),
                precision,
                matrix.data_root,
                quantize,
            )
            for seed in settings.get("seeds", matrix.seeds)
        ]
    errors += [
        f"cell {name} appears {count} times: a method, pair, seed or variant label is listed "
        "twice (pairs of the same teacher and student need a name each)."
        for name, count in Counter(c.name for c in cells).items()
        if count > 1
    ]
    return cells, errors
