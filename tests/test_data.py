"""The built-in datasets read their real on-disk formats, and the batch pipeline is right."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import dfkd.plugins
from dfkd.data import open_dataset
from dfkd.data.folder import ImageFolderSource
from dfkd.data.pipeline import (
    BatchLoader,
    convert_channels,
    denormalize,
    normalize,
    random_crop_flip,
    to_float,
)
from dfkd.data.sources import CIFAR10, CIFAR100, MNIST, SVHN, FashionMNIST
from dfkd.errors import DfkdError, UsageError

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may find a developer's ./data or $DFKD_DATA by accident."""
    monkeypatch.delenv("DFKD_DATA", raising=False)
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        with gzip.open(f"{path}.gz", "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def write_mnist(directory: Path, n_train: int = 6, n_test: int = 4, compress: bool = True):
    """Images whose first pixel is their index, so order and layout can be checked."""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = np.zeros((n, 28, 28), np.uint8)
        images[:, 0, 0] = np.arange(n)
        images[:, 3, 5] = 200
        write_idx(directory / f"{prefix}-images-idx3-ubyte", images, compress)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10, compress)


class Py2Pickler(pickle._Pickler):
    """Pickles as the CIFAR files were made, by Python 2: str opcodes, numpy.core paths."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_str(self, obj: bytes | str) -> None:
        data = obj.encode() if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = dispatch[str] = save_str


def py2_pickle(obj: object) -> bytes:
    out = io.BytesIO()
    Py2Pickler(out, protocol=2).dump(obj)
    return out.getvalue().replace(b"numpy._core.", b"numpy.core.")


def write_cifar10(directory: Path, per_batch: int = 2) -> None:
    """Train batches as the originals (Python 2); the test batch as a Python 3 re-save might."""
    directory.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for b, name in enumerate(names):
        data = np.zeros((per_batch, 3072), np.uint8)
        data[:, 0] = 255  # red, row 0, col 0
        data[:, 1024 + 32 + 1] = 7  # green, row 1, col 1
        labels = [(b * per_batch + i) % 10 for i in range(per_batch)]
        batch = {b"batch_label": name.encode(), b"labels": labels, b"data": data}
        pickled = pickle.dumps(batch, protocol=5) if name == "test_batch" else py2_pickle(batch)
        (directory / name).write_bytes(pickled)


def write_cifar100(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 5), ("test", 3)):
        data = np.full((n, 3072), 9, np.uint8)
        batch = {b"fine_labels": list(range(n)), b"coarse_labels": [0] * n, b"data": data}
        (directory / split).write_bytes(pickle.dumps(batch, protocol=4))


def write_png(path: Path, size: tuple[int, int], mode: str = "L", value: int = 128) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    color = value if mode == "L" else (value, 0, 255 - value)
    Image.new(mode, size, color).save(path)


def test_plugin_module_and_package_do_not_import_torch() -> None:
    """`dfkd --help` and `dfkd list-datasets` must stay fast."""
    code = "import sys, dfkd.data.plugin, dfkd.data; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


@pytest.fixture
def data_plugins(monkeypatch: pytest.MonkeyPatch) -> dfkd.plugins.Plugins:
    """A manager with only this package's plugin, whatever state the other built-ins are in."""
    monkeypatch.setattr(dfkd.plugins, "DEFAULT_PLUGINS", ("dfkd.data.plugin",))
    return dfkd.plugins.Plugins(autoload=False, strict=True)


def test_plugin_registers_every_builtin(data_plugins: dfkd.plugins.Plugins) -> None:
    datasets = data_plugins.datasets
    assert datasets.names() == [
        "camvid",
        "cifar10",
        "cifar100",
        "fashion-mnist",
        "folder:",
        "mnist",
        "nyuv2",
        "svhn",
    ]
    assert datasets.get("cifar100").info["num_classes"] == 100
    assert datasets.get("mnist").load() is MNIST
    assert datasets.get("folder:x").load() is ImageFolderSource


