"""NAYER plugin: the noisy-layer generator, the loop's pieces, the generator's life, where label
embeddings come from (file, teacher's folder, fixed fallback, the embed-labels command with an
injected encoder or an imported file) and how a run reports them, the state round trip, and
learning (the rest of the method contract: tests/test_method_contract.py)."""

from __future__ import annotations

import copy
import json
import os
import pickle
import shutil
import sys
import warnings
from pathlib import Path

import dfkd_plugin_nayer
import pytest
import torch
from dfkd_plugin_nayer import PRESETS
from dfkd_plugin_nayer.embeddings import (
    compute_label_embeddings,
    default_embeddings_path,
    load_label_embeddings,
    save_label_embeddings,
)
from dfkd_plugin_nayer.generator import NoisyLayerGenerator
from dfkd_plugin_nayer.options import NayerOptions
from dfkd_plugin_nayer.synthesizer import NayerSynthesizer
from safetensors import safe_open
from typer.testing import CliRunner

from dfkd.cli import make_app
from dfkd.errors import UsageError
from dfkd.models.lenet import lenet5_bn, lenet5_half
from dfkd.options import build_options
from dfkd.synthesis.base import SynthesisContext
from dfkd.testing import LearningContract, cpu_context, make_plugins

DIST = "dfkd-plugin-nayer"
TINY = [
    "warmup=1",
    "ep_steps=4",
    "kd_steps=2",
    "g_steps=2",
    "g_loops=1",
    "gwp_loops=2",
    "g_life=2",
    "batch_size=16",
    "synthesis_batch_size=12",
    "ngf=8",
    "le_emb_size=16",
    "le_size=8",
]


class TestLearning(LearningContract):
    method = "nayer"
    module = dfkd_plugin_nayer
    distribution = DIST
    teacher = "lenet5_bn"
    learn_options = [
        "epochs=4",
        "ep_steps=60",
        "kd_steps=20",
        "g_steps=10",
        "synthesis_batch_size=30",
        "batch_size=32",
        "lr_g=0.01",
        "lr=0.05",
    ]
    learn_top1 = 50.0


class TinyEncoder:
    """A text encoder for tests: (length, vowels, 1) per text."""

    name = "tiny"

    def encode(self, texts: list[str]) -> torch.Tensor:
        return torch.tensor([[len(t), sum(c in "aeiou" for c in t), 1.0] for t in texts])


def context(
    run_dir: Path | None = None, teacher_weights: Path | None = None, student=lenet5_half
) -> SynthesisContext:
    torch.manual_seed(0)  # the same untrained teacher and student every time
    info = {"teacher_weights": str(teacher_weights)} if teacher_weights else {}
    return cpu_context(
        lenet5_bn(10, 1).eval().requires_grad_(False),
        student(10, 1),
        mean=(0.2,),
        std=(0.3,),
        run_dir=run_dir,
        run_info=info,
    )


def synthesizer(*extra: str, seed: int = 0, **kwargs) -> NayerSynthesizer:
    ctx = context(**kwargs)
    torch.manual_seed(seed)
    return NayerSynthesizer(ctx, build_options(NayerOptions, {}, [*TINY, *extra]))


def nayer_cli(*args: object):
    """``dfkd ARGS`` in-process with the NAYER plugin; Python warnings recorded, not shown."""
    app = make_app(make_plugins((dfkd_plugin_nayer, DIST)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        done = CliRunner().invoke(app, [str(a) for a in args])
    done.warnings = [str(w.message) for w in caught]
    return done


def run_args(weights: Path, out: Path, *options: str) -> list[str]:
    """A tiny two-epoch `dfkd run nayer` (one warm-up epoch) from ``weights`` into ``out``."""
    args = ["run", "nayer", "--teacher", "lenet5_bn", "--teacher-weights", weights]
    args += ["--student", "lenet5_half", "--dataset", "tiny", "--mixed-precision", "no"]
    args += ["--val-size", "8", "--val-steps", "1", "--out", out]
    for value in [*TINY, "epochs=2", *options]:
        args += ["-o", value]
    return args


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# --- the noisy-layer generator ---------------------------------------------------------------


def test_noisy_layers_one_per_chunk_of_k_rows():
    embeddings = torch.randn(4, 6)
    gen = NoisyLayerGenerator(embeddings, batch=10, le_emb_size=5, ngf=4, img_size=8, channels=1)
    assert len(gen.noisy) == 3  # ⌈10 / 4⌉
    with torch.no_grad():
        for i, layer in enumerate(gen.noisy):  # layer i maps every input to (i, i, ...)
            layer.weight.zero_()
            layer.bias.fill_(float(i))
    targets = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 2, 1])
    noise = gen.noise(targets)
    assert noise.shape == (10, 5)
    assert noise[:, 0].tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
    assert gen(targets).shape == (10, 1, 8, 8)
    with pytest.raises(ValueError, match="noisy layers"):
        gen.noise(torch.zeros(13, dtype=torch.long))
    assert "embeddings" not in gen.state_dict()


