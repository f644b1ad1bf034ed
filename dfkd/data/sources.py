"""The standard benchmark datasets, read from their usual on-disk formats.

Opening one touches no file: its shape, classes and constants are fixed, so commands that need
only those work without the data. The files are looked for (and downloaded, if asked) when
``location`` or ``load`` is first used. Each is found under a root in torchvision's layout
(``<root>/MNIST/raw``, ``<root>/cifar-10-batches-py``, ...) or with its files directly in the
root; the roots are tried in the order of ``candidate_roots``. MNIST and Fashion-MNIST share
file names, so a root holding those files directly serves as either: give such a root explicitly.
"""

from __future__ import annotations

import functools
import gzip
import math
import pickle
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from dfkd.data.source import Arrays, DataSource, Split, candidate_roots, missing_data
from dfkd.errors import DfkdError, UsageError

DIGITS = [str(d) for d in range(10)]
# In the order of the dataset's meta file (alphabetical), so that label i is name i.
CIFAR100_CLASSES = """
apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly
camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile
cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp
lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree
orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy porcupine possum
rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper snail snake spider
squirrel streetcar sunflower sweet_pepper table tank telephone television tiger tractor train
trout tulip turtle wardrobe whale willow_tree wolf woman worm
"""


class KnownDataset(DataSource):
    """A named dataset with fixed shape and constants, found locally or downloaded on request."""

    title: ClassVar[str]  # the name people write, for messages
    subdirs: ClassVar[tuple[str, ...]]  # tried under each root; "" is the root itself
    files: ClassVar[tuple[str, ...]]  # all of them must be present in one directory
    system_dirs: ClassVar[tuple[str, ...]] = ()
    class_names: ClassVar[Sequence[str]] = DIGITS
    #: for a dataset dfkd cannot download, where to get it (--download is then ignored)
    get_it: ClassVar[str] = ""

    def __init__(self, root: str | Path | None = None, download: bool = False) -> None:
        self.roots = candidate_roots(root, *self.system_dirs)
        self.download = download
        self.classes = list(self.class_names)

    @functools.cached_property
    def location(self) -> Path:
        """The directory holding the files; downloads into the first root when asked."""
        found = self._find(self.roots)
        if found is None and self.download and not self.get_it:
            target = self.roots[0]
            try:
                self._fetch(target)
            except Exception as exc:
                raise DfkdError(
                    f"Downloading {self.title} into {target} failed ({type(exc).__name__}: {exc})."
                ) from exc
            found = self._find([target])
        if found is None:
            raise missing_data(self.title, self.roots, self.get_it)
        return found.absolute()

    def _find(self, roots: list[Path]) -> Path | None:
        for root in roots:
            for sub in self.subdirs:
                directory = root / sub
                if all(self._file(directory, name) for name in self.files):
                    return directory
        return None

    def _file(self, directory: Path, name: str) -> Path | None:
        path = directory / name
        return path if path.is_file() else None

    def _fetch(self, root: Path) -> None:
        """Download with torchvision into ``root``, in a layout ``_find`` accepts."""
        raise NotImplementedError


