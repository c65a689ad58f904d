"""MNIST-format datasets: IDX files, checksums, where they are found, and download.

A dataset is four IDX files (train/test images and labels). They are looked for in
order: an explicit folder, ``$DIGITS_DATA_DIR/<name>/``, the user cache
``~/.cache/digits/<name>/``, a system folder (Debian's packages), and only then
downloaded from the public mirrors into the cache.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import math
import os
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .errors import DigitsError
from .files import atomic_write
from .mnist import DIGIT_CLASSES, FIELD

FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
ALL_FILES = FILES["train"] + FILES["test"]

# IDX type code -> NumPy dtype (big-endian, as the format stores it).
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
IDX_CODES = {np.dtype(v).newbyteorder("="): k for k, v in IDX_DTYPES.items()}


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    classes: tuple[str, ...]
    sha256: dict[str, str]  # file name -> sha256 of the decompressed IDX bytes
    mirrors: tuple[str, ...] = ()
    system_dirs: tuple[str, ...] = ()


DATASETS = {
    "mnist": DatasetInfo(
        name="mnist",
        classes=DIGIT_CLASSES,
        sha256={
            "train-images-idx3-ubyte.gz": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels-idx1-ubyte.gz": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images-idx3-ubyte.gz": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte.gz": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
        # The mirrors torchvision uses, tried in turn.
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
    ),
    "fashion-mnist": DatasetInfo(
        name="fashion-mnist",
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        sha256={
            "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        system_dirs=("/usr/share/datasets/fashion-mnist",),
    ),
}


# --- IDX files -------------------------------------------------------------------

def decompress(raw: bytes, source: str | Path) -> bytes:
    """The IDX bytes of a file's contents, gunzipped when they are gzip."""
    if not raw:  # said as such: a checksum mismatch or a truncated header would hide it
        raise DigitsError(f"{source}: an empty file")
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise DigitsError(f"{source}: damaged gzip file ({e})") from None


MAX_IDX_DIMENSIONS = 4  # MNIST's files have one (labels) or three (images)


def parse_idx(data: bytes, source: str | Path = "<bytes>") -> np.ndarray:
    """Parse IDX bytes, checking magic number, type code, dimensions and length."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DigitsError(f"{source}: not an IDX file (bad magic number)")
    code, ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        raise DigitsError(f"{source}: unknown IDX type code 0x{code:02x}")
    if ndim == 0 or len(data) < 4 + 4 * ndim:
        raise DigitsError(f"{source}: IDX header is truncated or has no dimensions")
    if ndim > MAX_IDX_DIMENSIONS:
        raise DigitsError(f"{source}: IDX header declares {ndim} dimensions; datasets of images have at most "
                          f"{MAX_IDX_DIMENSIONS}")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    dtype = np.dtype(IDX_DTYPES[code])
    expected = 4 + 4 * ndim + math.prod(shape) * dtype.itemsize  # Python's integers: no overflow
    if len(data) != expected:
        raise DigitsError(
            f"{source}: IDX file is {len(data)} bytes but its header {shape} needs {expected}"
            " — the file is truncated or corrupt")
    array = np.frombuffer(data, dtype, offset=4 + 4 * ndim).reshape(shape)
    return array.astype(dtype.newbyteorder("="))  # a copy: native byte order, and writable


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file, gzip-compressed or raw."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DigitsError(f"{path}: cannot read ({e.strerror})") from None
    return parse_idx(decompress(raw, path), path)


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write an array as an IDX file; gzip-compressed when the name ends in .gz."""
    array = np.ascontiguousarray(array)
    code = IDX_CODES.get(array.dtype.newbyteorder("="))
    if code is None:
        raise DigitsError(f"{path}: IDX cannot store dtype {array.dtype}")
    if not 1 <= array.ndim <= MAX_IDX_DIMENSIONS:  # what read_idx would refuse
        raise DigitsError(f"{path}: an array of {array.ndim} dimensions; IDX files here hold 1 to "
                          f"{MAX_IDX_DIMENSIONS}")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    data = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    if str(path).endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    atomic_write(path, data)


# --- datasets in memory ----------------------------------------------------------

@dataclass
class Split:
    """One split of a dataset, held in memory: batches are slices of these tensors."""

    images: torch.Tensor  # (N, 28, 28) uint8, white ink on black
    labels: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: slice | torch.Tensor) -> Split:
        return Split(self.images[index], self.labels[index])

    def first(self, count: int | None) -> Split:
        """The first ``count`` images (None: all of them), as --subset asks."""
        if count is None:
            return self
        if not 0 < count <= len(self):
            raise DigitsError(f"--subset {count}: give a positive number of training images, at most {len(self)}")
        return self.take(slice(0, count))