def test_noisy_layers_go_through_batchnorm_of_the_embeddings():
    embeddings = torch.tensor([[1.0, 10.0], [3.0, 10.0]])
    gen = NoisyLayerGenerator(embeddings, batch=2, le_emb_size=2, ngf=4, img_size=8, channels=1)
    with torch.no_grad():
        gen.noisy[0].weight.copy_(torch.eye(2))
        gen.noisy[0].bias.zero_()
    # BatchNorm1d in train mode: (1, 3) → (−1, 1); a constant column → 0.
    out = gen.noise(torch.tensor([0, 1]))
    torch.testing.assert_close(out, torch.tensor([[-1.0, 0.0], [1.0, 0.0]]), atol=1e-3, rtol=0)


def test_reset_noisy_layers_draws_standard_normal_weights_and_zero_biases():
    gen = NoisyLayerGenerator(torch.randn(10, 64), batch=400, le_emb_size=100, ngf=4, img_size=8)
    gen.reset_noisy_layers(torch.Generator().manual_seed(0))
    assert len(gen.noisy) == 40
    weights = torch.cat([layer.weight.flatten() for layer in gen.noisy])
    assert abs(weights.mean().item()) < 0.01 and weights.std().item() == pytest.approx(1, abs=0.01)
    assert all(torch.equal(layer.bias, torch.zeros(100)) for layer in gen.noisy)
    trunk = copy.deepcopy(gen.trunk.state_dict())
    gen.reset_noisy_layers(torch.Generator().manual_seed(1))
    for name, value in gen.trunk.state_dict().items():  # the trunk keeps what it learned
        assert torch.equal(value, trunk[name]), name
    again = copy.deepcopy(gen)
    gen.reset_noisy_layers(torch.Generator().manual_seed(2))
    again.reset_noisy_layers(torch.Generator().manual_seed(2))
    assert torch.equal(gen.noisy[5].weight, again.noisy[5].weight)


# --- the synthesis round ---------------------------------------------------------------------


def test_a_round_runs_its_loops_with_balanced_targets_and_new_noisy_layers():
    synth = synthesizer()  # warm-up: gwp_loops = 2 loops of 12 images
    noisy = synth.generator.noisy[0].weight.detach().clone()
    result = synth.synthesize()
    assert len(synth.pool) == 24 and result.images.shape == (12, 1, 32, 32)
    assert "loss_adv" not in result.logs
    labels = synth.pool.labels
    assert labels[:10].tolist() == list(range(10)) and labels[12:22].tolist() == list(range(10))
    assert not torch.equal(synth.generator.noisy[0].weight, noisy)
    assert synth.bn_stats.hooks[0].ema_mean is not None
    synth.end_epoch(0)  # epoch 1 = warmup: g_loops = 1
    synth.synthesize()
    assert len(synth.pool) == 36


def test_the_adversarial_term_starts_with_the_first_distillation_epoch():
    """As the reference, which counts the epoch up before it tests epoch > warmup."""
    synth = synthesizer("warmup=2")
    for epoch in range(2):
        assert "loss_adv" not in synth.synthesize().logs, epoch
        synth.end_epoch(epoch)
    assert "loss_adv" in synth.synthesize().logs  # epoch 2 = warmup: KD starts, and so does adv
    assert "loss_adv" not in synthesizer("warmup=2", "adv=0").synthesize().logs