def read_idx(path: Path) -> torch.Tensor:
    """An IDX array of unsigned bytes (the MNIST format), gzipped or not, as a uint8 tensor."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = bytearray(f.read())
    if len(data) < 4 or data[0] or data[1] or data[2] != 0x08:
        raise UsageError(f"{path} is not an IDX file of unsigned bytes.")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", data[4:header])
    if len(data) - header != math.prod(shape):
        raise UsageError(f"{path} is truncated: its header promises shape {shape}.")
    return torch.frombuffer(data, dtype=torch.uint8, offset=header).reshape(shape)


class _Idx(KnownDataset):
    files = (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    )
    channels = 1
    image_size = 28

    def _file(self, directory: Path, name: str) -> Path | None:
        # torchvision keeps both forms side by side; the uncompressed one reads faster.
        return super()._file(directory, name) or super()._file(directory, f"{name}.gz")

    def _read(self, split: Split) -> Arrays:
        prefix = "train" if split == "train" else "t10k"
        images = read_idx(self._file(self.location, f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(self._file(self.location, f"{prefix}-labels-idx1-ubyte"))
        if images.dim() != 3 or labels.dim() != 1 or len(images) != len(labels):
            raise UsageError(
                f"{self.title} {split} files in {self.location} do not match: images "
                f"{tuple(images.shape)}, labels {tuple(labels.shape)}."
            )
        return images.unsqueeze(1), labels.long()


class MNIST(_Idx):
    name = "mnist"
    title = "MNIST"
    subdirs = ("MNIST/raw", "mnist", "")
    mean = (0.1307,)
    std = (0.3081,)

    def _fetch(self, root: Path) -> None:
        from torchvision.datasets import MNIST as Download

        for train in (True, False):
            Download(str(root), train=train, download=True)


class FashionMNIST(_Idx):
    """Normalised with its own training-set statistics: the reference table has no entry for
    Fashion-MNIST, and MNIST's constants (mean 0.13) would leave its inputs (mean 0.29)
    off-centre."""

    name = "fashion-mnist"
    title = "Fashion-MNIST"
    subdirs = ("FashionMNIST/raw", "fashion-mnist", "")
    system_dirs = ("/usr/share/datasets/fashion-mnist",)
    mean = (0.2860,)
    std = (0.3530,)
    class_names = (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    )

    def _fetch(self, root: Path) -> None:
        from torchvision.datasets import FashionMNIST as Download

        for train in (True, False):
            Download(str(root), train=train, download=True)


# What a pickled numpy array needs, whichever numpy wrote it; any other global could run code.
_ARRAY_GLOBALS = {
    "ndarray": np.ndarray,
    "dtype": np.dtype,
    "_reconstruct": np.empty(0).__reduce__()[0],
    "_frombuffer": np.empty(1).__reduce_ex__(5)[0],
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module.partition(".")[0] == "numpy" and name in _ARRAY_GLOBALS:
            return _ARRAY_GLOBALS[name]
        raise pickle.UnpicklingError(f"it refers to {module}.{name}, which dfkd will not load")


def unpickle_batch(path: Path) -> dict[bytes, Any]:
    """A CIFAR python batch: a pickled dict of numpy arrays and lists, keys as bytes."""
    with open(path, "rb") as f:
        try:
            return _ArrayUnpickler(f, encoding="bytes").load()
        except (pickle.UnpicklingError, EOFError) as exc:
            raise UsageError(f"{path} is not a CIFAR python batch ({exc}).") from exc


class CIFAR10(KnownDataset):
    name = "cifar10"
    title = "CIFAR-10"
    subdirs = ("cifar-10-batches-py", "")
    files = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
    channels = 3
    image_size = 32
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2023, 0.1994, 0.2010)
    class_names = (
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    )
    label_key = b"labels"

    def _split_files(self, split: Split) -> tuple[str, ...]:
        return self.files[:5] if split == "train" else ("test_batch",)

    def _read(self, split: Split) -> Arrays:
        data, labels = [], []
        for name in self._split_files(split):
            batch = unpickle_batch(self.location / name)
            data.append(np.asarray(batch[b"data"], dtype=np.uint8))
            labels.extend(batch[self.label_key])
        images = np.concatenate(data).reshape(-1, 3, self.image_size, self.image_size)
        return torch.from_numpy(images), torch.tensor(labels, dtype=torch.int64)

    def _fetch(self, root: Path) -> None:
        from torchvision.datasets import CIFAR10 as Download

        Download(str(root), download=True)


class CIFAR100(CIFAR10):
    """Fine labels (100 classes); the coarse superclasses are not used."""

    name = "cifar100"
    title = "CIFAR-100"
    subdirs = ("cifar-100-python", "")
    files = ("train", "test")
    mean = (0.5071, 0.4867, 0.4408)
    std = (0.2675, 0.2565, 0.2761)
    class_names = tuple(CIFAR100_CLASSES.split())
    label_key = b"fine_labels"

    def _split_files(self, split: Split) -> tuple[str, ...]:
        return (split,)

    def _fetch(self, root: Path) -> None:
        from torchvision.datasets import CIFAR100 as Download

        Download(str(root), download=True)


class SVHN(KnownDataset):
    """The cropped-digit .mat files; the extra split is not used. SVHN writes digit 0 as 10."""

    name = "svhn"
    title = "SVHN"
    subdirs = ("svhn", "")
    files = ("train_32x32.mat", "test_32x32.mat")
    channels = 3
    image_size = 32
    mean = (0.5, 0.5, 0.5)
    std = (0.5, 0.5, 0.5)

    def _read(self, split: Split) -> Arrays:
        try:
            from scipy.io import loadmat
        except ImportError as exc:
            raise UsageError("Reading SVHN needs scipy: pip install scipy") from exc
        mat = loadmat(str(self.location / f"{split}_32x32.mat"))
        images = np.ascontiguousarray(mat["X"].transpose(3, 2, 0, 1), dtype=np.uint8)  # HWCN
        labels = mat["y"].reshape(-1).astype(np.int64) % 10
        return torch.from_numpy(images), torch.from_numpy(labels)

    def _fetch(self, root: Path) -> None:
        from torchvision.datasets import SVHN as Download

        for split in ("train", "test"):
            Download(str(root), split=split, download=True)
