"""PNG plots of runs: the curves behind a bench table, and ``dfkd plot``'s comparison.

matplotlib draws off-screen (Agg), so plotting works on a headless training machine; it is
imported here, never by ``dfkd --help``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dfkd.bench.runner import SCORES, test_score_of
from dfkd.errors import UsageError
from dfkd.fileio import atomic_path
from dfkd.training.runs import RunDir


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    _pyplot().close(fig)
    return path


def _scored(run_dir: Path) -> tuple[str | None, list[dict[str, Any]]]:
    """A run's test score (``top1`` or ``miou``) and the rows that record it."""
    rows = RunDir(run_dir).read_metrics()
    key = test_score_of(rows)
    return key, [r for r in rows if key in r] if key else []


def _axis_label(keys: set[str | None]) -> str:
    return " / ".join(SCORES[k] for k in SCORES if k in keys) + " % (test split)"


def _band(curves: list[list[float]]) -> tuple[Any, Any]:
    """Mean and std over seeds of the epochs every seed reached."""
    import numpy as np

    n = min(len(c) for c in curves)
    values = np.array([c[:n] for c in curves], dtype=float)
    std = values.std(axis=0, ddof=1) if len(curves) > 1 else np.zeros(n)
    return values.mean(axis=0), std


def _pair_axes(plt: Any, pairs: list[str], xlabel: str, ylabel: str) -> tuple[Any, Any]:
    fig, axes = plt.subplots(
        1, len(pairs), figsize=(5.5 * len(pairs), 4.2), squeeze=False, sharey=True
    )
    for ax, pair in zip(axes[0], pairs, strict=True):
        ax.set_title(pair)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(ylabel)
    return fig, axes[0]


def _legend(ax: Any) -> None:
    """The methods' legend, or a note where every cell of the pair failed."""
    if ax.get_lines():
        ax.legend(fontsize="small")
    else:
        ax.text(0.5, 0.5, "no finished cells", ha="center", va="center", transform=ax.transAxes)


def _curves(group: Any) -> list[list[dict[str, Any]]]:
    """Each seed's scored rows."""
    return [_scored(Path(c["dir"]))[1] for c in group.done]


def _score_label(groups: list[Any]) -> str:
    return _axis_label({c.get("score") for g in groups for c in g.done})


def _values(rows: list[dict[str, Any]]) -> list[float]:
    return [r.get("top1", r.get("miou")) for r in rows]


def accuracy_curves(groups: list[Any], pairs: list[str], path: Path) -> Path:
    """The test score (top-1, or mIoU for segmentation) per epoch for every (method, variant)
    of each pair: the mean over seeds, with a band of ± one standard deviation."""
    import numpy as np

    plt = _pyplot()
    fig, axes = _pair_axes(plt, pairs, "epoch", _score_label(groups))
    for ax, pair in zip(axes, pairs, strict=True):
        ax.xaxis.get_major_locator().set_params(integer=True)
        for group in (g for g in groups if g.pair == pair and g.done):
            curves = [_values(rows) for rows in _curves(group)]
            mean, std = _band(curves)
            epochs = np.arange(1, len(mean) + 1)
            (line,) = ax.plot(epochs, mean, label=f"{group.row} ({len(curves)} seeds)")
            ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.2)
        _legend(ax)
    fig.tight_layout()
    return _save(fig, path)


def accuracy_against_time(groups: list[Any], pairs: list[str], path: Path) -> Path:
    """The test score against training minutes (mean over seeds), every method of a pair on
    one axes: which method gets where for what it costs."""
    import numpy as np

    plt = _pyplot()
    xlabel = "training minutes (sum of epoch times)"
    fig, axes = _pair_axes(plt, pairs, xlabel, _score_label(groups))
    for ax, pair in zip(axes, pairs, strict=True):
        for group in (g for g in groups if g.pair == pair and g.done):
            runs = _curves(group)
            accuracy, _ = _band([_values(rows) for rows in runs])
            minutes, _ = _band(
                [list(np.cumsum([r.get("seconds", 0.0) for r in rows]) / 60) for rows in runs]
            )
            ax.plot(minutes, accuracy, marker=".", label=group.row)
        _legend(ax)
    fig.tight_layout()
    return _save(fig, path)


