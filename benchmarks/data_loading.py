"""How long Fashion-MNIST's train split takes to load into a tensor (target: under 3 s warm).

Usage: python benchmarks/data_loading.py
"""

from __future__ import annotations

import time

from dfkd.data import open_dataset
from dfkd.data.source import _load_once


def main() -> None:
    for attempt in ("cold", "warm"):
        _load_once.cache_clear()
        start = time.perf_counter()
        images, labels = open_dataset("fashion-mnist").load("train")
        seconds = time.perf_counter() - start
        print(f"{attempt}: {tuple(images.shape)} {images.dtype} in {seconds:.2f} s")


if __name__ == "__main__":
    main()
