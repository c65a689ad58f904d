"""Shared fixtures: the real MNIST, small MNIST-format folders, and one trained checkpoint.

The real dataset is found only through DIGITS_DATA_DIR, as CI sets it. Everything else a
test needs (dataset folders, checkpoints, mirrors) it makes in its own temporary folder.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Callable

import pytest

from digits import Dataset, Run, Split, TrainConfig, load_dataset, train, write_idx
from digits.data import FILES


@pytest.fixture(scope="session")
def mnist() -> Dataset:
    """The real MNIST, verified."""
    if not os.environ.get("DIGITS_DATA_DIR"):
        pytest.fail("DIGITS_DATA_DIR is not set: point it at the folder that holds mnist/, e.g. "
                    "DIGITS_DATA_DIR=../shared/data python3 -m pytest", pytrace=False)
    return load_dataset("mnist", download=False)


def write_dataset(folder: Path, train: Split, test: Split, compress: bool = True) -> Path:
    """Write two splits as the four IDX files of an MNIST-format dataset folder."""
    for split, (image_file, label_file) in zip((train, test), FILES.values()):
        if not compress:
            image_file, label_file = image_file.removesuffix(".gz"), label_file.removesuffix(".gz")
        write_idx(folder / image_file, split.images.numpy())
        write_idx(folder / label_file, split.labels.numpy().astype("uint8"))
    return folder


@pytest.fixture(scope="session")
def make_dataset(mnist: Dataset) -> Callable[..., Path]:
    """make_dataset(folder, train=200, test=50, compress=True): a small MNIST-format folder
    of real digits, the first ``train`` training and first ``test`` test images."""

    def make(folder: Path, train: int = 200, test: int = 50, compress: bool = True) -> Path:
        return write_dataset(Path(folder), mnist.train.take(slice(0, train)),
                             mnist.test.take(slice(0, test)), compress)

    return make


@pytest.fixture(scope="session")
def learned(mnist: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The seed CNN after one epoch on 3,000 training digits, validated on the first 2,000
    test digits, shared by every test that needs a real checkpoint. Normalized input and twice
    the recipe's learning rate make so short a run learn clearly (over 90%)."""
    data = Dataset(mnist.name, mnist.classes, mnist.train, mnist.test.take(slice(0, 2000)))
    config = TrainConfig(model="seed", epochs=1, subset=3000, normalize=True, lr=2e-3,
                         out=tmp_path_factory.mktemp("learned"), report=False)
    return train(config, data=data, verbose=False)


def unused_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (at the moment of asking)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def free_port() -> Callable[[], int]:
    """unused_port, for tests that start servers of their own."""
    return unused_port


@pytest.fixture
def closed_url() -> str:
    """The URL of a port on 127.0.0.1 that nothing listens on: a mirror that refuses."""
    return f"http://127.0.0.1:{unused_port()}/"
