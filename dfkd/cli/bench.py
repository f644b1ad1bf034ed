"""`dfkd bench`: a matrix of data-free runs and the report researchers publish from it."""

from __future__ import annotations

import contextlib
import shlex
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from dfkd.cli import options as opts
from dfkd.cli.console import console, err_console, guarded, require_options
from dfkd.plugins import Plugins

PANEL = "Results"


def add_commands(app: typer.Typer, plugins: Plugins) -> None:
    @app.command(rich_help_panel=PANEL)
    @guarded
    def bench(
        file: Annotated[
            str,
            typer.Argument(
                help="Bench file (TOML), e.g. benchmarks/fashion-mnist.toml.", metavar="BENCH_FILE"
            ),
        ] = None,
        methods: Annotated[str, typer.Option(help="Methods, comma-separated.")] = None,
        pairs: Annotated[
            str,
            typer.Option(
                help="TEACHER:STUDENT pairs, comma-separated (TEACHER->STUDENT when a name has "
                "a colon; @WEIGHTS names the teacher's file)."
            ),
        ] = None,
        dataset: opts.Dataset = None,
        preset: Annotated[str, typer.Option(help="Every method's preset of this name.")] = None,
        option: Annotated[
            list[str], typer.Option("--option", "-o", help="Method option key=value, all cells.")
        ] = None,
        seeds: Annotated[
            int, typer.Option(help="Seeds 0..N-1 (default 1; overrides a bench file's).")
        ] = None,
        epochs: Annotated[int, typer.Option(help="Epochs of every cell (over presets).")] = None,
        mixed_precision: opts.Precision = None,
        data_root: opts.DataRoot = None,
        out: Annotated[
            str,
            typer.Option(
                "--out",
                "-O",
                help="Bench directory (default runs/bench-<file>, or -<dataset>-<methods>).",
            ),
        ] = None,
        jobs: Annotated[int, typer.Option(help="Cells run side by side.")] = 1,
        threads_per_job: Annotated[int, typer.Option(help="Torch threads of each cell.")] = 1,
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="Check every cell and list them; run nothing.")
        ] = False,
        report_only: Annotated[
            str,
            typer.Option(help="Rebuild the report of this bench directory.", metavar="BENCH_DIR"),
        ] = None,
    ) -> None:
        """Benchmark methods x pairs x seeds: accuracy and cost tables, and plots.

        A bench started again skips finished cells and resumes the one that was running.
        """
        from dfkd.bench.matrix import Matrix, load_matrix, parse_pairs, resolve
        from dfkd.bench.report import write_report
        from dfkd.errors import UsageError

        if report_only:
            flags = {"BENCH_FILE": file, "--out": out, "--methods": methods, "--pairs": pairs}
            flags |= {"--dataset": dataset, "--preset": preset, "-o": option, "--seeds": seeds}
            flags |= {"--epochs": epochs, "--mixed-precision": mixed_precision}
            flags |= {"--data-root": data_root, "--dry-run": dry_run}
            given = [k for k, v in flags.items() if v is not None and v is not False and v != []]
            if given:
                raise UsageError(
                    f"--report-only rewrites the report inside {report_only} and runs nothing; "
                    f"leave out {', '.join(given)}."
                )
            for path in write_report(Path(report_only)):
                console.print(str(path), highlight=False)
            return
        if jobs < 1 or threads_per_job < 1:
            raise UsageError("--jobs and --threads-per-job must be at least 1.")
        if file:
            flags = {"--methods": methods, "--pairs": pairs, "--dataset": dataset}
            flags |= {"--preset": preset, "-o": option, "--mixed-precision": mixed_precision}
            given = [k for k, v in flags.items() if v]
            if given:
                raise UsageError(
                    f"{', '.join(given)} cannot be combined with a bench file; edit the file "
                    "(--seeds, --epochs and --data-root may override it)."
                )
            matrix = load_matrix(Path(file))
            default_out = Path("runs") / f"bench-{Path(file).stem}"
        else:
            require_options(methods=methods, pairs=pairs, dataset=dataset)
            matrix = Matrix(
                dataset=dataset,
                methods=[m.strip() for m in methods.split(",") if m.strip()],
                pairs=parse_pairs(pairs),
                seeds=[0],
                preset=[preset] if preset else [],
                options=list(option or []),
                mixed_precision=mixed_precision or "no",
            )
            name = "-".join([dataset, *matrix.methods])
            default_out = Path("runs") / f"bench-{name.replace(':', '_').replace('/', '_')}"
        if seeds is not None:
            if seeds < 1:
                raise UsageError("--seeds must be at least 1.")
            matrix.seeds = list(range(seeds))
        if epochs is not None:
            matrix.epochs = epochs
        if data_root:  # where the data lives is the machine's business, not the file's
            matrix.data_root = data_root
        cells, errors = resolve(matrix, plugins)
        if errors:
            _refuse(errors)
        bench_dir = Path(out) if out else default_out
        missing = _missing_teachers(matrix)
        if dry_run:  # the cells, then every teacher they lack: a dry run checks what a run does
            _list_cells(cells, _steps(cells, bench_dir), bench_dir)
        if missing:
            _refuse(missing)
        if not dry_run:
            _run(cells, _steps(cells, bench_dir), bench_dir, jobs, threads_per_job)


