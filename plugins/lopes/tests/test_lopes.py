"""Lopes plugin: records against direct statistics, the record file, every objective, refusal of
foreign records, the CLI end to end, and learning (the rest of the method contract:
tests/test_method_contract.py)."""

from __future__ import annotations

import math
from pathlib import Path

import dfkd_plugin_lopes
import pytest
import torch
from dfkd_plugin_lopes.activations import TOP, Capture, default_layers
from dfkd_plugin_lopes.moments import ClassMoments, graph_spectrum
from dfkd_plugin_lopes.options import LopesOptions
from dfkd_plugin_lopes.records import (
    check_records,
    load_records,
    make_records,
    record_teacher,
    save_records,
)
from dfkd_plugin_lopes.synthesizer import (
    LopesSynthesizer,
    all_layers_loss,
    layer_loss,
    soft_cross_entropy,
    spectral_loss,
)
from safetensors.torch import load_file

from dfkd.data import open_dataset
from dfkd.data.pipeline import InputFormat
from dfkd.errors import UsageError
from dfkd.plugins import Plugins
from dfkd.synthesis.losses import kd_kl
from dfkd.testing import LearningContract, assert_complete_run, cpu_context, make_plugins
from dfkd.training.datafree import RunConfig, run_datafree
from dfkd.training.setup import load_teacher

DIST = "dfkd-plugin-lopes"
OBJECTIVES = (
    "top_layer",
    "all_layers",
    "all_layers_dropout",
    "spectral_all_layers",
    "spectral_layer_pairs",
)


def lopes_plugins() -> Plugins:
    return make_plugins((dfkd_plugin_lopes, DIST))


class TestLearning(LearningContract):
    method = "lopes"
    module = dfkd_plugin_lopes
    distribution = DIST
    learn_options = [
        "epochs=3",
        "warmup=1",
        "ep_steps=40",
        "kd_steps=20",
        "batch_size=32",
        "synthesis_batch_size=100",
        "pool_size=200",
        "g_steps=20",
        "lr=0.05",
        "objective=all_layers",
    ]

    def prepare(self, teacher_weights: Path, folder: Path) -> list[str]:
        """The owner's side of the method: activation records of the teacher on tiny."""
        path = folder / "contract.lopes.safetensors"
        make_records(
            self.teacher,
            "tiny",
            teacher_weights=str(teacher_weights),
            out=path,
            overwrite=True,
            plugins=lopes_plugins(),
            batch_size=64,
        )
        return [f"records={path}"]


@pytest.fixture
def plugins() -> Plugins:
    """The `cli` fixture builds its app from this: the built-ins, tiny, and this plugin."""
    return lopes_plugins()


@pytest.fixture(scope="module")
def tiny_records(tiny_teacher_weights, tmp_path_factory) -> Path:
    """Records of the tiny LeNet-5 teacher with covariances and a small spectral summary."""
    path = tmp_path_factory.mktemp("records") / "tiny-lenet5.lopes.safetensors"
    make_records(
        "lenet5",
        "tiny",
        teacher_weights=str(tiny_teacher_weights["lenet5"]),
        out=path,
        plugins=lopes_plugins(),
        covariance=True,
        spectral=True,
        spectral_units=32,
        spectral_k=6,
        batch_size=64,
    )
    return path


def tiny_teacher(weights: Path, model: str = "lenet5"):
    plugins = lopes_plugins()
    source = open_dataset("tiny", plugins=plugins)
    teacher, spec, _ = load_teacher(model, source, weights, plugins)
    return teacher, source, InputFormat.of(source, spec.size)


def synthesizer(weights: Path, records: Path, **options) -> LopesSynthesizer:
    teacher, source, _ = tiny_teacher(weights)
    student = torch.nn.Linear(1, 1)
    ctx = cpu_context(
        teacher,
        student,
        mean=tuple(source.mean),
        std=tuple(source.std),
    )
    return LopesSynthesizer(ctx, LopesOptions(records=str(records), **options))


