"""`dfkd bench` and `dfkd plot`: matrices, validation, resumable cells, the report and its plots."""

from __future__ import annotations

import csv
import gzip
import json
import struct
import subprocess
import sys
from collections import Counter
from importlib.metadata import version
from pathlib import Path

import dfkd_plugin_dafl
import numpy as np
import pytest
from typer.testing import CliRunner

from dfkd.bench.matrix import Cell, Pair, load_matrix, parse_pairs, resolve
from dfkd.bench.runner import Finished, cell_record, plan, run_bench, run_cell
from dfkd.cli import make_app
from dfkd.errors import UsageError
from dfkd.plugins import Plugins
from dfkd.testing import KillAfterEpoch, make_plugins, make_tiny_images, run_held_elsewhere

REPO = Path(__file__).resolve().parents[1]
# a DAFL run of about a second on tiny data
QUICK = ["ep_steps=2", "kd_steps=1", "batch_size=8", "nz=8", "ngf=4"]


def dafl_plugins() -> Plugins:
    return make_plugins((dfkd_plugin_dafl, "dfkd-plugin-dafl"))


@pytest.fixture
def bench_cli(workdir):
    app = make_app(dafl_plugins())
    return lambda *args: CliRunner().invoke(app, [str(a) for a in args])


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def teachers_in_place(dataset: str, pairs: list[Pair]) -> None:
    """An (empty) file where each pair's teacher is looked for: a dry run checks they exist."""
    from dfkd.training.setup import default_weights_path

    for pair in pairs:
        teacher_data = pair.dataset or dataset
        path = Path(pair.teacher_weights or default_weights_path(teacher_data, pair.teacher))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()


def test_a_matrix_from_the_command_line_is_every_method_pair_and_seed(bench_cli, workdir):
    pairs = "lenet5:lenet5_half,lenet5_bn:lenet5_half"
    teachers_in_place("tiny", parse_pairs(pairs))
    shown = bench_cli(
        "bench", "--methods", "dafl", "--pairs", pairs,
        "--seeds", "2", "--dataset", "tiny", "--preset", "fashion-mnist", "-o", "lr=0.5",
        "--epochs", "1", "--out", "b", "--dry-run",
    )  # fmt: skip
    assert shown.exit_code == 0, shown.output
    lines = [line for line in shown.stdout.splitlines() if "dfkd run" in line]
    assert [line.split(" ")[0] for line in lines] == [
        "dafl-lenet5-lenet5_half-seed0",
        "dafl-lenet5-lenet5_half-seed1",
        "dafl-lenet5_bn-lenet5_half-seed0",
        "dafl-lenet5_bn-lenet5_half-seed1",
    ]
    assert all("--preset fashion-mnist -o lr=0.5 -o epochs=1" in line for line in lines)
    assert "--teacher lenet5_bn --student lenet5_half" in lines[2]
    assert not (workdir / "b").exists()


@pytest.mark.parametrize(("scheme", "error"), [("w4a4", None), ("w3a3", "quantize must be")])
def test_a_bench_file_distils_quantisation_aware_students(tmp_path, scheme, error):
    file = _write(
        tmp_path / "b.toml",
        f"""
dataset = "tiny"
methods = ["dafl"]

[method.dafl]
quantize = "{scheme}"

[[pairs]]
teacher = "lenet5"
student = "lenet5_half"
""",
    )
    cells, errors = resolve(load_matrix(file), dafl_plugins())
    if error:
        assert len(errors) == 1 and error in errors[0] and not cells
        return
    assert errors == [] and cells[0].quantize == "w4a4"
    args = cells[0].run_arguments(Path("cell"))
    assert args[args.index("--quantize") + 1] == "w4a4"


def test_a_bench_file_names_presets_per_method_and_pair_variants_and_seeds(tmp_path):
    file = _write(
        tmp_path / "b.toml",
        """
dataset = "tiny"
methods = ["dafl"]
seeds = [3, 5]
preset = ["cifar100", "fashion-mnist"]   # the first one the method has
epochs = 2

[[pairs]]
teacher = "lenet5"
student = "lenet5_half"
teacher_weights = "t.safetensors"

[[pairs]]
teacher = "lenet5_bn"
student = "lenet5_half"
preset = { dafl = "cifar10" }

[method.dafl]
options = ["nz=8"]
mixed_precision = "bf16"

[[variants]]
label = "T20"
options = ["T=20"]

[[variants]]
label = "T1"
options = ["T=1"]
""",
    )
    cells, errors = resolve(load_matrix(file), dafl_plugins())
    assert errors == []
    assert len(cells) == 2 * 2 * 2
    first = cells[0]
    assert first.name == "dafl-T20-lenet5-lenet5_half-seed3"
    assert first.preset == "fashion-mnist"
    assert first.options == ("nz=8", "T=20", "epochs=2")
    assert first.mixed_precision == "bf16"
    assert first.pair.teacher_weights == "t.safetensors"
    assert {c.seed for c in cells} == {3, 5}
    assert {c.preset for c in cells if c.pair.teacher == "lenet5_bn"} == {"cifar10"}
    args = first.run_arguments(Path("cell"))
    assert args[:2] == ["run", "dafl"]
    assert "--teacher-weights" in args and "--mixed-precision" in args