def test_mnist_reads_gzipped_idx_in_torchvision_layout(tmp_path: Path) -> None:
    write_mnist(tmp_path / "MNIST" / "raw")
    source = MNIST(tmp_path)
    images, labels = source.load("train")
    assert source.location == tmp_path / "MNIST" / "raw"
    assert (images.shape, images.dtype) == ((6, 1, 28, 28), torch.uint8)
    assert images[:, 0, 0, 0].tolist() == [0, 1, 2, 3, 4, 5]
    assert images[0, 0, 3, 5] == 200
    assert (labels.dtype, labels.tolist()) == (torch.int64, [0, 1, 2, 3, 4, 5])
    assert len(source.load("test")[0]) == 4
    assert (source.num_classes, source.channels, source.image_size) == (10, 1, 28)
    assert (source.mean, source.std) == ((0.1307,), (0.3081,))


def test_fashion_mnist_reads_uncompressed_files_directly_in_root(tmp_path: Path) -> None:
    write_mnist(tmp_path, compress=False)
    source = FashionMNIST(tmp_path)
    images, labels = source.load("test")
    assert source.location == tmp_path
    assert images.shape == (4, 1, 28, 28) and labels.tolist() == [0, 1, 2, 3]
    assert source.classes[0] == "T-shirt/top" and source.classes[9] == "Ankle boot"
    assert (source.mean, source.std) == ((0.2860,), (0.3530,))


