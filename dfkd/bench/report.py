"""The bench report: the table researchers publish, its cost, and the pictures behind them.

Built from the cell directories alone (``cell.json`` and ``metrics.jsonl``), so
``dfkd bench --report-only`` rebuilds it at any time, also while cells still run. Tables lead
with the last epoch, the number a data-free method can honestly claim; the best epoch is
chosen by looking at the test set and is always labelled so.
"""

from __future__ import annotations

import csv
import io
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dfkd.bench.runner import CELL_FILE, CELLS, SCORES, read_cell, summarize
from dfkd.errors import UsageError
from dfkd.fileio import write_atomic
from dfkd.training.runs import RunDir

REPORT = "report.md"
TABLE = "report.csv"
COST = "cost.md"
ACCURACY_PNG = "accuracy.png"
TIME_PNG = "accuracy_vs_time.png"
SAMPLES_PNG = "samples.png"


@dataclass
class Group:
    """One table cell: a (method, variant) row at a pair column, over its seeds."""

    method: str
    variant: str
    pair: str
    done: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    stopped: list[dict[str, Any]] = field(default_factory=list)  # by a signal; a bench resumes

    @property
    def ended(self) -> list[dict[str, Any]]:
        """Every seed's record, done or not."""
        return self.done + self.failed + self.stopped

    @property
    def row(self) -> str:
        return f"{self.method} [{self.variant}]" if self.variant else self.method

    def mean(self, key: str) -> float | None:
        values = [c[key] for c in self.done if c.get(key) is not None]
        return statistics.mean(values) if values else None

    def std(self, key: str) -> float | None:
        values = [c[key] for c in self.done if c.get(key) is not None]
        return statistics.stdev(values) if len(values) > 1 else (0.0 if values else None)

    def agreement_mean(self) -> float | None:
        values = [c["best_by_agreement"]["score"] for c in self.done if c.get("best_by_agreement")]
        return statistics.mean(values) if values else None

    def maximum(self, key: str) -> float | None:
        values = [c[key] for c in self.done if c.get(key) is not None]
        return max(values) if values else None


def load_cells(bench_dir: Path) -> list[dict[str, Any]]:
    """Every cell with a ``cell.json``, in seed order within its group."""
    root = bench_dir / CELLS
    if not root.is_dir():
        raise UsageError(f"{bench_dir} holds no bench cells ({root} is missing).")
    records = []
    for path in sorted(p for p in root.iterdir() if p.is_dir()):
        record = read_cell(path)
        if record is not None:  # scores from the metrics, as this dfkd reads them
            summary = summarize(RunDir(path).read_metrics())
            records.append(record | summary | {"dir": str(path)})
    if not records:
        raise UsageError(f"No cell in {root} has ended yet (none has a {CELL_FILE}).")
    return sorted(records, key=lambda r: r["seed"])


def group_cells(records: list[dict[str, Any]]) -> tuple[list[Group], list[str], list[str]]:
    """Groups in first-seen order, with the row labels and pair columns of the table."""
    groups: dict[tuple[str, str, str], Group] = {}
    for record in records:
        key = (record["method"], record["variant"], record["pair"])
        group = groups.setdefault(key, Group(*key))
        outcome = {"done": group.done, "stopped": group.stopped}
        outcome.get(record["status"], group.failed).append(record)
    rows = list(dict.fromkeys(g.row for g in groups.values()))
    pairs = list(dict.fromkeys(g.pair for g in groups.values()))
    return list(groups.values()), rows, pairs


def write_report(bench_dir: Path) -> list[Path]:
    """Write report.md, report.csv, cost.md and the three PNGs; return their paths."""
    records = load_cells(bench_dir)
    groups, rows, pairs = group_cells(records)
    by_place = {(g.row, g.pair): g for g in groups}
    written = []
    for name, text in (
        (REPORT, accuracy_markdown(records, by_place, rows, pairs)),
        (TABLE, table_csv(groups)),
        (COST, cost_markdown(by_place, rows, pairs)),
    ):
        write_atomic(bench_dir / name, lambda tmp, text=text: tmp.write_text(text))
        written.append(bench_dir / name)
    from dfkd.bench import plots

    written += [
        plots.accuracy_curves(groups, pairs, bench_dir / ACCURACY_PNG),
        plots.accuracy_against_time(groups, pairs, bench_dir / TIME_PNG),
        plots.sample_grid(groups, rows, pairs, bench_dir / SAMPLES_PNG),
    ]
    return written


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _accuracy(group: Group | None) -> str:
    if group is None:
        return "—"
    seeds = len(group.ended)
    unfinished = [(len(group.failed), "failed"), (len(group.stopped), "stopped, to resume")]
    if not group.done:
        return ", ".join(f"{what} ({n} of {seeds})" for n, what in unfinished if n)
    text = f"{_pct(group.mean('last_score'))} ± {_pct(group.std('last_score'))}"
    text += f" ({_pct(group.mean('best_score_test_selected'))})"
    return "".join([text, *(f", {n} of {seeds} {what}" for n, what in unfinished if n)])