def test_pairs_name_their_own_dataset_and_methods_their_own_seeds(tmp_path):
    file = _write(
        tmp_path / "b.toml",
        """
dataset = "fashion-mnist"
methods = ["dafl", "dfq"]
[method.dafl]
seeds = [0, 4]
[[pairs]]
name = "plain"
teacher = "lenet5_bn"
student = "lenet5_half"
teacher_weights = "a.safetensors"
[[pairs]]
name = "five-class"
teacher = "lenet5_bn"
student = "lenet5_half"
teacher_weights = "b.safetensors"
dataset = "folder:data/five"
""",
    )
    cells, errors = resolve(load_matrix(file), Plugins())  # the installed methods
    assert errors == []
    assert [(c.name, c.dataset) for c in cells] == [
        ("dafl-plain-lenet5_bn-lenet5_half-seed0", "fashion-mnist"),
        ("dafl-plain-lenet5_bn-lenet5_half-seed4", "fashion-mnist"),
        ("dafl-five-class-lenet5_bn-lenet5_half-seed0", "folder:data/five"),
        ("dafl-five-class-lenet5_bn-lenet5_half-seed4", "folder:data/five"),
        ("dfq-plain-lenet5_bn-lenet5_half-seed0", "fashion-mnist"),
        ("dfq-five-class-lenet5_bn-lenet5_half-seed0", "folder:data/five"),
    ]
    assert cells[2].describe()["pair"] == "five-class (lenet5_bn → lenet5_half)"
    args = cells[2].run_arguments(Path("cell"))
    assert args[args.index("--dataset") + 1] == "folder:data/five"
    assert args[args.index("--teacher-weights") + 1] == "b.safetensors"


PAIR = '[[pairs]]\nteacher = "lenet5"\nstudent = "lenet5_half"\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (PAIR + 'name = ""', "pairs[0].name must be a non-empty string."),
        (PAIR + "dataset = 3", "pairs[0].dataset must be a non-empty string."),
        (PAIR + "[method.dafl]\nseeds = 0", "[method.dafl]: seeds must be a count (3) or a list"),
        (PAIR + '[method.dafl]\nseeds = ["a"]', "[method.dafl]: seeds must be a count"),
    ],
)
def test_bad_pair_and_method_keys_are_one_line(tmp_path, text, message):
    file = _write(tmp_path / "b.toml", f'dataset = "tiny"\nmethods = ["dafl"]\n{text}\n')
    with pytest.raises(UsageError) as caught:
        load_matrix(file)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_pairs_unknown_dataset_and_unnamed_twin_pairs_are_refused(tmp_path):
    file = _write(
        tmp_path / "b.toml",
        f"""dataset = "tiny"\nmethods = ["dafl"]\n{PAIR}dataset = "tinyy"\n{PAIR}{PAIR}""",
    )
    _, errors = resolve(load_matrix(file), dafl_plugins())
    assert errors[0].startswith("lenet5 → lenet5_half: dataset: Unknown dataset 'tinyy'.")
    assert len(errors) == 2
    assert "cell dafl-lenet5-lenet5_half-seed0 appears 3 times" in errors[1]
    assert "need a name each" in errors[1]


def test_every_bad_cell_is_one_line_and_nothing_runs(bench_cli, workdir):
    file = _write(
        workdir / "bad.toml",
        """
dataset = "tiny"
methods = ["dafl", "dafel"]
preset = "cifar100"
[method.dafl]
preset = "fashion-mnist"
[[pairs]]
teacher = "lenet5"
student = "lenet5_half"
[[pairs]]
teacher = "lenet9"
student = "lenet5_half"
[[variants]]
label = "typo"
options = ["lrr=0.1"]
""",
    )
    done = bench_cli("bench", file, "--out", "b")
    assert done.exit_code == 2
    lines = done.output.strip().splitlines()
    assert len(lines) == 4, done.output  # (dafl, dafel) x (lenet5, lenet9), one variant
    assert all(line.startswith("Error: ") for line in lines)
    assert "dafl typo lenet5 → lenet5_half: Unknown option 'lrr'" in lines[0]
    assert "lenet9" in lines[1]
    assert "dafel" in lines[2] and "dafel" in lines[3]
    assert not (workdir / "b").exists()
    preset = bench_cli(
        "bench", "--methods", "dafl", "--pairs", "lenet5:lenet5_half", "--dataset", "tiny",
        "--preset", "cifar100", "--dry-run",
    )  # fmt: skip
    assert preset.exit_code == 2
    assert "method dafl has no preset 'cifar100'. Presets: cifar10, fashion-mnist" in preset.output
    twice = bench_cli(
        "bench", "--methods", "dafl,dafl", "--pairs", "lenet5:lenet5_half", "--dataset", "tiny",
        "--dry-run",
    )  # fmt: skip
    assert twice.exit_code == 2
    assert "cell dafl-lenet5-lenet5_half-seed0 appears 2 times" in twice.output
    teachers = bench_cli(
        "bench", "--methods", "dafl", "--dataset", "tiny", "--out", "b",
        "--pairs", "lenet5:lenet5_half@a.safetensors,lenet5_bn:lenet5_half@b.safetensors",
    )  # fmt: skip
    assert teachers.exit_code == 2
    lines = teachers.output.strip().splitlines()
    assert [line.split(": ")[:2] for line in lines] == [["Error", "lenet5"], ["Error", "lenet5_bn"]]
    assert "no teacher weights at a.safetensors" in lines[0]
    assert not (workdir / "b").exists()