def sample_grid(groups: list[Any], rows: list[str], pairs: list[str], path: Path) -> Path:
    """Each cell's ``samples.png`` (its lowest seed's), tiled: rows are methods, columns pairs."""
    plt = _pyplot()
    fig, axes = plt.subplots(
        len(rows), len(pairs), figsize=(3 * len(pairs), 3.2 * len(rows)), squeeze=False
    )
    places = {(g.row, g.pair): g for g in groups}
    for i, row in enumerate(rows):
        for j, pair in enumerate(pairs):
            ax = axes[i][j]
            ax.axis("off")
            group = places.get((row, pair))
            cells = [] if group is None else sorted(group.ended, key=_seed)
            found = next((Path(c["dir"]) / "samples.png" for c in cells if _has_samples(c)), None)
            ax.set_title(f"{row}\n{pair}", fontsize="small")
            if found is None:
                ax.text(0.5, 0.5, "no samples", ha="center", va="center", transform=ax.transAxes)
            else:
                ax.imshow(plt.imread(found), cmap="gray")
    fig.tight_layout()
    return _save(fig, path)


def _seed(record: dict[str, Any]) -> int:
    return record["seed"]


def _has_samples(record: dict[str, Any]) -> bool:
    return (Path(record["dir"]) / "samples.png").is_file()


#: what ``dfkd plot`` draws for a run without a test split (a teacher-only run)
AGREE = "agree"
AGREE_LABEL = "agreement with the teacher % (synthetic validation set)"


def _plotted(run_dir: Path) -> tuple[str, list[dict[str, Any]]]:
    """The score ``dfkd plot`` draws for a run and the rows that record it: its test score, or
    where it has none (no test split) its agreement with the teacher."""
    if not run_dir.exists():
        raise UsageError(f"{run_dir} does not exist.")
    key, rows = _scored(run_dir)
    if key is None:
        key, rows = AGREE, [r for r in RunDir(run_dir).read_metrics() if AGREE in r]
    if not rows:
        raise UsageError(
            f"{run_dir} has no score to plot yet (no top1, miou or agree rows in metrics.jsonl)."
        )
    return key, rows


#: what ``dfkd plot --x`` may put on the horizontal axis
X_AXES = ("epoch", "steps")


def _student_steps(run_dir: Path) -> int:
    """Student steps per epoch of a data-free run (its method's ``ep_steps``): what a budget is
    counted in, since epochs of two methods or presets differ in length."""
    options = RunDir(run_dir).read_config()["options"]
    steps = options.get("resolved_options", {}).get("ep_steps")
    if not isinstance(steps, int):
        raise UsageError(
            f"{run_dir} records no student steps per epoch (a dfkd run's ep_steps); plot it "
            "with --x epoch."
        )
    return steps


def plot_runs(run_dirs: list[Path], out: Path, x: str = "epoch") -> tuple[Path, list[Path]]:
    """``dfkd plot``: the test-score curve (top-1 or mIoU) of each run, finished or still
    training, on one axes, against epochs or student steps; a run without a test split draws
    its agreement with the teacher. Returns the PNG and the runs drawn by agreement, which the
    command names."""
    if x not in X_AXES:
        raise UsageError(f"--x must be {' or '.join(X_AXES)}, not '{x}'.")
    runs = [(run_dir, *_plotted(run_dir)) for run_dir in run_dirs]
    per_epoch = {run_dir: _student_steps(run_dir) if x == "steps" else 1 for run_dir in run_dirs}
    keys = {key for _, key, _ in runs}
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.xaxis.get_major_locator().set_params(integer=True)
    for run_dir, key, rows in runs:
        label = run_dir.name + (" (agreement)" if key == AGREE and len(keys) > 1 else "")
        xs = [r["epoch"] * per_epoch[run_dir] for r in rows]
        ax.plot(xs, [r[key] for r in rows], marker=".", label=label)
    ax.set_xlabel("epoch" if x == "epoch" else "student steps")
    tested = keys - {AGREE}
    labels = [_axis_label(tested)] if tested else []
    if AGREE in keys:
        labels.append(AGREE_LABEL)
    ax.set_ylabel(" / ".join(labels))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return _save(fig, out), [run_dir for run_dir, key, _ in runs if key == AGREE]