def test_the_loops_after_the_first_see_the_student_in_train_mode():
    """As the reference: the student's batch statistics from the second loop on, which move its
    BN running averages; the first loop of a round sees it in eval mode."""
    for loops, moves in ((1, False), (2, True)):
        synth = synthesizer("warmup=0", f"g_loops={loops}", student=lenet5_bn)
        synth.end_epoch(0)  # epoch 1: adversarial whether it starts at warmup or warmup + 1
        bn = next(m for m in synth.student.modules() if isinstance(m, torch.nn.BatchNorm2d))
        before = bn.running_mean.clone()
        assert "loss_adv" in synth.synthesize().logs
        assert (not torch.equal(bn.running_mean, before)) == moves, loops


def test_the_generator_lives_g_life_epochs():
    synth = synthesizer("g_life=2", "warmup=1")
    renewed = [e for e in range(8) if synth.renews_generator(e)]
    assert renewed == [0, 1, 2, 3, 4, 5, 6, 7]  # warmup 1: both rules together
    synth = synthesizer("g_life=3", "warmup=0")
    assert [e for e in range(8) if synth.renews_generator(e)] == [0, 3, 6]
    first = synth.generator
    synth.synthesize()
    synth.synthesize()  # a second round of epoch 0 keeps it
    assert synth.generator is first
    for epoch in range(3):
        synth.end_epoch(epoch)
        synth.synthesize()
    assert synth.generator is not first  # epoch 3


# --- label embeddings ------------------------------------------------------------------------


def test_embeddings_from_an_encoder_are_written_and_read_back(tmp_path):
    rows = compute_label_embeddings(["cat", "dog"], TinyEncoder(), "a photo of {}")
    torch.testing.assert_close(rows, torch.tensor([[14.0, 5.0, 1.0], [14.0, 5.0, 1.0]]))
    path = tmp_path / "t.labels.safetensors"
    save_label_embeddings(path, rows, ["cat", "dog"], prompt="a photo of {}", encoder="tiny")
    torch.testing.assert_close(load_label_embeddings(path, 2), rows)
    with safe_open(str(path), "pt") as f:
        assert json.loads(f.metadata()["classes"]) == ["cat", "dog"]
    with pytest.raises(UsageError, match="2 classes"):
        load_label_embeddings(path, 10)
    assert default_embeddings_path("ckpt/fmnist-lenet5_bn.safetensors") == Path(
        "ckpt/fmnist-lenet5_bn.labels.safetensors"
    )


def test_a_run_reads_embeddings_beside_the_teacher_or_from_the_option(tmp_path):
    weights = tmp_path / "teacher.safetensors"
    beside = torch.arange(40.0).view(10, 4)
    save_label_embeddings(default_embeddings_path(weights), beside, [str(i) for i in range(10)])
    synth = synthesizer(teacher_weights=weights)
    torch.testing.assert_close(synth.label_embeddings, beside)
    assert synth.generator.norm.num_features == 4
    other = tmp_path / "other.safetensors"
    save_label_embeddings(other, -beside, [str(i) for i in range(10)])
    synth = synthesizer(f"label_embeddings={other}", teacher_weights=weights)
    torch.testing.assert_close(synth.label_embeddings, -beside)