@pytest.mark.parametrize(("file", "pairs"), [("fashion-mnist", 2), ("cifar10", 5), ("cifar100", 5)])
def test_the_shipped_bench_files_resolve_every_cell(file, pairs, workdir):
    plugins = Plugins()  # the installed plugins, as `dfkd bench` sees them
    matrix = load_matrix(REPO / f"benchmarks/{file}.toml")
    teachers_in_place(matrix.dataset, matrix.pairs)
    done = CliRunner().invoke(
        make_app(plugins), ["bench", str(REPO / f"benchmarks/{file}.toml"), "--dry-run"]
    )
    assert done.exit_code == 0, done.output
    lines = [line for line in done.stdout.splitlines() if "dfkd run" in line]
    assert len(lines) == 9 * pairs * 3
    chosen = {
        (line.split(": dfkd run ")[1].split(" ")[0], line.split("--preset ")[1].split(" ")[0])
        for line in lines
    }
    assert {method for method, _ in chosen} == {
        "dafl", "zskt", "dfq", "deepinv", "cmi", "cudfkd", "dfad", "fast", "nayer"
    }  # fmt: skip
    for method, preset in chosen:
        if file == "cifar100":  # cifar100 where the method has it, else its cifar10 preset
            has = "cifar100" in plugins.methods.get(method).info["presets"]
            assert preset == ("cifar100" if has else "cifar10")
        elif file == "fashion-mnist":  # the README's table: what a user gets by default
            assert preset == "default"
        elif (method, preset) != ("cudfkd", "cifar10-r34-r18"):  # its resnet34 pair's own
            assert preset == file


def test_a_dry_run_lists_the_cells_then_refuses_the_teachers_they_lack(bench_cli, workdir):
    file = _write(
        workdir / "b.toml",
        """
dataset = "tiny"
methods = ["dafl"]
[[pairs]]
teacher = "lenet5"
student = "lenet5_half"
teacher_weights = "nowhere/t.safetensors"
[[pairs]]
name = "other-data"
teacher = "lenet5"
student = "lenet5_half"
dataset = "folder:mine"
""",
    )
    (workdir / "checkpoints").mkdir()
    (workdir / "checkpoints/tiny-lenet5.safetensors").touch()  # the file's dataset's teacher
    done = bench_cli("bench", file, "--dry-run")
    assert done.exit_code == 2, done.output
    assert len([line for line in done.stdout.splitlines() if ": dfkd run " in line]) == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error: ")]
    assert errors == [
        "Error: lenet5: no teacher weights at nowhere/t.safetensors. Train them with 'dfkd "
        "scratch --model lenet5 --dataset tiny' or name a file (teacher_weights in the bench "
        "file, @FILE after the pair).",
        "Error: other-data: no teacher weights at checkpoints/folder_mine-lenet5.safetensors. "
        "Train them with 'dfkd scratch --model lenet5 --dataset folder:mine' or name a file "
        "(teacher_weights in the bench file, @FILE after the pair).",
    ]
    teachers_in_place("tiny", load_matrix(file).pairs)
    done = bench_cli("bench", file, "--dry-run")
    assert done.exit_code == 0, done.output
    assert not (workdir / "runs").exists()


def test_the_robustness_bench_gives_each_teacher_its_data_and_some_methods_two_seeds():
    matrix = load_matrix(REPO / "benchmarks/robustness.toml")
    assert matrix.preset == ["default"]
    # Until every method has its `default` preset, the rest is checked with its Fashion-MNIST one.
    matrix.preset = ["default", "fashion-mnist"]
    cells, errors = resolve(matrix, Plugins())
    assert errors == []
    assert len(cells) == (9 + 4) * 7
    seeds = Counter((c.method, c.pair.name) for c in cells)
    assert {m for (m, _), n in seeds.items() if n == 2} == {"nayer", "dfq", "cmi", "dafl"}
    datasets = {c.pair.name: c.dataset for c in cells}
    assert datasets["overfit"] == datasets["resnet"] == "fashion-mnist"
    assert datasets["colour32"] == "folder:data/robust/colour32"
    assert all(
        c.pair.teacher_weights == f"checkpoints/robust/{c.pair.name}.safetensors" for c in cells
    )


def _write_fake_fashion_mnist(directory: Path, n_train: int = 40, n_test: int = 20) -> np.ndarray:
    """Noise in the real files' format (gzipped IDX); returns the train images."""
    directory.mkdir(parents=True)
    rng = np.random.default_rng(0)
    splits = {
        p: rng.integers(0, 256, (n, 28, 28), np.uint8)
        for p, n in [("train", n_train), ("t10k", n_test)]
    }
    for prefix, images in splits.items():
        for kind, array in (("images-idx3", images), ("labels-idx1", np.arange(len(images)) % 10)):
            header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
            with gzip.open(directory / f"{prefix}-{kind}-ubyte.gz", "wb") as f:
                f.write(header + array.astype(np.uint8).tobytes())
    return splits["train"]