def _table(header: list[str], lines: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(line) + " |" for line in lines]
    return "\n".join(out) + "\n"


def accuracy_markdown(
    records: list[dict[str, Any]],
    by_place: dict[tuple[str, str], Group],
    rows: list[str],
    pairs: list[str],
) -> str:
    datasets = ", ".join(dict.fromkeys(r["dataset"] for r in records))
    seeds = sorted({r["seed"] for r in records})
    header = ["method", *pairs]
    scores = " and ".join(dict.fromkeys(SCORES[r["score"]] for r in records if r["score"]))
    scores = scores or "score"
    text = [
        f"# Benchmark: {datasets}\n",
        f"Test split, {scores} %: **mean ± std over seeds of the last epoch** "
        f"(seeds {', '.join(map(str, seeds))}). In brackets: the mean of each seed's best epoch, "
        "**selected on the test set** (an optimistic number no data-free user could pick).\n",
        _table(
            [*header[:1], *(f"{p} (best: test-selected)" for p in pairs)],
            [[row, *(_accuracy(by_place.get((row, p))) for p in pairs)] for row in rows],
        ),
    ]
    if any(r.get("best_by_agreement") for r in records):
        text += [
            f"Selected without the test set: mean {scores} % at each seed's epoch of highest "
            "teacher-student agreement (`agree`).\n",
            _table(
                header,
                [[row, *(_agreement(by_place.get((row, p))) for p in pairs)] for row in rows],
            ),
        ]
    teachers = {p: _teacher_score(records, p) for p in pairs}
    if any(score is not None for score in teachers.values()):
        text += [
            "Share of the teacher: the last epoch's mean as a % of the teacher's own test score "
            "(its sidecar's): "
            + ", ".join(f"{p} {_pct(t)}" for p, t in teachers.items() if t is not None)
            + ".\n",
            _table(
                header,
                [
                    [row, *(_share(by_place.get((row, p)), teachers[p]) for p in pairs)]
                    for row in rows
                ],
            ),
        ]
    presets = dict.fromkeys(f"{r['method']}: {r['preset'] or 'defaults'}" for r in records)
    text.append(f"Presets: {'; '.join(presets)}.\n")
    quantized = dict.fromkeys(
        f"{r['method']}: {r['quantize']}" for r in records if r.get("quantize")
    )
    if quantized:
        text.append(
            f"Students trained fake-quantised (`--quantize`; their scores are the rounded "
            f"model's): {'; '.join(quantized)}.\n"
        )
    for status, heading in (("failed", "Failed cells"), ("stopped", "Stopped cells (to resume)")):
        unfinished = [r for r in records if r["status"] == status]
        if unfinished:
            text.append(f"{heading}:\n")
            text += [f"- `{r['cell']}`: {r['error']}" for r in unfinished]
            text.append("")
    guarded = [r for r in records if r.get("guard_events")]
    text.append(
        f"Collapse guard: rolled back {sum(len(r['guard_events']) for r in guarded)} epoch(s) in "
        f"{len(guarded)} of {len(records)} cells" + (":\n" if guarded else ".\n")
    )
    if guarded:
        text += [f"- `{r['cell']}`: {'; '.join(r['guard_events'])}" for r in guarded]
        text.append("")
    overruled = [r for r in records if r.get("guard_notes")]
    if overruled:
        text.append("Collapse guard, seen and not acted on:\n")
        text += [f"- `{r['cell']}`: {'; '.join(r['guard_notes'])}" for r in overruled]
        text.append("")
    weak = [r for r in records if r.get("weak_student")]
    if weak:
        text.append("Weak students (their run's `weak student` line; no test split needed):\n")
        text += [f"- `{r['cell']}`: {r['weak_student']}" for r in weak]
        text.append("")
    embeddings = {}
    for r in records:
        if r.get("embeddings"):
            embeddings.setdefault(r["method"], {}).setdefault(r["embeddings"], 0)
            embeddings[r["method"]][r["embeddings"]] += 1
    for method, sources in embeddings.items():
        listed = ", ".join(f"{source} ({n} cells)" for source, n in sources.items())
        text.append(f"Label embeddings of {method}: {listed}.\n")
    versions: dict[str, str] = {}  # the core's, the libraries' and every method plugin's
    for record in records:
        versions |= record.get("versions") or {}
    versions.pop("lock", None)
    versions.pop("source", None)
    if versions:
        listed = ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))
        text.append(f"Versions: {listed}.\n")
    recorded = [r["versions"] for r in records if r.get("versions")]  # a cell may fail before
    locks = dict.fromkeys(v.get("lock", "none recorded") for v in recorded)
    if locks:
        text.append(f"Lock: {'; '.join(locks)}.\n")
    sources = Counter(v["source"] for v in recorded if v.get("source"))
    if sources:
        listed = "; ".join(
            f"{commit} ({n} of {len(records)} cells)" for commit, n in sources.items()
        )
        text.append(f"Source (the commit each cell started from): {listed}.\n")
    return "\n".join(text)