def test_without_embeddings_a_fixed_seeded_embedding_is_used_and_said_in_one_line(tmp_path, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a line on stderr, not a Python warning
        first = synthesizer(teacher_weights=tmp_path / "t.safetensors")
    (line,) = capsys.readouterr().err.splitlines()
    assert "random label embeddings (embedding_seed 0)" in line
    assert str(tmp_path / "t.labels.safetensors") in line and "dfkd nayer embed-labels" in line
    second = synthesizer(seed=3)
    assert first.embedding_source == "random (seed 0)" and first.label_embeddings.shape == (10, 8)
    torch.testing.assert_close(first.label_embeddings, second.label_embeddings)
    third = synthesizer("embedding_seed=1")
    assert not torch.equal(first.label_embeddings, third.label_embeddings)
    capsys.readouterr()
    chosen = synthesizer("embeddings=random", teacher_weights=tmp_path / "t.safetensors")
    assert capsys.readouterr().err == ""  # asked for: nothing to say
    torch.testing.assert_close(chosen.label_embeddings, first.label_embeddings)


def test_random_embeddings_ignore_a_file_and_refuse_one_named(tmp_path):
    weights = tmp_path / "teacher.safetensors"
    save_label_embeddings(default_embeddings_path(weights), torch.ones(10, 4), list("abcdefghij"))
    synth = synthesizer("embeddings=random", teacher_weights=weights)
    assert synth.label_embeddings.shape == (10, 8) and synth.embedding_source == "random (seed 0)"
    with pytest.raises(UsageError, match="embeddings=random ignores label_embeddings"):
        synthesizer("embeddings=random", f"label_embeddings={weights}")


def test_a_run_names_its_label_embeddings_in_every_metrics_row(tiny_teacher_weights, workdir):
    """Which embeddings a number came from is in the run's record; without a file the run says so
    in one plain line; the adversarial term is on from the first distillation epoch."""
    weights = tiny_teacher_weights["lenet5_bn"]
    done = nayer_cli(*run_args(weights, workdir / "random"))
    assert done.exit_code == 0, done.output
    rows = metrics(workdir / "random")
    assert [r["embeddings"] for r in rows] == ["random (seed 0)"] * 2
    assert "loss_adv" not in rows[0] and "loss_adv" in rows[1]
    said = [line for line in done.stderr.splitlines() if "label embeddings" in line]
    assert len(said) == 1 and "dfkd nayer embed-labels" in said[0], done.stderr
    assert not [w for w in done.warnings if "embedding" in w]
    path = workdir / "clip.labels.safetensors"
    save_label_embeddings(path, torch.randn(10, 6), list("abcdefghij"), encoder="tiny")
    done = nayer_cli(*run_args(weights, workdir / "file", f"label_embeddings={path}"))
    assert done.exit_code == 0, done.output
    rows = metrics(workdir / "file")
    assert {r["embeddings"] for r in rows} == {f"file:{path} (encoder: tiny)"}
    assert "label embeddings" not in done.stderr


def test_a_preset_of_the_paper_refuses_random_embeddings_unless_asked(
    tiny_teacher_weights, workdir
):
    weights = workdir / "teacher.safetensors"
    shutil.copy(tiny_teacher_weights["lenet5_bn"], weights)
    refused = nayer_cli(*run_args(weights, workdir / "refused"), "--preset", "cifar10")
    assert refused.exit_code == 2, refused.output
    (error,) = [line for line in refused.stderr.splitlines() if line.startswith("Error:")]
    assert "embeddings=text" in error and str(default_embeddings_path(weights)) in error
    assert "embed-labels" in error and "--from FILE" in error and "open_clip" in error
    assert "-o embeddings=random" in error and "Traceback" not in refused.output
    chosen = nayer_cli(
        *run_args(weights, workdir / "chosen", "embeddings=random"), "--preset", "cifar10"
    )
    assert chosen.exit_code == 0, chosen.output
    assert {r["embeddings"] for r in metrics(workdir / "chosen")} == {"random (seed 0)"}
    # the reference's embeddings, imported beside the teacher: the preset runs on them
    reference = workdir / "cifar10_le.pickle"
    reference.write_bytes(pickle.dumps(torch.randn(10, 12).half(), protocol=4))
    imported = nayer_cli(
        "nayer", "embed-labels", "-d", "tiny", "--teacher-weights", weights, "--from", reference
    )
    assert imported.exit_code == 0, imported.output
    done = nayer_cli(*run_args(weights, workdir / "text"), "--preset", "cifar10")
    assert done.exit_code == 0, done.output
    named = f"file:{default_embeddings_path(weights)} (imported from {reference})"
    assert {r["embeddings"] for r in metrics(workdir / "text")} == {named}


def test_embed_labels_command_with_an_injected_encoder(tmp_path, monkeypatch):
    (tmp_path / "tiny_text_encoder.py").write_text(
        "import torch\n"
        "class Encoder:\n"
        "    name = 'tiny'\n"
        "    def encode(self, texts):\n"
        "        return torch.tensor([[float(len(t)), 1.0] for t in texts])\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins = make_plugins((dfkd_plugin_nayer, DIST))
    app = make_app(plugins)
    weights = tmp_path / "teacher.safetensors"
    args = ["nayer", "embed-labels", "--dataset", "tiny", "--teacher-weights", str(weights)]
    done = CliRunner().invoke(app, [*args, "--encoder", "tiny_text_encoder:Encoder"])
    assert done.exit_code == 0, done.output
    path = tmp_path / "teacher.labels.safetensors"
    rows = load_label_embeddings(path)
    assert rows.shape[1] == 2 and rows[:, 1].eq(1).all()
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    names = json.loads(meta["classes"])
    assert rows[:, 0].tolist() == [float(len(f"a image of {n}")) for n in names]
    assert meta["encoder"] == "tiny" and meta["prompt"] == "a image of {}"
    again = CliRunner().invoke(app, [*args, "--encoder", "tiny_text_encoder:Encoder"])
    assert again.exit_code == 2 and "--overwrite" in again.output


class Evil:
    """A pickle that would make a folder when loaded with pickle.load."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __reduce__(self):
        return (os.mkdir, (str(self.folder),))


def test_embed_labels_imports_finished_embeddings_without_an_encoder(tmp_path):
    weights = tmp_path / "teacher.safetensors"
    args = ["nayer", "embed-labels", "-d", "tiny", "--teacher-weights", weights, "--overwrite"]
    rows = torch.randn(10, 12)
    # the reference's format: pickle.dump of a half tensor (its files hold CUDA storages)
    (tmp_path / "le.pickle").write_bytes(pickle.dumps(rows.half(), protocol=4))
    torch.save(rows, tmp_path / "le.pt")
    save_label_embeddings(tmp_path / "le.safetensors", rows, [str(i) for i in range(10)])
    for name, expected in (
        ("le.pickle", rows.half().float()),
        ("le.pt", rows),
        ("le.safetensors", rows),
    ):
        done = nayer_cli(*args, "--from", tmp_path / name)
        assert done.exit_code == 0, done.output
        path = default_embeddings_path(weights)
        torch.testing.assert_close(load_label_embeddings(path, 10), expected)
        with safe_open(str(path), "pt") as f:
            assert f.metadata()["imported"] == str(tmp_path / name)


def test_embed_labels_refuses_a_bad_import_in_one_line(tmp_path):
    weights = tmp_path / "teacher.safetensors"
    args = ["nayer", "embed-labels", "-d", "tiny", "--teacher-weights", weights, "--from"]
    made = tmp_path / "made-by-the-pickle"
    (tmp_path / "evil.pickle").write_bytes(pickle.dumps(Evil(made)))
    (tmp_path / "text.pickle").write_text("not a tensor\n")
    (tmp_path / "three.pickle").write_bytes(pickle.dumps(torch.randn(3, 4)))
    (tmp_path / "flat.pickle").write_bytes(pickle.dumps(torch.randn(10)))
    nan = torch.randn(10, 4)
    nan[2, 1] = float("nan")
    (tmp_path / "nan.pickle").write_bytes(pickle.dumps(nan))
    for name, says in (
        ("evil.pickle", "not part of a tensor"),
        ("text.pickle", "not a tensor file"),
        ("three.pickle", "embeds 3 classes; the dataset has 10"),
        ("flat.pickle", "not one (classes, size) float tensor"),
        ("nan.pickle", "NaN"),
        ("missing.pickle", "does not exist"),
    ):
        done = nayer_cli(*args, tmp_path / name)
        assert done.exit_code == 2, (name, done.output)
        assert says in done.output and len(done.output.strip().splitlines()) == 1, done.output
    assert not made.exists() and not default_embeddings_path(weights).exists()
    torch.save(torch.randn(10, 4), tmp_path / "le.pt")
    done = nayer_cli(*args, tmp_path / "le.pt", "--encoder", "x:y")
    assert done.exit_code == 2 and "drop --prompt and --encoder" in done.output


def test_prompts_read_underscores_and_hyphens_as_spaces():
    """As the reference's label_embedding.py (CIFAR-100's aquarium_fish, lawn_mower, ...)."""
    texts: list[str] = []

    class Recording:
        def encode(self, batch: list[str]) -> torch.Tensor:
            texts.extend(batch)
            return torch.zeros(len(batch), 2)

    compute_label_embeddings(["aquarium_fish", "lawn_mower", "t-shirt", "apple"], Recording())
    assert texts == [
        "a image of aquarium fish",
        "a image of lawn mower",
        "a image of t shirt",
        "a image of apple",
    ]


def test_embed_labels_without_an_encoder_says_what_to_install(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("open_clip", "transformers") else real(name, *a),
    )
    app = make_app(make_plugins((dfkd_plugin_nayer, DIST)))
    args = ["nayer", "embed-labels", "-d", "tiny", "--teacher-weights", str(tmp_path / "t.st")]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 1
    assert "pip install open_clip_torch" in done.output and len(done.output.splitlines()) <= 3


# --- resume ----------------------------------------------------------------------------------


def test_state_round_trip_restores_generator_ema_and_embeddings(tmp_path):
    weights = tmp_path / "teacher.safetensors"
    save_label_embeddings(default_embeddings_path(weights), torch.randn(10, 5), list("abcdefghij"))
    synth = synthesizer(run_dir=tmp_path / "one", teacher_weights=weights)
    synth.synthesize()
    synth.end_epoch(0)
    synth.synthesize()
    state = copy.deepcopy(synth.state_dict())
    shutil.copytree(tmp_path / "one" / "images", tmp_path / "two" / "images")
    # no embedding file, another seed: everything differs until the state is loaded
    other = synthesizer(seed=4, run_dir=tmp_path / "two")
    assert other.label_embeddings.shape == (10, 8)
    other.load_state_dict(state)
    torch.testing.assert_close(other.label_embeddings, synth.label_embeddings)
    for name, value in synth.generator.state_dict().items():
        torch.testing.assert_close(other.generator.state_dict()[name], value, msg=name)
    for a, b in zip(synth.bn_stats.hooks, other.bn_stats.hooks, strict=True):
        torch.testing.assert_close(a.ema_mean, b.ema_mean)
        torch.testing.assert_close(a.ema_var, b.ema_var)
    assert len(other.pool) == len(synth.pool) and other.epoch == 1
    one, two = synth.synthesize(), other.synthesize()
    torch.testing.assert_close(one.images, two.images)
    assert one.logs == two.logs


def test_presets_carry_the_script_values():
    c10, c100 = (build_options(NayerOptions, PRESETS[n]) for n in ("cifar10", "cifar100"))
    assert (c10.g_steps, c100.g_steps, c10.epochs) == (30, 40, 120)
    assert (c100.bn, c100.oh, c100.adv, c100.lr_g, c100.syn_batch, c100.batch_size) == (
        10.0,
        0.5,
        1.33,
        4e-3,
        400,
        512,
    )
    assert build_options(NayerOptions, PRESETS["cifar100-nayer300"]).epochs == 320
    assert {PRESETS[name]["embeddings"] for name in PRESETS if name.startswith("cifar")} == {"text"}
    assert build_options(NayerOptions, PRESETS["fashion-mnist"]).embeddings == "auto"


@pytest.mark.parametrize(
    "bad", ["g_steps=0", "g_loops=0", "g_life=0", "bn_mmt=1", "synthesis_batch_size=1"]
)
def test_bad_options_are_refused(bad):
    with pytest.raises(UsageError, match=bad.split("=")[0]):
        synthesizer(bad)


def test_command_module_does_not_import_torch():
    import subprocess

    check = (
        "import sys, dfkd_plugin_nayer, dfkd_plugin_nayer.cli; assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", check], check=True)


def test_a_teacher_only_run_names_the_teachers_dataset_in_its_embeddings_hint(
    tiny_teacher_weights, workdir
):
    args = run_args(tiny_teacher_weights["lenet5_bn"], workdir / "alone")
    at = args.index("--dataset")
    done = nayer_cli(*args[:at], *args[at + 2 :])  # no --dataset: the sidecar says tiny
    assert done.exit_code == 0, done.output
    assert "dfkd nayer embed-labels --dataset tiny --teacher-weights" in done.stderr
