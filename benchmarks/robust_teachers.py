"""Teachers unlike the two every preset was tuned on, for benchmarks/robustness.toml.

The methods' presets were found on two Fashion-MNIST LeNet-5 teachers; users bring others. This
trains seven that differ the way users' teachers do, each with `dfkd scratch` (a process of its
own, as a user would run it) on real Fashion-MNIST or a dataset derived from it:

    overfit       lenet5_bn, 60 epochs without weight decay or augmentation: train loss near 0
    smooth        lenet5_bn with --label-smoothing 0.1: softer, less informative logits
    undertrained  lenet5_bn after 2 epochs
    resnet        wrn16_1: another architecture (a residual net with BatchNorm), 1 channel
    five-class    lenet5_bn on the first five classes, a folder: dataset
    inverted      lenet5_bn on 255 - x, a folder: dataset, so normalised by 0.5/0.5 rather
                  than Fashion-MNIST's own 0.286/0.353
    colour32      lenet5_bn on 3-channel 32 px images, each tinted by a random hue of its own
                  (class-independent), a folder: dataset

Derived datasets are written once, as train/<class>/*.png and test/<class>/*.png, under
data/robust/<name>/. Each teacher's last-epoch weights (the teacher as trained, not the epoch the
test set would pick) and their sidecar go to checkpoints/robust/<name>.safetensors and .json; a
teacher whose files are there is skipped, so delete them to train it again. Runs go to
runs/robust-teachers/<name>/, and no teacher ever becomes a default teacher. At the end a table
gives every cached teacher's test top-1 and last train loss; at --epochs-scale 1 it is also
written to benchmarks/results/robust_teachers.md. The bench file names these paths, so keep the
defaults and run from the repository root.

Usage: python benchmarks/robust_teachers.py [--only NAME,...] [--epochs-scale 1]
           [--data-root DIR] [--data-dir data/robust] [--cache checkpoints/robust]
           [--runs runs/robust-teachers]
"""

from __future__ import annotations

import argparse
import colorsys
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import provenance
import torch
import torch.nn.functional as F
from PIL import Image

from dfkd.errors import DfkdError, UsageError
from dfkd.fileio import write_atomic

RESULTS = Path(__file__).parent / "results" / "robust_teachers.md"
#: the README's teacher recipe (12 epochs of it gave the lenet5_bn teacher of the presets)
RECIPE = ("--lr", "0.05", "--batch-size", "128", "--seed", "0")
FIVE_CLASSES = range(5)  # T-shirt/top, Trouser, Pullover, Dress, Coat


@dataclass(frozen=True)
class Teacher:
    name: str
    model: str
    epochs: int
    flags: tuple[str, ...] = ()
    derived: str | None = None  # the derived dataset it trains on; None: Fashion-MNIST itself


TEACHERS = {
    t.name: t
    for t in (
        Teacher("overfit", "lenet5_bn", 60, ("--weight-decay", "0", "--augment", "none")),
        Teacher("smooth", "lenet5_bn", 12, ("--label-smoothing", "0.1")),
        Teacher("undertrained", "lenet5_bn", 2),
        Teacher("resnet", "wrn16_1", 12),
        Teacher("five-class", "lenet5_bn", 12, derived="five-class"),
        Teacher("inverted", "lenet5_bn", 12, derived="inverted"),
        Teacher("colour32", "lenet5_bn", 12, derived="colour32"),
    )
}

Split = tuple[torch.Tensor, torch.Tensor]  # uint8 images (N, C, H, W), int64 labels


def five_class(images: torch.Tensor, labels: torch.Tensor, seed: int) -> Split:
    keep = torch.isin(labels, torch.tensor(list(FIVE_CLASSES)))
    return images[keep], labels[keep]


def inverted(images: torch.Tensor, labels: torch.Tensor, seed: int) -> Split:
    return 255 - images, labels


def colour32(images: torch.Tensor, labels: torch.Tensor, seed: int) -> Split:
    """Resized to 32 px and multiplied by a random saturated colour per image: the class is in
    the shape, never in the colour."""
    rng = np.random.default_rng(seed)
    hues, saturations = rng.random(len(images)), rng.uniform(0.5, 1.0, len(images))
    tints = torch.tensor(
        [colorsys.hsv_to_rgb(h, s, 1.0) for h, s in zip(hues, saturations, strict=True)]
    )
    grey = F.interpolate(images.float(), size=32, mode="bilinear", align_corners=False)
    return (grey * tints[:, :, None, None]).round().clamp(0, 255).to(torch.uint8), labels


DERIVED = {"five-class": five_class, "inverted": inverted, "colour32": colour32}


def class_folder(name: str) -> str:
    """The class's name as users' folders have it (``T-shirt_top``); a folder: dataset numbers
    its classes in sorted order, which need not be Fashion-MNIST's."""
    return name.replace("/", "_").replace(" ", "_")