def _teacher_score(records: list[dict[str, Any]], pair: str) -> float | None:
    """The test score the teacher of ``pair`` recorded in its weights' sidecar, if it did."""
    import json

    from dfkd.weights import read_meta

    for record in records:
        if record["pair"] != pair or not record.get("score"):
            continue
        try:  # the teacher the cell's run recorded (relative to where the bench ran)
            config = json.loads((Path(record["dir"]) / "config.json").read_text())
            weights = config["options"].get("teacher_weights")
            return read_meta(weights).get(record["score"]) if weights else None
        except (UsageError, OSError, ValueError, KeyError):
            return None
    return None


def _share(group: Group | None, teacher: float | None) -> str:
    last = group.mean("last_score") if group is not None else None
    return "—" if last is None or not teacher else f"{100 * last / teacher:.0f}"


def _agreement(group: Group | None) -> str:
    return _pct(group.agreement_mean() if group is not None else None)


def _cost(group: Group | None) -> str:
    if group is None or not group.done:
        return "—"
    minutes = group.mean("seconds") / 60
    text = f"{minutes:.1f} min"
    cpu = group.mean("cpu_seconds")
    if cpu is not None:
        text += f" / {cpu / 60:.1f} CPU-min"
    synthesis = group.mean("seconds_synthesis")
    if synthesis is not None and group.mean("seconds"):
        text += f" ({100 * synthesis / group.mean('seconds'):.0f} % synthesis)"
    rss = group.maximum("peak_rss_mb")
    if rss is not None:
        text += f", {rss:.0f} MB RSS"
    gpu = group.maximum("peak_gpu_mb")
    if gpu is not None:
        text += f", {gpu:.0f} MB GPU"
    return text


def cost_markdown(by_place: dict[tuple[str, str], Group], rows: list[str], pairs: list[str]) -> str:
    return "\n".join(
        [
            "# Cost per run\n",
            "Minutes per run: the mean over seeds of the epochs' own times (start-up and data "
            "loading left out), then the CPU minutes of the whole process (user + system, all "
            "threads: on a shared machine the fairer cost), with the share of the epochs spent "
            "synthesizing where the run records it. "
            "Peak memory: the largest resident set of a seed's process (MB), and the GPU's "
            "allocated peak where there is one.\n",
            _table(
                ["method", *pairs],
                [[row, *(_cost(by_place.get((row, p))) for p in pairs)] for row in rows],
            ),
        ]
    )


def table_csv(groups: list[Group]) -> str:
    """The accuracy and cost tables as one machine-readable row per (method, variant, pair)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        [
            "method",
            "variant",
            "pair",
            "preset",
            "seeds_done",
            "seeds_failed",
            "seeds_stopped",
            "score",
            "last_score_mean",
            "last_score_std",
            "best_score_test_selected_mean",
            "score_by_agreement_mean",
            "minutes_mean",
            "cpu_minutes_mean",
            "synthesis_minutes_mean",
            "peak_rss_mb",
            "peak_gpu_mb",
        ]
    )
    for g in groups:
        records = g.done or g.ended
        minutes = g.mean("seconds")
        cpu = g.mean("cpu_seconds")
        synthesis = g.mean("seconds_synthesis")
        writer.writerow(
            [
                g.method,
                g.variant,
                g.pair,
                records[0]["preset"] or "",
                len(g.done),
                len(g.failed),
                len(g.stopped),
                records[0]["score"] or "",
                _num(g.mean("last_score")),
                _num(g.std("last_score")),
                _num(g.mean("best_score_test_selected")),
                _num(g.agreement_mean()),
                _num(minutes / 60 if minutes is not None else None),
                _num(cpu / 60 if cpu is not None else None),
                _num(synthesis / 60 if synthesis is not None else None),
                _num(g.maximum("peak_rss_mb")),
                _num(g.maximum("peak_gpu_mb")),
            ]
        )
    return out.getvalue()


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"