def test_truncated_idx_is_a_usage_error(tmp_path: Path) -> None:
    write_mnist(tmp_path, compress=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(UsageError, match="truncated"):
        MNIST(tmp_path).load("train")


@pytest.mark.skipif(not DEBIAN_FASHION.is_dir(), reason="Debian's dataset-fashion-mnist absent")
def test_fashion_mnist_from_debian_matches_its_constants() -> None:
    source = FashionMNIST()
    train_images, train_labels = source.load("train")
    test_images, test_labels = source.load("test")
    assert source.location == DEBIAN_FASHION
    assert train_images.shape == (60000, 1, 28, 28) and test_images.shape == (10000, 1, 28, 28)
    assert torch.bincount(train_labels).tolist() == [6000] * 10
    assert len(test_labels) == 10000
    counts = torch.bincount(train_images.view(-1), minlength=256).double()
    values = torch.arange(256, dtype=torch.float64) / 255
    mean = (counts * values).sum() / counts.sum()
    std = ((counts * (values - mean) ** 2).sum() / counts.sum()).sqrt()
    assert (mean.item(), std.item()) == pytest.approx((source.mean[0], source.std[0]), abs=5e-5)


def test_cifar10_pickles_concatenate_batches_in_channel_planes(tmp_path: Path) -> None:
    write_cifar10(tmp_path / "cifar-10-batches-py")
    source = CIFAR10(tmp_path)
    images, labels = source.load("train")
    assert (images.shape, images.dtype) == ((10, 3, 32, 32), torch.uint8)
    assert labels.tolist() == list(range(10))
    assert (images[:, 0, 0, 0] == 255).all() and (images[:, 1, 1, 1] == 7).all()
    assert images[:, 2].sum() == 0
    test_images, test_labels = source.load("test")
    assert test_images.shape == (2, 3, 32, 32) and test_labels.tolist() == [0, 1]
    assert source.classes[0] == "airplane" and source.num_classes == 10
    assert source.mean == (0.4914, 0.4822, 0.4465)


def test_cifar100_uses_fine_labels_and_names_from_meta(tmp_path: Path) -> None:
    write_cifar100(tmp_path / "cifar-100-python")
    source = CIFAR100(tmp_path)
    images, labels = source.load("train")
    assert images.shape == (5, 3, 32, 32) and int(images.max()) == 9
    assert labels.tolist() == [0, 1, 2, 3, 4]
    assert source.load("test")[1].tolist() == [0, 1, 2]
    assert (source.num_classes, source.classes[0], source.classes[-1]) == (100, "apple", "worm")
    assert source.classes[91] == "trout"
    assert source.std == (0.2675, 0.2565, 0.2761)


def test_a_pickle_naming_other_code_is_refused(tmp_path: Path) -> None:
    """Unpickling runs whatever a pickle names; a dataset file must not get to run code."""
    write_cifar10(tmp_path)
    batch = {b"labels": [0], b"data": os.getcwd}
    (tmp_path / "test_batch").write_bytes(pickle.dumps(batch, protocol=4))
    with pytest.raises(UsageError, match="will not load"):
        CIFAR10(tmp_path).load("test")


def test_svhn_mat_files_are_transposed_and_label_10_is_0(tmp_path: Path) -> None:
    scipy_io = pytest.importorskip("scipy.io", reason="SVHN needs scipy; see the report")
    (tmp_path / "svhn").mkdir()
    for split, n in (("train", 3), ("test", 2)):
        x = np.zeros((32, 32, 3, n), np.uint8)
        x[2, 5, 1, 0] = 9  # row 2, col 5, green, first image
        y = np.array([[10], [1], [2]][:n], np.uint8)
        scipy_io.savemat(tmp_path / "svhn" / f"{split}_32x32.mat", {"X": x, "y": y})
    source = SVHN(tmp_path)
    images, labels = source.load("train")
    assert (images.shape, images.dtype) == ((3, 3, 32, 32), torch.uint8)
    assert images[0, 1, 2, 5] == 9 and int(images.sum()) == 9
    assert (labels.dtype, labels.tolist()) == (torch.int64, [0, 1, 2])
    assert source.load("test")[0].shape == (2, 3, 32, 32)
    assert source.mean == (0.5, 0.5, 0.5)


def test_missing_data_names_every_place_and_both_remedies(tmp_path: Path, monkeypatch) -> None:
    """Metadata needs no files (`dfkd import-weights` reads only that); loading does."""
    monkeypatch.setenv("DFKD_DATA", str(tmp_path / "env"))
    source = CIFAR10(tmp_path / "given")
    assert (source.num_classes, source.channels, source.image_size) == (10, 3, 32)
    with pytest.raises(UsageError) as caught:
        source.load("test")
    message = str(caught.value)
    assert message == (
        f"CIFAR-10 not found (looked in {tmp_path / 'given'}, {tmp_path / 'env'}, ./data). "
        "Put the files under one of them, point --data-root at them, or add --download."
    )
    assert caught.value.exit_code == 2


def test_dfkd_data_and_then_dot_data_are_searched(tmp_path: Path, monkeypatch) -> None:
    write_mnist(tmp_path / "env" / "MNIST" / "raw")
    write_mnist(Path("data") / "mnist", n_train=3)
    assert len(MNIST().load("train")[0]) == 3
    assert MNIST().location == Path.cwd() / "data" / "mnist"  # absolute: cache keys survive cd
    monkeypatch.setenv("DFKD_DATA", str(tmp_path / "env"))
    assert MNIST().location == tmp_path / "env" / "MNIST" / "raw"


@pytest.fixture
def torchvision_datasets(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """An offline stand-in for torchvision.datasets (importing the real one takes seconds)."""
    datasets = types.ModuleType("torchvision.datasets")
    parent = types.ModuleType("torchvision")
    parent.datasets = datasets
    monkeypatch.setitem(sys.modules, "torchvision", parent)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", datasets)
    return datasets


def test_download_goes_through_torchvision_into_the_first_root(
    tmp_path: Path, torchvision_datasets: types.ModuleType
) -> None:
    """Where the files land, and that torchvision is asked only with --download."""
    calls = []

    def fake_cifar10(root: str, download: bool = False) -> None:
        calls.append((root, download))
        write_cifar10(Path(root) / "cifar-10-batches-py")

    torchvision_datasets.CIFAR10 = fake_cifar10
    with pytest.raises(UsageError):
        CIFAR10(tmp_path / "root").load("train")
    assert calls == []
    source = CIFAR10(tmp_path / "root", download=True)
    assert len(source.load("train")[0]) == 10
    assert calls == [(str(tmp_path / "root"), True)]
    assert source.location == tmp_path / "root" / "cifar-10-batches-py"


def test_failed_download_is_a_failure_not_a_traceback(
    tmp_path: Path, torchvision_datasets: types.ModuleType
) -> None:
    def offline(root: str, download: bool = False) -> None:
        raise OSError("network is unreachable")

    torchvision_datasets.CIFAR10 = offline
    with pytest.raises(DfkdError, match="Downloading CIFAR-10 into .* failed.*unreachable"):
        CIFAR10(tmp_path, download=True).load("test")


def test_a_split_is_read_once_per_process(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    first, again = MNIST(tmp_path), MNIST(tmp_path)
    assert again.load("train")[0] is first.load("train")[0]
    with pytest.raises(UsageError, match="Unknown split 'val'"):
        again.load("val")


def test_labelled_folder_reads_classes_from_train_and_accepts_val(
    tmp_path: Path, data_plugins: dfkd.plugins.Plugins
) -> None:
    for split, count in (("train", 2), ("val", 1)):
        for c, name in enumerate(("dog", "cat")):
            for i in range(count):
                write_png(tmp_path / split / name / f"{i}.png", (8, 8), value=10 * c + i)
    source = open_dataset(f"folder:{tmp_path}", plugins=data_plugins)
    images, labels = source.load("train")
    assert (source.classes, source.num_classes, source.channels) == (["cat", "dog"], 2, 1)
    assert (source.image_size, source.mean) == (8, (0.5,))
    assert (images.shape, images.dtype) == ((4, 1, 8, 8), torch.uint8)
    assert labels.tolist() == [0, 0, 1, 1]
    assert images[:, 0, 0, 0].tolist() == [10, 11, 0, 1]
    test_images, test_labels = source.load("test")
    assert test_images.shape == (2, 1, 8, 8) and test_labels.tolist() == [0, 1]


def test_folder_with_a_colour_image_is_rgb_and_stray_sizes_are_resized(tmp_path: Path) -> None:
    for i in range(3):
        write_png(tmp_path / "train" / "a" / f"{i}.png", (6, 6))
    write_png(tmp_path / "train" / "a" / "big.png", (12, 10), mode="RGB", value=200)
    write_png(tmp_path / "test" / "a" / "0.png", (6, 6))
    source = ImageFolderSource(arg=str(tmp_path))
    images, _ = source.load("train")
    assert (source.channels, source.image_size, source.mean) == (3, 6, (0.5, 0.5, 0.5))
    assert images.shape == (4, 3, 6, 6)
    assert images[0, :, 0, 0].tolist() == [128, 128, 128]
    assert images[3, :, 0, 0].tolist() == [200, 0, 55]  # big.png, squashed from 12x10


def test_flat_folder_is_an_unlabelled_train_split_only(tmp_path: Path) -> None:
    write_png(tmp_path / "a.png", (7, 5))
    write_png(tmp_path / "deeper" / "b.jpg", (7, 5))
    write_png(tmp_path / "c.png", (9, 9))
    (tmp_path / "notes.txt").write_text("not an image")
    source = ImageFolderSource(arg=str(tmp_path))
    images, labels = source.load("train")
    assert images.shape == (3, 1, 5, 5) and labels is None
    assert (source.num_classes, source.classes) == (None, [])
    with pytest.raises(UsageError, match="has no test split"):
        source.load("test")


def test_tensor_file_is_read_instead_of_the_pngs_beside_it(tmp_path: Path) -> None:
    images = torch.randint(0, 256, (5, 3, 4, 4), dtype=torch.uint8)
    labels = torch.tensor([0, 2, 1, 2, 0])
    save_file({"images": images, "labels": labels}, tmp_path / "images.safetensors")
    write_png(tmp_path / "0.png", (9, 9))
    source = ImageFolderSource(arg=str(tmp_path))
    loaded, loaded_labels = source.load("train")
    assert (source.channels, source.image_size, source.num_classes) == (3, 4, 3)
    assert torch.equal(loaded, images) and loaded_labels.dtype == torch.int64
    assert loaded_labels.tolist() == labels.tolist()


def test_folder_errors_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="is not one"):
        ImageFolderSource(arg=str(tmp_path / "absent"))
    with pytest.raises(UsageError, match="holds no images"):
        ImageFolderSource(arg=str(tmp_path))
    save_file(
        {"images": torch.zeros(2, 3, 4, 5, dtype=torch.uint8)}, tmp_path / "images.safetensors"
    )
    with pytest.raises(UsageError, match="square uint8"):
        ImageFolderSource(arg=str(tmp_path))


def test_open_dataset_builds_through_the_registry(
    tmp_path: Path, data_plugins: dfkd.plugins.Plugins
) -> None:
    write_cifar10(tmp_path)
    source = open_dataset("cifar10", root=tmp_path, plugins=data_plugins)
    assert isinstance(source, CIFAR10) and source.location == tmp_path
    with pytest.raises(UsageError, match="Did you mean 'cifar10'"):
        open_dataset("cifar1O", plugins=data_plugins)


def test_to_float_resizes_28_to_32_and_normalises() -> None:
    images = torch.full((2, 1, 28, 28), 255, dtype=torch.uint8)
    x = to_float(images, (0.5,), (0.25,), size=32)
    assert (x.shape, x.dtype) == ((2, 1, 32, 32), torch.float32)
    assert torch.allclose(x, torch.full_like(x, 2.0))
    assert to_float(images, (0.5,), (0.25,)).shape == (2, 1, 28, 28)
    with pytest.raises(TypeError):
        to_float(images.float(), (0.5,), (0.25,))


def test_to_float_converts_channels_only_when_asked() -> None:
    grey = torch.randint(0, 256, (2, 1, 4, 4), dtype=torch.uint8)
    rgb = to_float(grey, (0.5,), (0.5,), channels=3)
    assert rgb.shape == (2, 3, 4, 4) and torch.equal(rgb[:, 0], rgb[:, 2])
    back = convert_channels(rgb, 1)
    assert torch.allclose(back, to_float(grey, (0.5,), (0.5,)), atol=1e-6)
    with pytest.raises(ValueError):
        convert_channels(rgb, 2)


def test_normalize_and_denormalize_are_inverse() -> None:
    x = torch.rand(3, 3, 5, 5)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
    y = normalize(x, mean, std)
    assert torch.allclose(y[:, 1], (x[:, 1] - 0.4822) / 0.1994)
    assert torch.allclose(denormalize(y, mean, std), x, atol=1e-6)


def _window(sample: torch.Tensor, image: torch.Tensor, padding: int) -> tuple[int, int, bool]:
    """Which crop offset and flip RandomCrop + HorizontalFlip would have used to make sample."""
    padded = torch.nn.functional.pad(image, (padding,) * 4)
    h, w = image.shape[-2:]
    for i in range(2 * padding + 1):
        for j in range(2 * padding + 1):
            crop = padded[:, i : i + h, j : j + w]
            for mirrored in (False, True):
                if torch.equal(sample, crop.flip(-1) if mirrored else crop):
                    return i, j, mirrored
    raise AssertionError("not a crop of the padded image")


def test_random_crop_flip_moves_pixels_within_valid_windows_reproducibly() -> None:
    x = torch.arange(16 * 3 * 6 * 6, dtype=torch.float32).reshape(16, 3, 6, 6)
    out = random_crop_flip(x, padding=2, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert not torch.equal(out, x)
    rows, cols, flips = zip(*(_window(o, i, 2) for o, i in zip(out, x, strict=True)), strict=True)
    assert len(set(rows)) > 1 and len(set(cols)) > 1 and len(set(flips)) == 2
    again = random_crop_flip(x, padding=2, generator=torch.Generator().manual_seed(0))
    other = random_crop_flip(x, padding=2, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out, again) and not torch.equal(out, other)


def test_random_flip_alone_mirrors_some_samples_and_keeps_uint8() -> None:
    x = torch.randint(0, 256, (32, 1, 4, 4), dtype=torch.uint8)
    out = random_crop_flip(x, padding=0, generator=torch.Generator().manual_seed(3))
    same = [torch.equal(o, i) for o, i in zip(out, x, strict=True)]
    mirrored = [torch.equal(o, i.flip(-1)) for o, i in zip(out, x, strict=True)]
    assert out.dtype == torch.uint8
    assert all(s or m for s, m in zip(same, mirrored, strict=True))
    assert 0 < sum(mirrored) < 32


def test_batch_loader_covers_each_sample_once_per_epoch_in_a_new_order() -> None:
    images = torch.arange(10).view(10, 1, 1, 1)
    loader = BatchLoader(images, torch.arange(10), batch_size=4, seed=7)
    epochs = [[y for _, y in loader] for _ in range(2)]
    assert len(loader) == 3 and [len(b) for b in epochs[0]] == [4, 4, 2]
    orders = [torch.cat(e).tolist() for e in epochs]
    assert sorted(orders[0]) == sorted(orders[1]) == list(range(10))
    assert orders[0] != orders[1]
    x, y = next(iter(BatchLoader(images, torch.arange(10), batch_size=4, seed=7)))
    assert y.tolist() == orders[0][:4] and x.view(-1).tolist() == y.tolist()


def test_batch_loader_drop_last_transform_and_unlabelled() -> None:
    images = torch.zeros(10, 1, 2, 2, dtype=torch.uint8)
    loader = BatchLoader(images, batch_size=4, drop_last=True, transform=lambda x: x.float() + 1)
    batches = list(loader)
    assert len(loader) == len(batches) == 2
    assert all(y is None and x.dtype == torch.float32 and x.min() == 1 for x, y in batches)


@pytest.mark.parametrize("drop_last", [False, True])
def test_batch_loader_shards_are_disjoint_and_cover_the_data(drop_last: bool) -> None:
    images = torch.zeros(11, 1, 1, 1)
    shards = [
        BatchLoader(
            images, torch.arange(11), 2, drop_last=drop_last, num_shards=3, shard_index=k, seed=1
        )
        for k in range(3)
    ]
    batches = [list(shard) for shard in shards]
    expected = [1, 1, 1] if drop_last else [2, 2, 2]
    assert [len(s) for s in shards] == [len(b) for b in batches] == expected
    seen = [torch.cat([y for _, y in b]).tolist() for b in batches]
    flat = [i for s in seen for i in s]
    assert len(flat) == len(set(flat))
    if drop_last:
        assert [len(s) for s in seen] == [2, 2, 2]
    else:
        assert sorted(flat) == list(range(11))


def test_a_pool_of_chunks_is_a_transfer_set(tmp_path: Path) -> None:
    """What `dfkd run --keep-images` leaves in RUN/images reads back as `folder:RUN/images`."""
    from dfkd.synthesis.pool import ImagePool

    pool = ImagePool(tmp_path / "images")
    pool.add(torch.rand(3, 1, 8, 8))
    pool.add(torch.rand(2, 1, 8, 8))
    source = open_dataset(f"folder:{tmp_path / 'images'}")
    images, labels = source.load("train")
    assert torch.equal(images, pool.images) and labels is None
    assert (source.channels, source.image_size, source.num_classes) == (1, 8, None)