@pytest.mark.slow
def test_robust_teachers_writes_folder_datasets_and_caches_teachers(workdir):
    from dfkd.data import open_dataset

    original = _write_fake_fashion_mnist(workdir / "fmnist")
    script = [sys.executable, str(REPO / "benchmarks/robust_teachers.py"), "--data-root", "fmnist"]
    names = "overfit,smooth,five-class,inverted,colour32"
    made = subprocess.run(
        [*script, "--epochs-scale", "0.01", "--only", names], capture_output=True, text=True
    )
    assert made.returncode == 0, made.stdout + made.stderr
    five = open_dataset("folder:data/robust/five-class")
    assert five.classes == ["Coat", "Dress", "Pullover", "T-shirt_top", "Trouser"]
    assert (five.channels, five.image_size, len(five.load("train")[1])) == (1, 28, 20)
    inverted = open_dataset("folder:data/robust/inverted")
    images, _ = inverted.load("train")
    assert len(inverted.classes) == 10 and inverted.mean == (0.5,)
    assert int(images.sum()) == 255 * images.numel() - int(original.sum())
    colour = open_dataset("folder:data/robust/colour32")
    assert (len(colour.classes), colour.channels, colour.image_size) == (10, 3, 32)
    images, _ = colour.load("test")
    assert (images.float().std(dim=1) > 0).any()  # tinted, not grey in three channels
    for name, classes, channels in [("smooth", 10, 1), ("five-class", 5, 1), ("colour32", 10, 3)]:
        meta = json.loads((workdir / f"checkpoints/robust/{name}.json").read_text())
        assert (meta["num_classes"], meta["channels"], meta["epoch"]) == (classes, channels, 1)
        assert (workdir / f"checkpoints/robust/{name}.safetensors").is_file()
    assert not list((workdir / "checkpoints").glob("*.safetensors"))  # no default teacher
    config = json.loads((workdir / "runs/robust-teachers/smooth/config.json").read_text())
    assert config["options"]["label_smoothing"] == 0.1
    table = made.stdout[made.stdout.index("| teacher |") :].splitlines()
    assert len(table) == 2 + 5 and table[4].startswith("| five-class | lenet5_bn | folder:")
    script += ["--epochs-scale", "0.01"]  # at 1 it would write the repository's results table
    again = subprocess.run([*script, "--only", "five-class"], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert "five-class: cached in checkpoints/robust, skipped" in again.stdout
    bad = subprocess.run([*script, "--only", "tiny"], capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.startswith("Error: Unknown teacher(s) tiny. Known: overfit, smooth,")
    assert bad.stderr.count("\n") == 1


class InProcess:
    """Runs cells in this process with the test plugins (a bench child only sees installed
    entry points); ``kill`` names a cell interrupted after its first epoch, like a Ctrl-C."""

    def __init__(self, kill: str | None = None) -> None:
        self.kill = kill
        self.calls: list[tuple[str, bool]] = []

    def __call__(self, cell: Cell, run_dir: Path, *, resume: bool, log: Path) -> Finished:
        from dfkd.training.datafree import RunConfig, run_datafree

        self.calls.append((cell.name, resume))
        if resume:
            run_datafree(None, resume=str(run_dir), plugins=dafl_plugins())
        else:
            cfg = RunConfig(
                method=cell.method,
                teacher=cell.pair.teacher,
                student=cell.pair.student,
                dataset=cell.dataset,
                preset=cell.preset,
                overrides=list(cell.options),
                teacher_weights=cell.pair.teacher_weights,
                seed=cell.seed,
                out=str(run_dir),
            )
            reporter = KillAfterEpoch(1) if cell.name == self.kill else None
            run_datafree(cfg, reporter=reporter, plugins=dafl_plugins())
        return Finished(0)


def _cells(weights: Path, epochs: int = 2) -> list[Cell]:
    pair = Pair("lenet5", "lenet5_half", str(weights))
    options = (*QUICK, f"epochs={epochs}")
    return [Cell("dafl", pair, seed, "tiny", None, options=options) for seed in (0, 1)]


def test_a_killed_bench_skips_finished_cells_and_resumes_the_running_one(
    tiny_teacher_weights, workdir
):
    cells = _cells(tiny_teacher_weights["lenet5"])
    first, second = (workdir / "b" / "cells" / c.name for c in cells)
    with pytest.raises(KeyboardInterrupt):
        run_bench(cells, workdir / "b", InProcess(kill=cells[1].name))
    assert json.loads((first / "cell.json").read_text())["status"] == "done"
    assert not (second / "cell.json").exists()
    assert len((second / "metrics.jsonl").read_text().splitlines()) == 1
    finished_record = (first / "cell.json").read_text()

    again = InProcess()
    run_bench(cells, workdir / "b", again)
    assert again.calls == [(cells[1].name, True)]
    assert (first / "cell.json").read_text() == finished_record
    record = json.loads((second / "cell.json").read_text())
    assert (record["status"], record["epochs_done"], record["epochs"]) == ("done", 2, 2)

    run_bench(cells, workdir / "b", third := InProcess())
    assert third.calls == []
    with pytest.raises(UsageError, match="holds a run with other overrides"):
        plan(_cells(tiny_teacher_weights["lenet5"], epochs=3), workdir / "b")


def test_a_second_bench_into_a_folder_in_use_runs_nothing(tiny_teacher_weights, workdir):
    cells = _cells(tiny_teacher_weights["lenet5"])
    (workdir / "b").mkdir()
    with run_held_elsewhere(workdir / "b", workdir) as pid, pytest.raises(UsageError) as refused:
        run_bench(cells, workdir / "b", second := InProcess())
    assert str(refused.value).startswith(f"Bench {workdir / 'b'} is in use by process {pid}")
    assert second.calls == [] and not (workdir / "b/cells").exists()


def test_a_resumed_cell_adds_the_earlier_attempts_cpu_time(workdir):
    cell = Cell("dafl", Pair("lenet5", "lenet5_half"), 0, "tiny", None)
    path = workdir / "b" / "cells" / cell.name
    path.mkdir(parents=True)
    (path / "cell.json").write_text(json.dumps({"status": "failed", "cpu_seconds": 30.5}))

    def runner(cell, run_dir, *, resume, log):
        return Finished(1, "stopped by SIGTERM", cpu_seconds=12.0)

    assert run_cell(cell, workdir / "b", runner, "resume")["cpu_seconds"] == 42.5
    assert run_cell(cell, workdir / "b", runner, "start")["cpu_seconds"] == 12.0


def test_a_cell_a_signal_ended_is_stopped_not_failed_and_is_resumed(bench_cli, workdir):
    pair = Pair("lenet5", "lenet5_half")
    _fake_cell(workdir / "b", pair, 0, [50.0, 60.0])
    _fake_cell(workdir / "b", pair, 1, [55.0, 65.0])
    cell = Cell("dafl", pair, 1, "tiny", "fashion-mnist")
    path = workdir / "b" / "cells" / cell.name
    rows = (path / "metrics.jsonl").read_text().splitlines()
    (path / "metrics.jsonl").write_text(rows[0] + "\n")  # stopped after its first epoch

    def killed(cell, run_dir, *, resume, log):
        return Finished(-15, "stopped by SIGTERM", cpu_seconds=5.0)

    record = run_cell(cell, workdir / "b", killed, "resume")
    assert (record["status"], record["error"]) == ("stopped", "stopped by SIGTERM")
    assert plan([cell], workdir / "b") == {cell.name: "resume"}
    assert bench_cli("bench", "--report-only", "b").exit_code == 0
    report = (workdir / "b" / "report.md").read_text()
    assert "| dafl | 60.00 ± 0.00 (60.00), 1 of 2 stopped, to resume |" in report
    assert f"Stopped cells (to resume):\n\n- `{cell.name}`: stopped by SIGTERM" in report
    assert "failed" not in report.lower()
    (csv_row,) = csv.DictReader((workdir / "b" / "report.csv").open())
    assert (csv_row["seeds_done"], csv_row["seeds_failed"], csv_row["seeds_stopped"]) == (
        "1",
        "0",
        "1",
    )

    def crashed(cell, run_dir, *, resume, log):
        return Finished(1, "RuntimeError: boom", cpu_seconds=5.0)

    assert run_cell(cell, workdir / "b", crashed, "resume")["status"] == "failed"


def _folder_dataset(root: Path) -> Path:
    """tiny's images as PNG class folders: a dataset a bench's child processes can open."""
    from PIL import Image

    for split, (images, labels) in (
        ("train", make_tiny_images(200, 0)),
        ("test", make_tiny_images(100, 1)),
    ):
        for i, (image, label) in enumerate(zip(images, labels.tolist(), strict=True)):
            folder = root / split / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image[0].numpy()).save(folder / f"{i}.png")
    return root


@pytest.mark.slow
def test_bench_runs_cells_as_processes_records_a_failure_and_goes_on(workdir):
    from dfkd.training.supervised import ScratchConfig, train_scratch

    data = _folder_dataset(workdir / "data")
    dataset = f"folder:{data}"
    teacher = train_scratch(
        ScratchConfig(dataset=dataset, model="lenet5", epochs=3, batch_size=32, lr=0.05, out="t"),
        plugins=make_plugins(),
    ).weights
    # the second pair's weights are lenet5's, not lenet5_bn's: that cell fails when it loads them
    pairs = f"lenet5:lenet5_half@{teacher},lenet5_bn:lenet5_half@{teacher}"
    done = CliRunner().invoke(
        make_app(Plugins()),
        ["bench", "--methods", "dafl", "--pairs", pairs, "--dataset", dataset, "--out", "b",
         "--epochs", "2", "--jobs", "2", *(f"-o{o}" for o in QUICK)],
    )  # fmt: skip
    assert done.exit_code == 1, done.output
    assert "1 of 2 cells failed" in done.output
    good = json.loads((workdir / "b/cells/dafl-lenet5-lenet5_half-seed0/cell.json").read_text())
    bad = json.loads((workdir / "b/cells/dafl-lenet5_bn-lenet5_half-seed0/cell.json").read_text())
    assert good["status"] == "done" and good["epochs_done"] == 2
    assert good["peak_rss_mb"] > 50 and good["seconds_synthesis"] > 0
    assert 0 < good["cpu_seconds"] < 600
    assert good["versions"]["dfkd-plugin-dafl"]
    assert bad["status"] == "failed"
    assert f"{teacher} holds weights of lenet5, not lenet5_bn." in bad["error"]
    report = (workdir / "b" / "report.md").read_text()
    assert "| dafl | " in report and "failed (1 of 1)" in report
    assert f"Lock: {good['versions'].get('lock', 'none recorded')}." in report
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    assert good["versions"]["source"].startswith(head.stdout.strip())  # this checkout's commit
    assert f"each cell started from): {good['versions']['source']} (" in report
    assert f"accelerate {version('accelerate')}" in report
    for name in ("accuracy.png", "accuracy_vs_time.png", "samples.png", "cost.md"):
        assert (workdir / "b" / name).stat().st_size > 0


def _fake_cell(
    bench: Path,
    pair: Pair,
    seed: int,
    top1: list[float],
    agree: bool = False,
    score: str = "top1",
    second_row: dict | None = None,
    teacher_weights: str | None = None,
    quantize: str | None = None,
    source: str = "abc1234",
    last_row: dict | None = None,
) -> None:
    """A finished cell's directory as `dfkd run` leaves it, with chosen accuracies (or mIoUs)."""
    from PIL import Image

    cell = Cell("dafl", pair, seed, "tiny", "fashion-mnist", quantize=quantize)
    path = bench / "cells" / cell.name
    path.mkdir(parents=True)
    config = {"resolved_options": {"epochs": len(top1)}, "teacher_weights": teacher_weights}
    config |= cell.describe() | {"overrides": []}
    versions = {"dfkd": "x", "source": source}
    (path / "config.json").write_text(json.dumps({"options": config, "versions": versions}))
    rows = [
        {"epoch": i + 1, score: t, "seconds": 30.0, "seconds_synthesis": 12.0}
        | ({"agree": 90.0 - abs(i - 1)} if agree else {})  # highest at the second epoch
        for i, t in enumerate(top1)
    ]
    rows[1] |= second_row or {}
    rows[-1] |= last_row or {}
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    Image.new("RGB", (16, 16), (seed * 100, 0, 0)).save(path / "samples.png")
    task = "segmentation" if score == "miou" else "classification"
    (path / "student.json").write_text(json.dumps({"task": task, "num_classes": 10}))
    record = cell_record(cell, path, Finished(0, peak_rss_kb=300 * 1024, cpu_seconds=120.0))
    (path / "cell.json").write_text(json.dumps(record))


def test_the_report_names_a_student_that_ended_near_chance(bench_cli, workdir):
    pair = Pair("lenet5_bn", "lenet5_half")
    weak, fine = ({"agree": agree} for agree in (15.0, 60.0))
    for seed, last in ((0, weak), (1, fine)):
        _fake_cell(workdir / "b", pair, seed, [30.0, 31.0], last_row=last)
    cells = sorted((workdir / "b" / "cells").iterdir())  # seed0, seed1
    records = [json.loads((cell / "cell.json").read_text()) for cell in cells]
    assert records[0]["weak_student"].startswith("the student agrees with the teacher on 15.0 %")
    assert records[1]["weak_student"] is None
    done = bench_cli("bench", "--report-only", "b")
    assert done.exit_code == 0, done.output
    report = (workdir / "b" / "report.md").read_text()
    assert "Weak students (their run's `weak student` line" in report
    assert f"- `{cells[0].name}`: the student agrees" in report
    assert f"`{cells[1].name}`:" not in report
    stopped = cell_record(Cell("dafl", pair, 0, "tiny", "fashion-mnist"), cells[0], Finished(-15))
    assert stopped["status"] == "stopped" and stopped["weak_student"] is None  # mid-run student
    (cells[0] / "cell.json").write_text(json.dumps(stopped))
    assert bench_cli("bench", "--report-only", "b").exit_code == 0
    assert "Weak students" not in (workdir / "b" / "report.md").read_text()


def test_the_report_leads_with_the_last_epoch_and_labels_test_selection(bench_cli, workdir):
    one, two = Pair("lenet5", "lenet5_half"), Pair("lenet5_bn", "lenet5_half")
    _fake_cell(workdir / "b", one, 0, [50.0, 81.0, 70.0])
    _fake_cell(workdir / "b", one, 1, [60.0, 79.0, 80.0])
    _fake_cell(workdir / "b", two, 0, [40.0, 45.0, 44.0], agree=True)
    done = bench_cli("bench", "--report-only", "b")
    assert done.exit_code == 0, done.output
    report = (workdir / "b" / "report.md").read_text()
    assert "mean ± std over seeds of the last epoch" in report
    assert "lenet5 → lenet5_half (best: test-selected)" in report
    # last 70 / 80: 75 ± 7.07; each seed's best epoch, chosen on the test set: 81 / 80
    assert "| dafl | 75.00 ± 7.07 (80.50) | 44.00 ± 0.00 (45.00) |" in report
    # the agreement-selected epoch is the second (agree 90): 45 %; lenet5 rows have no agree
    assert "| dafl | — | 45.00 |" in report
    assert "Presets: dafl: fashion-mnist." in report
    rows = list(csv.DictReader((workdir / "b" / "report.csv").open()))
    assert [(r["pair"], r["seeds_done"], r["last_score_mean"]) for r in rows] == [
        ("lenet5 → lenet5_half", "2", "75"),
        ("lenet5_bn → lenet5_half", "1", "44"),
    ]
    assert rows[0]["minutes_mean"] == "1.5" and rows[0]["synthesis_minutes_mean"] == "0.6"
    assert rows[0]["cpu_minutes_mean"] == "2"
    cost = (workdir / "b" / "cost.md").read_text()
    assert "| dafl | 1.5 min / 2.0 CPU-min (40 % synthesis), 300 MB RSS | 1.5 min" in cost
    for name in ("accuracy.png", "accuracy_vs_time.png", "samples.png"):
        assert (workdir / "b" / name).read_bytes()[:4] == b"\x89PNG"


def test_report_only_refuses_the_options_of_a_run(bench_cli, workdir):
    _fake_cell(workdir / "b", Pair("lenet5", "lenet5_half"), 0, [50.0, 60.0])
    done = bench_cli("bench", "--report-only", "b", "--out", "elsewhere", "--seeds", "2")
    assert done.exit_code == 2
    assert (
        "--report-only rewrites the report inside b and runs nothing; leave out --out, --seeds"
        in done.output
    )
    assert not (workdir / "elsewhere").exists() and not (workdir / "b" / "report.md").exists()


def test_a_report_says_which_students_trained_fake_quantised(bench_cli, workdir):
    _fake_cell(workdir / "b", Pair("lenet5", "lenet5_half"), 0, [50.0, 60.0], quantize="w4a4")
    assert bench_cli("bench", "--report-only", "b").exit_code == 0
    report = (workdir / "b" / "report.md").read_text()
    assert "trained fake-quantised (`--quantize`; their scores are the rounded model's): " in report
    assert "dafl: w4a4." in report


def test_a_segmentation_bench_reports_miou(bench_cli, workdir):
    pair = Pair("segnet_small", "segnet_small_half")
    _fake_cell(workdir / "b", pair, 0, [20.0, 40.0], agree=True, score="miou")
    _fake_cell(workdir / "b", pair, 1, [30.0, 50.0], agree=True, score="miou")
    done = bench_cli("bench", "--report-only", "b")
    assert done.exit_code == 0, done.output
    report = (workdir / "b" / "report.md").read_text()
    assert report.count("Test split, mIoU %") == 1 and "top-1" not in report
    assert "| dafl | 45.00 ± 7.07 (45.00) |" in report
    assert "| dafl | 45.00 |" in report  # agreement peaks at the second epoch
    rows = list(csv.DictReader((workdir / "b" / "report.csv").open()))
    assert (rows[0]["score"], rows[0]["last_score_mean"]) == ("miou", "45")


def test_plot_never_writes_over_a_file_unasked_nor_over_a_runs_own(bench_cli, workdir):
    (workdir / "a").mkdir()
    (workdir / "a" / "metrics.jsonl").write_text('{"epoch": 1, "top1": 10.0}\n')
    (workdir / "a" / "config.json").write_text('{"command": "run", "options": {}}\n')
    own = {p.name: p.read_bytes() for p in (workdir / "a").iterdir()}
    for name in own:
        for flags in ((), ("--overwrite",)):
            refused = bench_cli("plot", "a", "--out", f"a/{name}", *flags)
            assert refused.exit_code == 2, refused.output
            assert refused.output.strip() == (
                f"Error: a/{name} is one of run {workdir / 'a'}'s own files; choose another --out."
            )
    assert {p.name: p.read_bytes() for p in (workdir / "a").iterdir()} == own
    (workdir / "curves.png").write_bytes(b"mine")
    refused = bench_cli("plot", "a", "--out", "curves.png")
    assert refused.output.strip() == (
        "Error: curves.png exists; pass --overwrite to replace it, or --out FILE."
    )
    assert (workdir / "curves.png").read_bytes() == b"mine"
    assert bench_cli("plot", "a", "--out", "curves.png", "--overwrite").exit_code == 0
    assert (workdir / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert bench_cli("plot", "a", "--out", "a/curves.png").exit_code == 0  # beside a run's files


def test_plot_draws_runs_and_refuses_a_folder_without_metrics(bench_cli, workdir):
    for name, top1 in (("a", [10.0, 20.0]), ("b", [15.0])):
        (workdir / name).mkdir()
        rows = [{"epoch": i + 1, "top1": t} for i, t in enumerate(top1)]
        (workdir / name / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    done = bench_cli("plot", "a", "b", "--out", "curves.png")
    assert done.exit_code == 0, done.output
    assert (workdir / "curves.png").read_bytes()[:4] == b"\x89PNG"
    (workdir / "empty").mkdir()
    refused = bench_cli("plot", "a", "empty")
    assert refused.exit_code == 2
    assert refused.output.strip() == (
        "Error: empty has no score to plot yet (no top1, miou or agree rows in metrics.jsonl)."
    )


def test_plot_names_a_missing_folder_and_draws_a_teacher_only_runs_agreement(bench_cli, workdir):
    missing = bench_cli("plot", "nowhere")
    assert missing.exit_code == 2 and missing.output.strip() == "Error: nowhere does not exist."
    (workdir / "alone").mkdir()  # a run without a test split records agreement, not accuracy
    rows = [{"epoch": e, "agree": a, "val_kl": 1.0} for e, a in ((1, 30.0), (2, 42.0))]
    (workdir / "alone" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (workdir / "tested").mkdir()
    (workdir / "tested" / "metrics.jsonl").write_text('{"epoch": 1, "top1": 80.0, "agree": 40.0}\n')
    for runs in (["alone"], ["alone", "tested"]):
        done = bench_cli("plot", *runs, "--out", "curves.png", "--overwrite")
        assert done.exit_code == 0, done.output
        assert done.stdout.strip() == "curves.png"
        assert done.stderr.strip() == (
            "alone has no test split: its curve is its agreement with the teacher on the "
            "synthetic validation set, not accuracy."
        )
        assert (workdir / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_the_report_says_what_the_guard_did_which_embeddings_ran_and_the_teachers_share(
    bench_cli, workdir
):
    one, two = Pair("lenet5", "lenet5_half"), Pair("lenet5_bn", "lenet5_half")
    event = "epoch 2: agreement fell to 9.0 % (chance 10 %) from 60.0 %; rolled back to epoch 1"
    (workdir / "t.json").write_text(json.dumps({"top1": 90.0}))  # the teacher's sidecar
    guarded = {"guard": [event]}
    _fake_cell(
        workdir / "b", one, 0, [50.0, 81.0], second_row=guarded, teacher_weights="t.safetensors"
    )
    note = "epoch 3: the student answered one class ..., so the guard did not act"
    second = {"embeddings": "random (seed 0)", "guard_notes": [note]}
    _fake_cell(workdir / "b", two, 0, [40.0, 45.0], second_row=second)
    done = bench_cli("bench", "--report-only", "b")
    assert done.exit_code == 0, done.output
    report = (workdir / "b" / "report.md").read_text()
    assert "Collapse guard: rolled back 1 epoch(s) in 1 of 2 cells:" in report  # not the note
    assert f"- `dafl-lenet5-lenet5_half-seed0`: {event}" in report
    assert f"seen and not acted on:\n\n- `dafl-lenet5_bn-lenet5_half-seed0`: {note}" in report
    assert "Label embeddings of dafl: random (seed 0) (1 cells)." in report
    assert "own test score (its sidecar's): lenet5 → lenet5_half 90.00." in report
    assert "| dafl | 90 | — |" in report  # 81 of the teacher's 90; the other has no sidecar


def test_plot_draws_student_steps_where_the_runs_record_them(bench_cli, workdir, monkeypatch):
    import dfkd.bench.plots

    drawn = []
    monkeypatch.setattr(dfkd.bench.plots, "_save", lambda fig, path: drawn.append(fig) or path)
    for name, ep_steps in (("long", 100), ("short", 20)):
        (workdir / name).mkdir()
        rows = [{"epoch": e, "miou": 10.0 * e} for e in (1, 2)]
        (workdir / name / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        config = {"command": "run", "options": {"resolved_options": {"ep_steps": ep_steps}}}
        (workdir / name / "config.json").write_text(json.dumps(config))
    done = bench_cli("plot", "long", "short", "--x", "steps")
    assert done.exit_code == 0, done.output
    ax = drawn[0].axes[0]
    assert [list(line.get_xdata()) for line in ax.lines] == [[100, 200], [20, 40]]
    assert ax.get_xlabel() == "student steps"
    (workdir / "scratch").mkdir()  # a run whose epochs are no method's steps
    (workdir / "scratch" / "metrics.jsonl").write_text('{"epoch": 1, "top1": 80.0}\n')
    (workdir / "scratch" / "config.json").write_text('{"command": "scratch", "options": {}}')
    refused = bench_cli("plot", "long", "scratch", "--x", "steps")
    assert refused.exit_code == 2 and "plot it with --x epoch" in refused.output
    assert bench_cli("plot", "long", "--x", "minutes").exit_code == 2


def test_the_report_names_the_commits_its_cells_started_from(bench_cli, workdir):
    one = Pair("lenet5", "lenet5_half")
    _fake_cell(workdir / "b", one, 0, [50.0, 81.0], source="abc1234")
    _fake_cell(workdir / "b", one, 1, [60.0, 79.0], source="def5678 with uncommitted changes")
    _fake_cell(workdir / "b", one, 2, [60.0, 79.0], source="abc1234")
    assert bench_cli("bench", "--report-only", "b").exit_code == 0
    report = (workdir / "b" / "report.md").read_text()
    assert (
        "Source (the commit each cell started from): abc1234 (2 of 3 cells); "
        "def5678 with uncommitted changes (1 of 3 cells)."
    ) in report
    assert "Versions: dfkd x." in report  # the commit is not a package version
