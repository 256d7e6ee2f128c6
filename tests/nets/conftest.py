"""Fixtures for the nets tests: small LMDBs in the data stage's format, written here with
`lmdb` + caffe_pb2.Datum (images 3xHxW BGR uint8, labels 1xHxW uint8 class ids)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("GLOG_minloglevel", "2")

# class colours (BGR) of the easy synthetic data: a colour says the class
PALETTE = np.array([[30, 30, 30], [200, 40, 40], [40, 200, 40], [40, 40, 200], [200, 200, 40]], dtype=np.float32)


def easy_pairs(n: int, size: int, num_classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images whose rectangles' colour gives the class, with mild noise: easy to segment."""
    rng = np.random.RandomState(seed)
    labels = np.zeros((n, 1, size, size), np.uint8)
    for i in range(n):
        for _ in range(3):
            k = rng.randint(1, num_classes)
            y, x = rng.randint(0, size - 8, 2)
            h, w = rng.randint(6, size // 2, 2)
            labels[i, 0, y : y + h, x : x + w] = k
    images = PALETTE[labels[:, 0]].transpose(0, 3, 1, 2) + rng.normal(0, 10, (n, 3, size, size))
    return np.clip(images, 0, 255).astype(np.uint8), labels


def write_lmdb(path: Path, arrays: np.ndarray) -> str:
    """One Datum per array (C x H x W uint8) under keys 00000000, 00000001, ..."""
    import lmdb
    from caffe.proto import caffe_pb2

    env = lmdb.open(str(path), map_size=1 << 28)
    with env.begin(write=True) as txn:
        for i, a in enumerate(arrays):
            d = caffe_pb2.Datum(channels=a.shape[0], height=a.shape[1], width=a.shape[2], data=a.tobytes())
            txn.put(b"%08d" % i, d.SerializeToString())
    env.close()
    return str(path)


def make_dataset(root: Path, n: int = 8, size: int = 32, num_classes: int = 4, seed: int = 0) -> tuple[str, str]:
    images, labels = easy_pairs(n, size, num_classes, seed)
    root.mkdir(parents=True, exist_ok=True)
    return write_lmdb(root / "images", images), write_lmdb(root / "labels", labels)


@pytest.fixture(scope="session")
def small_lmdb(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """8 easy 32x32 pairs with 4 classes: (images, labels) LMDB directories."""
    return make_dataset(tmp_path_factory.mktemp("lmdb32"), n=8, size=32)


@pytest.fixture(scope="session")
def lmdb64(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """32 easy 64x64 pairs with 4 classes, for training and timing."""
    return make_dataset(tmp_path_factory.mktemp("lmdb64"), n=32, size=64, seed=1)