def _refuse(lines: list[str]) -> None:
    """Every problem, one line each, then exit 2: a bench file is fixed in one go."""
    for line in lines:
        err_console.print(f"[red]Error:[/] {escape(line)}", highlight=False)
    raise typer.Exit(2)


def _steps(cells, bench_dir: Path) -> dict[str, str]:
    """What each cell needs next (runner.plan), or one line per cell directory in the way."""
    from dfkd.bench.runner import plan
    from dfkd.errors import UsageError

    try:
        return plan(cells, bench_dir)
    except UsageError as exc:
        _refuse(str(exc).splitlines())


def _missing_teachers(matrix) -> list[str]:
    """One line per teacher file that is not where the runs will look for it."""
    from dfkd.training.setup import default_weights_path

    lines = {}
    for pair in matrix.pairs:
        dataset = pair.dataset or matrix.dataset  # a pair's teacher may know other data
        path = Path(pair.teacher_weights or default_weights_path(dataset, pair.teacher))
        if not path.is_file():
            lines[path] = (
                f"{pair.name or pair.teacher}: no teacher weights at {path}. Train them with "
                f"'dfkd scratch --model {pair.teacher} --dataset {dataset}' or name a file "
                "(teacher_weights in the bench file, @FILE after the pair)."
            )
    return list(lines.values())


def _list_cells(cells, steps: dict[str, str], bench_dir: Path) -> None:
    from dfkd.bench.runner import cell_dir

    for cell in cells:
        args = cell.run_arguments(cell_dir(bench_dir, cell))
        step = steps[cell.name]
        console.print(f"{cell.name} ({step}): dfkd {shlex.join(args)}", markup=False)
    groups = len({c.group for c in cells})
    err_console.print(
        f"{len(cells)} cells ({groups} method x pair x variant, "
        f"{len(cells) // max(groups, 1)} seeds each) into {bench_dir}",
        highlight=False,
    )


@contextlib.contextmanager
def _stopping_on_signals() -> Iterator[None]:
    """A bench killed with SIGTERM or SIGHUP (a closed terminal) stops like one interrupted
    with Ctrl-C: its running cells are stopped too, not left running without it."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _run(cells, steps: dict[str, str], bench_dir: Path, jobs: int, threads: int) -> None:
    from dfkd.bench.report import write_report
    from dfkd.bench.runner import SCORES, SubprocessRunner, run_bench
    from dfkd.errors import DfkdError

    counts = {s: sum(1 for v in steps.values() if v == s) for s in ("done", "resume", "start")}
    err_console.print(
        f"{len(cells)} cells: {counts['done']} done, {counts['resume']} to resume, "
        f"{counts['start']} to start, {jobs} at a time; logs in {bench_dir / 'logs'}",
        highlight=False,
    )
    ended = 0
    unfinished: dict[str, list[str]] = {"failed": [], "stopped": []}

    def on_cell(record: dict) -> None:
        nonlocal ended
        ended += 1
        where = f"[{ended}/{len(cells) - counts['done']}] {record['cell']}"
        if record["status"] == "stopped":
            unfinished["stopped"].append(record["cell"])
            err_console.print(
                f"{where}: [yellow]stopped[/] ({escape(record['error'])}); the next bench "
                "resumes it",
                highlight=False,
            )
            return
        if record["status"] != "done":
            unfinished["failed"].append(record["cell"])
            err_console.print(
                f"{where}: [red]failed[/]: {escape(record['error'])}", highlight=False
            )
            return
        err_console.print(
            f"{where}: last {SCORES.get(record['score'], 'score')} {record['last_score']:.2f}% "
            f"(best epoch {record['best_epoch_test_selected']}, test-selected: "
            f"{record['best_score_test_selected']:.2f}%), {record['seconds'] / 60:.1f} min",
            highlight=False,
        )

    with _stopping_on_signals():
        run_bench(cells, bench_dir, SubprocessRunner(threads), jobs=jobs, on_cell=on_cell)
    for path in write_report(bench_dir):
        console.print(str(path), highlight=False)
    failed, stopped = unfinished["failed"], unfinished["stopped"]
    said = []
    if failed:
        said.append(
            f"{len(failed)} of {len(cells)} cells failed; their errors are in "
            f"{bench_dir / 'report.md'}"
        )
    if stopped:
        said.append(f"{len(stopped)} of {len(cells)} cells were stopped by a signal")
    if said:
        raise DfkdError(f"{'; '.join(said)}. Run the bench again to retry or resume them.")