@dataclass
class Dataset:
    name: str
    classes: tuple[str, ...]
    train: Split
    test: Split
    folder: Path | None = None
    checksums: dict[str, str] = field(default_factory=dict)

    def test_split(self, purpose: str) -> Split:
        """The test split, refused in one line when it is empty: ``purpose`` needs its images."""
        if not len(self.test):
            raise DigitsError(f"{self.name}: no test images to {purpose} — give the dataset's test split")
        return self.test


def _file_in(folder: Path, name: str) -> Path | None:
    """The file itself, or its uncompressed twin (``name`` without .gz)."""
    for candidate in (folder / name, folder / name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def _has_all(folder: Path) -> bool:
    return all(_file_in(folder, name) for name in ALL_FILES)


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "digits"


def candidate_dirs(name: str) -> list[tuple[str, Path]]:
    """Where a dataset is looked for, in order, with the reason for each place."""
    places = []
    if root := os.environ.get("DIGITS_DATA_DIR"):
        places.append(("DIGITS_DATA_DIR", Path(root) / name))
    places.append(("cache", cache_dir() / name))
    info = DATASETS.get(name)
    places += [("system", Path(d)) for d in (info.system_dirs if info else ())]
    return places


def missing_data_message(name: str, downloaded: bool = True) -> str:
    places = " or ".join(str(p) for _, p in candidate_dirs(name))
    state = "not found and could not be downloaded" if downloaded else "not here yet (training downloads it)"
    return (f"dataset {name!r} {state}: put its four files "
            f"({', '.join(ALL_FILES)}) in {places}, set DIGITS_DATA_DIR to a folder holding {name}/, "
            "or pass --data-dir DIR")


def locate(name: str, data_dir: str | Path | None = None, download: bool = True) -> Path:
    """The folder that holds a dataset's four files, downloading them if needed."""
    if data_dir is not None:
        folder = Path(data_dir)
        missing = [f for f in ALL_FILES if not _file_in(folder, f)]
        if missing:
            inside = folder / name
            hint = (f" — it holds {name}/, which has them: give --data-dir {inside}" if _has_all(inside) else "")
            raise DigitsError(f"--data-dir {folder}: missing {', '.join(missing)}{hint}")
        return folder
    for _, folder in candidate_dirs(name):
        if _has_all(folder):
            return folder
    info = DATASETS.get(name)
    if info is None:
        raise DigitsError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}"
                          " or give its folder with --data-dir")
    if not download:
        raise DigitsError(missing_data_message(name, downloaded=False))
    folder = cache_dir() / name
    fetch(info, folder)
    return folder


class AnotherDataset(DigitsError):
    """A whole file of another known dataset, where this one's was looked for."""


def load_file(path: Path, info: DatasetInfo | None) -> tuple[np.ndarray, str]:
    """Read one dataset file, verifying its checksum when the dataset is known."""
    try:
        data = decompress(path.read_bytes(), path)
    except DigitsError as e:
        advice = "delete it and fetch it again" if _downloaded(path) else "copy it again from where it came"
        raise DigitsError(f"{e} — {advice}") from None
    digest = hashlib.sha256(data).hexdigest()
    expected = info.sha256.get(path.name if path.suffix == ".gz" else path.name + ".gz") if info else None
    if expected and digest != expected:
        other = next(((known.name, file) for known in DATASETS.values() for file, sha in known.sha256.items()
                      if sha == digest), None)
        if other and other[0] == info.name:  # two files swapped: each is whole
            raise DigitsError(f"{path}: this is {info.name}'s {other[1]} under another name — give each file "
                              "its own name")
        if other:  # a whole, good file in the wrong place: deleting it would lose data
            raise AnotherDataset(f"{path}: a file of {other[0]}, not of {info.name}; give --data-dir the folder "
                              f"that holds {info.name}'s four files, or --dataset {other[0]}")
        advice = ("the download is damaged; delete it and fetch it again" if _downloaded(path) else
                  f"a damaged copy of {info.name}, or a dataset of your own: give that one --dataset NAME")
        raise DigitsError(f"{path}: checksum mismatch (sha256 {digest[:12]}…, expected "
                          f"{expected[:12]}… for {info.name}) — {advice}")
    return parse_idx(data, path), digest


def _downloaded(path: Path) -> bool:
    """Whether a file is a download of our own, in the cache: only such a file is safe to delete;
    elsewhere it may be the user's data."""
    return cache_dir().resolve() in path.resolve().parents