def write_folder(target: Path, splits: dict[str, Split], classes: list[str]) -> None:
    """``train/<class>/*.png`` and ``test/<class>/*.png``, written beside ``target`` and then
    renamed: a killed write leaves no half dataset that looks finished."""
    partial = target.with_name(f".{target.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    for split, (images, labels) in splits.items():
        for index in labels.unique().tolist():
            (partial / split / class_folder(classes[index])).mkdir(parents=True)
        pixels = images.permute(0, 2, 3, 1).numpy()
        for i, (image, label) in enumerate(zip(pixels, labels.tolist(), strict=True)):
            folder = partial / split / class_folder(classes[label])
            Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(
                folder / f"{i:05d}.png"
            )
    os.replace(partial, target)


def write_derived(names: list[str], data_dir: Path, data_root: str | None) -> None:
    """The derived datasets among ``names`` that are not written yet."""
    missing = [n for n in names if not (data_dir / n).is_dir()]
    if not missing:
        return
    from dfkd.data import open_dataset

    source = open_dataset("fashion-mnist", data_root)
    splits = {split: source.load(split) for split in ("train", "test")}
    data_dir.mkdir(parents=True, exist_ok=True)
    for name in missing:
        derive = DERIVED[name]
        print(f"writing {data_dir / name}", flush=True)
        derived = {s: derive(*splits[s], seed) for seed, s in enumerate(("train", "test"))}
        write_folder(data_dir / name, derived, list(source.classes))


def dataset_of(teacher: Teacher, data_dir: Path) -> str:
    return f"folder:{data_dir / teacher.derived}" if teacher.derived else "fashion-mnist"


def train(teacher: Teacher, args: argparse.Namespace) -> None:
    """`dfkd scratch` into the teacher's run, then its last weights into the cache."""
    run = Path(args.runs) / teacher.name
    epochs = max(1, round(teacher.epochs * args.epochs_scale))
    command = [sys.executable, "-m", "dfkd", "scratch", "--model", teacher.model]
    command += ["--dataset", dataset_of(teacher, Path(args.data_dir)), "--epochs", str(epochs)]
    command += [*RECIPE, *teacher.flags, "--out", str(run), "--overwrite"]
    if args.data_root and not teacher.derived:
        command += ["--data-root", args.data_root]
    print(f"{teacher.name}: {' '.join(command[2:])}", flush=True)
    with tempfile.TemporaryDirectory() as spare:
        # scratch makes its weights the default teacher when there is none: here, in `spare`,
        # thrown away, so the line that names that file is left out too
        env = {**os.environ, "DFKD_CHECKPOINTS": spare}
        env.setdefault("OMP_NUM_THREADS", "1")
        with subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        ) as process:
            for line in process.stdout:
                if not line.startswith("teacher checkpoint:"):
                    print(f"  {line}", end="", flush=True)
    if process.returncode:
        raise DfkdError(f"Training teacher {teacher.name} failed (exit code {process.returncode}).")
    weights = Path(args.cache) / f"{teacher.name}.safetensors"
    # atomic copies, the sidecar last: a teacher counts as cached once both are there
    write_atomic(weights, lambda tmp: shutil.copyfile(run / "model.safetensors", tmp))
    write_atomic(weights.with_suffix(".json"), lambda tmp: shutil.copyfile(run / "model.json", tmp))


def is_cached(teacher: Teacher, cache: Path) -> bool:
    return all((cache / f"{teacher.name}{s}").is_file() for s in (".safetensors", ".json"))


def table(args: argparse.Namespace) -> str:
    """One row per cached teacher: what it is, its last epoch's train loss and test top-1."""
    lines = [
        "| teacher | model | dataset | classes | channels | epochs | train loss | test top-1 % "
        "| s / epoch |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for teacher in TEACHERS.values():
        sidecar = Path(args.cache) / f"{teacher.name}.json"
        if not is_cached(teacher, Path(args.cache)):
            continue
        meta = json.loads(sidecar.read_text())
        metrics = Path(args.runs) / teacher.name / "metrics.jsonl"
        rows = (
            [json.loads(line) for line in metrics.read_text().splitlines()]
            if metrics.is_file()
            else []
        )
        loss = f"{rows[-1]['loss']:.4f}" if rows else "-"
        seconds = f"{sum(r['seconds'] for r in rows) / len(rows):.1f}" if rows else "-"
        lines.append(
            f"| {teacher.name} | {meta['model']} | {meta['dataset']} | {meta['num_classes']} | "
            f"{meta['channels']} | {meta['epoch']} | {loss} | {meta['top1']:.2f} | {seconds} |"
        )
    return "\n".join(lines) + "\n"


def parse_only(text: str | None) -> list[Teacher]:
    if not text:
        return list(TEACHERS.values())
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in TEACHERS]
    if unknown:
        raise UsageError(f"Unknown teacher(s) {', '.join(unknown)}. Known: {', '.join(TEACHERS)}.")
    return [TEACHERS[n] for n in names]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", help="Teachers to make, comma-separated (default: all).")
    parser.add_argument(
        "--epochs-scale", type=float, default=1.0, help="Multiply every teacher's epochs (min 1)."
    )
    parser.add_argument("--data-root", help="Where Fashion-MNIST is, as dfkd's --data-root.")
    parser.add_argument("--data-dir", default="data/robust", help="Derived datasets.")
    parser.add_argument("--cache", default="checkpoints/robust", help="Teacher weights.")
    parser.add_argument("--runs", default="runs/robust-teachers", help="Scratch runs.")
    args = parser.parse_args()
    try:
        if not args.epochs_scale > 0:
            raise UsageError(f"--epochs-scale must be > 0, not {args.epochs_scale}.")
        teachers = parse_only(args.only)
        todo = [t for t in teachers if not is_cached(t, Path(args.cache))]
        for teacher in teachers:
            if teacher not in todo:
                print(f"{teacher.name}: cached in {args.cache}, skipped", flush=True)
        write_derived(
            sorted({t.derived for t in todo if t.derived}), Path(args.data_dir), args.data_root
        )
        for teacher in todo:
            train(teacher, args)
    except DfkdError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    text = table(args)
    print(text, end="")
    if args.epochs_scale == 1:
        day = datetime.date.today().isoformat()
        commit = provenance.commit()
        RESULTS.write_text(
            f"# Teachers for benchmarks/robustness.toml ({day}, {commit})\n\n"
            "`python benchmarks/robust_teachers.py`: the last epoch of each `dfkd scratch` run; "
            "s / epoch is the mean wall time of an epoch, training and test, one torch thread.\n\n"
            + text
        )
        print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