def run_config(weights: Path, records: Path, out: Path, overrides: list[str], **kw) -> RunConfig:
    return RunConfig(
        method="lopes",
        teacher=kw.pop("teacher", "lenet5"),
        student="lenet5_half",
        dataset="tiny",
        teacher_weights=str(weights),
        overrides=[f"records={records}", *overrides],
        out=str(out),
        **kw,
    )


# --- records ---------------------------------------------------------------------------------


def test_class_moments_stream_to_the_statistics_of_the_whole_set():
    g = torch.Generator().manual_seed(0)
    values = 1e4 + torch.randn(300, 5, generator=g, dtype=torch.float64) * 3
    labels = torch.randint(0, 3, (300,), generator=g)
    moments = ClassMoments(3, 5, covariance=True, device=torch.device("cpu"))
    for start, stop in ((0, 7), (7, 100), (100, 101), (101, 300)):  # uneven, one of size 1
        moments.update(values[start:stop], labels[start:stop])
    for c in range(3):
        rows = values[labels == c]
        assert moments.count[c] == len(rows)
        torch.testing.assert_close(moments.mean[c], rows.mean(0))
        torch.testing.assert_close(moments.std()[c], rows.std(0))
        torch.testing.assert_close(moments.covariance()[c], torch.cov(rows.T))


def test_records_match_statistics_computed_over_the_whole_split(tiny_teacher_weights):
    teacher, source, fmt = tiny_teacher(tiny_teacher_weights["lenet5"])
    images, labels = source.load("train")
    records = record_teacher(
        teacher, images, labels, fmt, 10, covariance=True, batch_size=64, max_cov_units=100
    )
    assert records.hooked == ["features.0", "features.3", "features.6", "fc.0"]
    capture = Capture(teacher, records.hooked)
    with torch.no_grad():
        logits = teacher(fmt.from_uint8(images))
    capture.remove()
    acts = {n: capture.outputs[n].flatten(1).double() for n in records.hooked}
    acts[TOP] = logits.double() / 8
    for name, values in acts.items():
        for c in range(10):
            rows = values[labels == c]
            mean = records.tensors[f"layer/{name}/mean"][c].double()
            std = records.tensors[f"layer/{name}/std"][c].double()
            torch.testing.assert_close(mean, rows.mean(0), atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(std, rows.std(0), atol=1e-5, rtol=1e-4)
    kept = {n for n in records.names if f"layer/{n}/chol" in records.tensors}
    assert kept == {"fc.0", TOP}  # the 120-unit conv is over max_cov_units
    for c in range(10):  # 20 images per class: logits/T (10 units) has a regular covariance
        chol = records.tensors[f"layer/{TOP}/chol"][c].double()
        cov = torch.cov(acts[TOP][labels == c].T)
        torch.testing.assert_close(chol @ chol.T, cov, atol=1e-6, rtol=1e-4)
        chol = records.tensors["layer/fc.0/chol"][c].double()  # singular: jitter added
        cov = torch.cov(acts["fc.0"][labels == c].T)
        torch.testing.assert_close(chol @ chol.T, cov, atol=1e-3 * cov.diagonal().mean(), rtol=0)


def test_default_layers_are_the_pre_activations_of_the_reference():
    from dfkd.models.mlp import hinton1200

    assert default_layers(hinton1200(10, 1), torch.zeros(2, 1, 28, 28)) == ["fc1", "fc2"]


def test_a_records_file_round_trips(tiny_records, tmp_path):
    records = load_records(tiny_records)
    assert records.header["teacher"] == "lenet5" and records.header["dataset"] == "tiny"
    assert records.temperature == 8.0 and len(records.header["teacher_weights_sha256"]) == 64
    assert records.objectives == list(OBJECTIVES)
    assert set(records.groups) == {"all", "pair0", "pair1", "pair2", "pair3"}
    save_records(records, tmp_path / "copy.safetensors")
    again = load_records(tmp_path / "copy.safetensors")
    assert again.header == records.header
    assert again.tensors.keys() == records.tensors.keys()
    for key, value in records.tensors.items():
        assert torch.equal(again.tensors[key], value), key


def test_a_file_without_the_header_is_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(UsageError, match="not a dfkd lopes records file"):
        load_records(tmp_path / "other.safetensors")


def test_graph_spectrum_by_hand():
    # units 0 and 1 move together, unit 2 alone: the graph is one edge and an isolated node, so
    # the normalised Laplacian has eigenvalues 0 (the edge's constant), 1 (the lone unit), 2.
    cov = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 4.0]], dtype=torch.float64)
    mean = torch.tensor([3.0, 1.0, 5.0], dtype=torch.float64)
    modes, eigvals, coef_mean, coef_chol = graph_spectrum(mean, cov, 3)
    torch.testing.assert_close(eigvals, torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64))
    torch.testing.assert_close(modes.T @ modes, torch.eye(3, dtype=torch.float64))
    torch.testing.assert_close(
        coef_mean.abs(), torch.tensor([4 / math.sqrt(2), 5.0, math.sqrt(2)], dtype=torch.float64)
    )
    coef_cov = coef_chol @ coef_chol.T
    torch.testing.assert_close(
        coef_cov.diagonal(), torch.tensor([2.0, 4.0, 0.0], dtype=torch.float64), atol=1e-6, rtol=0
    )