def load_split(folder: Path, split: str, info: DatasetInfo | None,
               checksums: dict[str, str]) -> Split:
    image_file, label_file = (_file_in(folder, f) for f in FILES[split])
    images, checksums[image_file.name] = load_file(image_file, info)
    labels, checksums[label_file.name] = load_file(label_file, info)
    if images.ndim != 3 or images.dtype != np.uint8 or images.shape[1:] != (FIELD, FIELD):
        raise DigitsError(f"{image_file}: expected N×{FIELD}×{FIELD} uint8 images, as MNIST's, got {images.dtype} "
                          f"{'×'.join(map(str, images.shape))} — the models read {FIELD}×{FIELD} digits")
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DigitsError(f"{label_file}: expected a list of uint8 labels, got {labels.dtype} {labels.shape}")
    if len(images) != len(labels):
        raise DigitsError(f"{image_file} holds {len(images)} images but {label_file} holds "
                          f"{len(labels)} labels — the two files do not belong together")
    if len(labels) and labels.max() > 9:
        raise DigitsError(f"{label_file}: label {labels.max()} is out of range 0–9")
    return Split(torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64)))


def load_dataset(name: str = "mnist", data_dir: str | Path | None = None,
                 download: bool = True) -> Dataset:
    """Load a dataset's train and test splits into memory, verified."""
    if not isinstance(name, str):
        raise DigitsError(f"dataset {name!r}: give its name, such as \"mnist\" or \"fashion-mnist\"")
    folder = locate(name, data_dir, download)
    info = DATASETS.get(name)
    checksums: dict[str, str] = {}
    train = load_split(folder, "train", info, checksums)
    test = load_split(folder, "test", info, checksums)
    classes = info.classes if info else DIGIT_CLASSES
    return Dataset(name, classes, train, test, folder, checksums)


# --- download --------------------------------------------------------------------

def mirrors_for(info: DatasetInfo) -> tuple[str, ...]:
    """The mirrors to try; DIGITS_MIRRORS (comma-separated base URLs) overrides them."""
    override = os.environ.get("DIGITS_MIRRORS")
    return tuple(m.strip() for m in override.split(",") if m.strip()) if override else info.mirrors


def fetch(info: DatasetInfo, folder: Path, timeout: float = 30) -> None:
    """Download a dataset's missing files into folder, verified and written atomically."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    todo = [f for f in ALL_FILES if not _file_in(folder, f)]
    # On standard error, as progress goes: a command's output (--json, say) stays its own.
    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), transient=True, console=Console(stderr=True)) as progress:
        for name in todo:
            errors = []
            for mirror in mirrors_for(info):
                url = mirror.rstrip("/") + "/" + name
                try:
                    raw = _download(url, timeout, progress)
                    data = decompress(raw, url)
                    if hashlib.sha256(data).hexdigest() != info.sha256[name]:
                        raise DigitsError(f"{url}: checksum mismatch")
                    parse_idx(data, url)
                except DigitsError as e:  # names the URL itself
                    errors.append(str(e))
                    continue
                except (OSError, ValueError, http.client.HTTPException) as e:
                    errors.append(f"{url}: {e}")
                    continue
                atomic_write(folder / name, raw)
                break
            else:
                raise DigitsError(missing_data_message(info.name) + f" (last error: {errors[-1] if errors else 'no mirrors'})")


def _download(url: str, timeout: float, progress) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        task = progress.add_task(url.rsplit("/", 1)[-1], total=total)
        chunks = []
        try:
            while chunk := response.read(1 << 16):
                chunks.append(chunk)
                progress.advance(task, len(chunk))
        finally:
            progress.remove_task(task)
    raw = b"".join(chunks)
    if total is not None and len(raw) != total:
        raise DigitsError(f"{url}: download truncated ({len(raw)} of {total} bytes)")
    return raw


def describe(name: str, data_dir: str | Path | None = None, verify: bool = False) -> dict:
    """Where a dataset is (without downloading) and, when verified, its checksums.

    A known dataset that is not here yet is reported as missing, and one whose files in
    ``data_dir`` are another dataset's as not there; a --data-dir without the four files or an
    unknown name is the caller's mistake, so it is raised.
    """
    try:
        folder = locate(name, data_dir, download=False)
    except DigitsError as e:
        if data_dir is not None or name not in DATASETS:
            raise
        return {"dataset": name, "folder": None, "status": "missing", "message": str(e)}
    if data_dir is not None and name in DATASETS:
        try:  # a folder holds one dataset: its smallest file's checksum tells which
            load_file(_file_in(folder, FILES["test"][1]), DATASETS[name])
        except AnotherDataset as e:  # a damaged file is not this: it is an error
            return {"dataset": name, "folder": None, "status": "not there", "message": str(e)}
    info = {"dataset": name, "folder": str(folder), "status": "found",
            "files": {f: str(_file_in(folder, f)) for f in ALL_FILES}}
    if verify:
        dataset = load_dataset(name, folder, download=False)
        info.update(status="verified" if name in DATASETS else "readable (no known checksums)",
                    checksums=dataset.checksums, train=len(dataset.train), test=len(dataset.test))
    return info