# --- objectives ------------------------------------------------------------------------------


def test_loss_pieces_by_hand():
    act, target = torch.tensor([[-1.0, 2.0]]), torch.tensor([[1.0, 1.0]])
    assert layer_loss(act, target).item() == pytest.approx(1.0)  # relu: (1-0)² + (1-2)², /2
    assert layer_loss(act, target, relu=False).item() == pytest.approx(2.5)  # (2² + 1²) / 2
    top_a, top_t = torch.tensor([[-2.0]]), torch.tensor([[1.0]])
    # Σ (1/n_l) layer_loss: 1/2 · 1 + 1/1 · 1 (relu on top), or + 9 without it
    assert all_layers_loss([act, top_a], [target, top_t]).item() == pytest.approx(1.5)
    assert all_layers_loss([act, top_a], [target, top_t], top_relu=False).item() == pytest.approx(
        9.5
    )
    basis = torch.tensor([[[1.0], [1.0]]]) / math.sqrt(2)  # one mode, (1, 1)/√2
    assert spectral_loss(torch.tensor([[1.0, 2.0]]), basis, torch.zeros(1, 1)).item() == (
        pytest.approx(4.5)
    )
    s, t = torch.randn(4, 10), torch.randn(4, 10)
    entropy = -(torch.softmax(t / 8, 1) * torch.log_softmax(t / 8, 1)).sum(1).mean()
    torch.testing.assert_close(soft_cross_entropy(s, t, 8.0), kd_kl(s, t, T=8.0) + 64 * entropy)


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_each_objective_decreases(objective, tiny_teacher_weights, tiny_records):
    synth = synthesizer(tiny_teacher_weights["lenet5"], tiny_records, objective=objective)
    labels = torch.arange(10)
    targets = synth.sample_targets(labels)
    if objective == "all_layers_dropout":
        synth.capture.masks = synth.dropout_masks(10)
    x = 0.15 + 0.1 * torch.randn(10, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    x = x.clamp(0, 1).requires_grad_(True)
    optimizer = torch.optim.Adam([x], lr=0.05)
    losses = []
    for _ in range(8):
        loss = synth.objective_loss(x, labels, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    synth.capture.remove()
    assert losses[-1] < 0.8 * losses[0], losses


def test_spectral_objectives_are_not_all_layers(tiny_teacher_weights, tiny_records):
    x = torch.rand(10, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(10)
    losses = {}
    for objective in ("all_layers", "spectral_all_layers", "spectral_layer_pairs"):
        synth = synthesizer(tiny_teacher_weights["lenet5"], tiny_records, objective=objective)
        torch.manual_seed(0)
        losses[objective] = synth.objective_loss(x, labels, synth.sample_targets(labels)).item()
        synth.capture.remove()
    assert len({round(v, 6) for v in losses.values()}) == 3, losses
    # the pairs objective sums one term per consecutive pair: it is not the all-layers graph's
    assert losses["spectral_layer_pairs"] != pytest.approx(losses["spectral_all_layers"])


# --- refusals --------------------------------------------------------------------------------


def test_records_of_another_teacher_are_refused(tiny_teacher_weights, tiny_records, workdir):
    cfg = run_config(
        tiny_teacher_weights["lenet5_bn"],
        tiny_records,
        workdir / "run",
        [],
        teacher="lenet5_bn",
        preset="smoke",
    )
    with pytest.raises(UsageError) as caught:
        run_datafree(cfg, plugins=lopes_plugins())
    message = str(caught.value)
    assert "describe teacher lenet5 on tiny, not lenet5_bn on tiny" in message
    assert "dfkd lopes record --teacher lenet5_bn --dataset tiny" in message
    assert "\n" not in message


def test_records_of_other_weights_or_another_dataset_are_refused(tiny_records):
    records = load_records(tiny_records)
    fingerprint = records.header["teacher_fingerprint"]
    check_records(records, tiny_records, fingerprint=fingerprint, num_classes=10)  # accepted
    with pytest.raises(UsageError, match="made from other weights of lenet5 on tiny"):
        check_records(records, tiny_records, fingerprint="0" * 64, num_classes=10)
    with pytest.raises(UsageError, match="not lenet5 on mnist"):
        check_records(
            records,
            tiny_records,
            fingerprint=fingerprint,
            num_classes=10,
            teacher="lenet5",
            dataset="mnist",
        )


def test_missing_records_or_spectral_summary_are_refused(tiny_teacher_weights, tmp_path):
    with pytest.raises(UsageError, match="-o records=FILE"):
        synthesizer(tiny_teacher_weights["lenet5"], "")
    teacher, source, fmt = tiny_teacher(tiny_teacher_weights["lenet5"])
    images, labels = source.load("train")
    plain = record_teacher(teacher, images, labels, fmt, 10, batch_size=200)
    save_records(plain, tmp_path / "plain.safetensors")
    with pytest.raises(UsageError, match="record them again with --spectral"):
        synthesizer(
            tiny_teacher_weights["lenet5"],
            tmp_path / "plain.safetensors",
            objective="spectral_layer_pairs",
        )


# --- runs ------------------------------------------------------------------------------------


def test_record_then_run_through_the_cli(cli, plugins, tiny_teacher_weights, monkeypatch, workdir):
    monkeypatch.setattr("dfkd.plugins.get_plugins", lambda: plugins)  # the command's plugin set
    weights = str(tiny_teacher_weights["lenet5"])
    result = cli(
        "lopes", "record", "--teacher", "lenet5", "--dataset", "tiny", "--teacher-weights",
        weights, "--spectral", "--spectral-units", "32", "--spectral-k", "4", "--out", "rec.st",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "records: rec.st" in result.output
    args = ["--preset", "smoke", "-o", "records=rec.st", "-o", "objective=spectral_layer_pairs"]
    result = cli(
        "run", "lopes", "--teacher", "lenet5", "--student", "lenet5_half", "--dataset", "tiny",
        "--teacher-weights", weights, *args, "--out", "run", "--keep-images", "-q",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    run = workdir / "run"
    assert_complete_run(run)
    chunks = sorted((run / "images").glob("images-*.safetensors"))
    pool = [load_file(str(p)) for p in chunks]
    assert sum(len(c["images"]) for c in pool) == 40  # pool_size, then no more
    assert torch.cat([c["labels"] for c in pool]).bincount().tolist() == [4] * 10
    result = cli(
        "kd", "--teacher", "lenet5", "--student", "lenet5_half", "--dataset", "tiny",
        "--teacher-weights", weights, "--transfer-set", "folder:run/images", "--epochs", "1",
        "--batch-size", "8", "--out", "kd", "-q",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    result = cli(
        "run", "lopes", "--teacher", "lenet5", "--student", "lenet5_half", "--dataset", "tiny",
        "--teacher-weights", weights, "-o", "records=missing.st", "--out", "run2", "-q",
    )  # fmt: skip
    assert result.exit_code == 2 and "missing.st does not exist" in result.output
