"""The data layer: IDX files, checks that name the bad file, where datasets are found, download."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import shutil
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from digits import DigitsError, load_dataset, read_idx, write_idx
from digits.data import ALL_FILES, DATASETS, DatasetInfo

RNG = np.random.default_rng(0)
ARRAYS = {
    "uint8": (RNG.integers(0, 256, (3, 4, 5)).astype(np.uint8), 0x08),
    "int32": (RNG.integers(-2**31, 2**31, (7,)).astype(np.int32), 0x0C),
    "float32": (RNG.normal(size=(2, 6)).astype(np.float32), 0x0D),
}


@pytest.mark.parametrize("compress", [True, False], ids=["gz", "raw"])
@pytest.mark.parametrize("kind", ARRAYS)
def test_idx_round_trip(tmp_path, kind, compress):
    array, code = ARRAYS[kind]
    path = tmp_path / ("array.idx.gz" if compress else "array.idx")
    write_idx(path, array)

    raw = path.read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == compress
    data = gzip.decompress(raw) if compress else raw
    # The standard layout: zero, zero, type code, rank, big-endian sizes, big-endian values.
    assert data[:4] == bytes([0, 0, code, array.ndim])
    assert data[4:4 + 4 * array.ndim] == np.asarray(array.shape, ">u4").tobytes()
    assert data[4 + 4 * array.ndim:] == array.astype(array.dtype.newbyteorder(">")).tobytes()

    back = read_idx(path)
    assert back.dtype == array.dtype and back.shape == array.shape
    assert back.flags.writeable  # the caller's own array, as np.load would give
    np.testing.assert_array_equal(back, array)


def idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    return bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes() + array.tobytes()


GOOD = idx_bytes(np.arange(10, dtype=np.uint8))
DAMAGED_GZIP = bytearray(gzip.compress(GOOD * 50, mtime=0))
DAMAGED_GZIP[30] ^= 0xFF
BAD_FILES = {
    "empty file": (b"", "an empty file"),
    "bad magic": (b"\x01\x00" + GOOD[2:], "bad magic number"),
    "unknown type code": (GOOD[:2] + b"\x07" + GOOD[3:], "unknown IDX type code 0x07"),
    "truncated data": (GOOD[:-3], "truncated or corrupt"),
    "extra bytes": (GOOD + b"\x00\x00", "truncated or corrupt"),
    "truncated header": (GOOD[:6], "header is truncated"),
    "cut gzip": (gzip.compress(GOOD, mtime=0)[:-12], "damaged gzip"),
    "damaged gzip": (bytes(DAMAGED_GZIP), "damaged gzip"),
    "four huge dimensions": (b"\0\0\x08\x04" + b"\0\x01\0\0" * 4, r"header \(65536, 65536, 65536, 65536\) needs "
                                                                     r"18446744073709551636\b"),
    "seventy dimensions": (b"\0\0\x08\x46" + b"\0\0\0\x01" * 70, "declares 70 dimensions"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_idx_file_is_named_in_the_error(tmp_path, case):
    content, reason = BAD_FILES[case]
    path = tmp_path / "labels.idx"
    path.write_bytes(content)
    with pytest.raises(DigitsError, match=reason) as error:
        read_idx(path)
    assert str(error.value).startswith(str(path))


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_file_in_a_dataset_is_named_in_the_error(make_dataset, tmp_path, case):
    content, reason = BAD_FILES[case]
    folder = make_dataset(tmp_path / "tiny", train=30, test=20)
    path = folder / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(content)
    with pytest.raises(DigitsError, match=reason) as error:
        load_dataset("tiny", folder)
    assert str(error.value).startswith(str(path))


def test_a_dataset_folder_loads_gz_and_raw(make_dataset, tmp_path, mnist):
    for compress in (True, False):
        folder = make_dataset(tmp_path / str(compress), train=30, test=20, compress=compress)
        data = load_dataset("tiny", folder)
        assert (len(data.train), len(data.test)) == (30, 20)
        assert data.train.images.shape == (30, 28, 28) and data.train.images.dtype == torch.uint8
        assert data.train.labels.tolist() == mnist.train.labels[:30].tolist()
        assert data.folder == folder and sorted(data.checksums) == sorted(
            name if compress else name.removesuffix(".gz") for name in ALL_FILES)


def test_image_and_label_counts_must_agree(make_dataset, tmp_path, mnist):
    folder = make_dataset(tmp_path / "tiny", train=30, test=20)
    write_idx(folder / "train-labels-idx1-ubyte.gz", mnist.train.labels[:29].numpy().astype(np.uint8))
    with pytest.raises(DigitsError, match="30 images but .* 29 labels") as error:
        load_dataset("tiny", folder)
    assert str(folder / "train-images-idx3-ubyte.gz") in str(error.value)
    assert str(folder / "train-labels-idx1-ubyte.gz") in str(error.value)


def test_labels_must_be_digits(make_dataset, tmp_path):
    folder = make_dataset(tmp_path / "tiny", train=30, test=20)
    labels = np.arange(20, dtype=np.uint8) % 11  # holds a 10
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", labels)
    with pytest.raises(DigitsError, match="label 10 is out of range") as error:
        load_dataset("tiny", folder)
    assert str(error.value).startswith(str(folder / "t10k-labels-idx1-ubyte.gz"))


@pytest.mark.parametrize("images", [np.zeros((30, 28, 28), np.float32), np.zeros((30, 32, 32), np.uint8)])
def test_images_must_be_uint8_28_by_28_pictures(make_dataset, tmp_path, images):
    folder = make_dataset(tmp_path / "tiny", train=30, test=20)
    write_idx(folder / "train-images-idx3-ubyte.gz", images)
    with pytest.raises(DigitsError, match="expected N×28×28 uint8 images, as MNIST's, got") as error:
        load_dataset("tiny", folder)
    assert str(error.value).startswith(str(folder / "train-images-idx3-ubyte.gz"))


def test_a_known_dataset_whose_file_differs_fails_its_checksum(make_dataset, tmp_path):
    folder = make_dataset(tmp_path / "not-mnist", train=30, test=20)
    with pytest.raises(DigitsError, match="checksum mismatch") as error:
        load_dataset("mnist", folder)
    assert str(error.value).startswith(str(folder / "train-images-idx3-ubyte.gz"))
    # The folder may hold the user's own data: no advice to delete it.
    assert "a damaged copy of mnist, or a dataset of your own: give that one --dataset NAME" in str(error.value)
    assert "delete" not in str(error.value)


def test_a_damaged_download_in_the_cache_is_to_be_deleted(tiny, home):
    shutil.copytree(tiny, home / "tiny")
    write_idx(home / "tiny" / "t10k-labels-idx1-ubyte.gz", np.zeros(20, np.uint8))
    with pytest.raises(DigitsError, match="checksum mismatch .* the download is damaged; delete it and fetch it"):
        load_dataset("tiny")


def test_damage_to_a_file_of_the_user_s_own_is_not_to_be_deleted(tiny, tmp_path):
    cut = tiny / "train-images-idx3-ubyte.gz"
    cut.write_bytes(cut.read_bytes()[:-20])
    with pytest.raises(DigitsError, match=r"damaged gzip file \(.*\) — copy it again from where it came$"):
        load_dataset("tiny", tiny)


def test_two_files_of_a_dataset_swapped_are_named_as_such(tiny, tmp_path):
    train, test = tiny / "train-labels-idx1-ubyte.gz", tiny / "t10k-labels-idx1-ubyte.gz"
    train_bytes = train.read_bytes()
    train.write_bytes(test.read_bytes())
    test.write_bytes(train_bytes)
    with pytest.raises(DigitsError, match="this is tiny's t10k-labels-idx1-ubyte.gz under another name"):
        load_dataset("tiny", tiny)


def test_another_known_dataset_s_files_are_named_not_called_corrupt(mnist):
    with pytest.raises(DigitsError, match="a file of mnist, not of fashion-mnist; give --data-dir") as error:
        load_dataset("fashion-mnist", mnist.folder)
    assert "corrupt" not in str(error.value)


def test_data_dir_missing_files_are_named(make_dataset, tmp_path):
    folder = make_dataset(tmp_path / "tiny", train=30, test=20)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DigitsError, match=r"missing t10k-labels-idx1-ubyte\.gz$") as error:
        load_dataset("tiny", folder)
    assert str(folder) in str(error.value)
    with pytest.raises(DigitsError, match="missing " + ", ".join(ALL_FILES).replace(".", r"\.")):
        load_dataset("mnist", tmp_path / "nothing-here")
    # the folder DIGITS_DATA_DIR names, which holds the dataset's own folder
    make_dataset(tmp_path / "root" / "tiny", train=30, test=20)
    with pytest.raises(DigitsError, match=f"it holds tiny/, which has them: give --data-dir {tmp_path}/root/tiny$"):
        load_dataset("tiny", tmp_path / "root")


def test_a_read_only_file_is_not_replaced_and_a_writable_one_keeps_its_mode(tmp_path):
    kept, shared = tmp_path / "kept.idx", tmp_path / "shared.idx"
    for path in (kept, shared):
        write_idx(path, np.arange(3, dtype=np.uint8))
    kept.chmod(0o444)
    with pytest.raises(PermissionError, match="a read-only file, not replaced"):
        write_idx(kept, np.zeros(5, np.uint8))
    np.testing.assert_array_equal(read_idx(kept), np.arange(3))
    assert kept.stat().st_mode & 0o777 == 0o444 and sorted(p.name for p in tmp_path.iterdir()) == ["kept.idx", "shared.idx"]
    shared.chmod(0o664)
    write_idx(shared, np.zeros(5, np.uint8))
    assert len(read_idx(shared)) == 5 and shared.stat().st_mode & 0o777 == 0o664


def test_an_array_idx_cannot_hold_is_refused_before_writing(tmp_path):
    with pytest.raises(DigitsError, match="an array of 5 dimensions; IDX files here hold 1 to 4"):
        write_idx(tmp_path / "x.idx", np.zeros((1, 1, 1, 1, 2), np.uint8))
    assert not list(tmp_path.iterdir())


def test_a_dataset_named_by_something_not_a_name_is_refused_in_one_line():
    with pytest.raises(DigitsError, match=r'^dataset 5: give its name, such as "mnist" or "fashion-mnist"$'):
        load_dataset(5)


@pytest.mark.parametrize("data_root", [True, False], ids=["DIGITS_DATA_DIR", "no DIGITS_DATA_DIR"])
def test_unknown_dataset(tmp_path, monkeypatch, data_root):
    if data_root:
        monkeypatch.setenv("DIGITS_DATA_DIR", str(tmp_path))
    else:
        monkeypatch.delenv("DIGITS_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(DigitsError, match="unknown dataset 'nope': choose one of mnist"):
        load_dataset("nope")


# --- finding and downloading -----------------------------------------------------

@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A user with an empty home and cache and no DIGITS_DATA_DIR; returns the digits cache."""
    monkeypatch.delenv("DIGITS_DATA_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "digits"


@pytest.fixture
def tiny(make_dataset, tmp_path, monkeypatch) -> Path:
    """A small dataset registered by name, as mnist is, with the sha256 of each of its files."""
    folder = make_dataset(tmp_path / "tiny", train=40, test=20)
    sha256 = {name: hashlib.sha256(gzip.decompress((folder / name).read_bytes())).hexdigest()
              for name in ALL_FILES}
    monkeypatch.setitem(DATASETS, "tiny", DatasetInfo("tiny", tuple("0123456789"), sha256))
    return folder


class MirrorHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder; under /short/ it promises a file's full length but sends half of it."""

    def do_GET(self):
        self.server.requests.append(self.path)
        if not self.path.startswith("/short/"):
            return super().do_GET()
        body = (Path(self.directory) / self.path.removeprefix("/short/")).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[:len(body) // 2])

    def log_message(self, *args):  # quiet test output
        pass


@pytest.fixture
def mirror(tmp_path):
    """A real HTTP server on 127.0.0.1 serving mirror.root at mirror.url; mirror.requests logs paths."""
    root = tmp_path / "mirror"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(MirrorHandler, directory=str(root)))
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield SimpleNamespace(root=root, url=f"http://127.0.0.1:{server.server_port}", requests=server.requests)
    server.shutdown()
    server.server_close()
    thread.join()


def test_uncompressed_copies_are_verified_too(tiny, make_dataset, tmp_path):
    raw = make_dataset(tmp_path / "raw", train=40, test=20, compress=False)
    assert len(load_dataset("tiny", raw).train) == 40
    write_idx(raw / "t10k-labels-idx1-ubyte", np.zeros(20, np.uint8))
    with pytest.raises(DigitsError, match="checksum mismatch"):
        load_dataset("tiny", raw)


def test_lookup_order(tiny, mirror, home, tmp_path, monkeypatch):
    root = tmp_path / "root"
    shutil.copytree(tiny, root / "tiny")
    shutil.copytree(tiny, home / "tiny")
    shutil.copytree(tiny, mirror.root / "good")
    monkeypatch.setenv("DIGITS_DATA_DIR", str(root))
    monkeypatch.setenv("DIGITS_MIRRORS", mirror.url + "/good/")

    assert load_dataset("tiny", tiny).folder == tiny
    assert load_dataset("tiny").folder == root / "tiny"
    monkeypatch.delenv("DIGITS_DATA_DIR")
    assert load_dataset("tiny").folder == home / "tiny"
    assert mirror.requests == []

    shutil.rmtree(home / "tiny")
    data = load_dataset("tiny")
    assert data.folder == home / "tiny" and len(data.train) == 40
    assert sorted(mirror.requests) == sorted(f"/good/{name}" for name in ALL_FILES)


def test_download_into_the_cache(tiny, mirror, home, monkeypatch, capfd):
    shutil.copytree(tiny, mirror.root / "good")
    monkeypatch.setenv("DIGITS_MIRRORS", mirror.url + "/good/")
    data = load_dataset("tiny")
    assert capfd.readouterr().out == ""  # progress goes to standard error: a command's output stays its own
    assert sorted(p.name for p in (home / "tiny").iterdir()) == sorted(ALL_FILES)
    for name in ALL_FILES:
        assert (home / "tiny" / name).read_bytes() == (tiny / name).read_bytes()
    assert data.train.labels.tolist() == load_dataset("tiny", tiny).train.labels.tolist()

    served = len(mirror.requests)
    load_dataset("tiny")
    assert len(mirror.requests) == served  # the second time it comes from the cache


def test_first_mirror_missing_then_a_good_one(tiny, mirror, home, monkeypatch):
    shutil.copytree(tiny, mirror.root / "good")
    monkeypatch.setenv("DIGITS_MIRRORS", f"{mirror.url}/gone/,{mirror.url}/good/")
    assert len(load_dataset("tiny").test) == 20
    assert mirror.requests[:2] == ["/gone/train-images-idx3-ubyte.gz", "/good/train-images-idx3-ubyte.gz"]
    assert sorted(p.name for p in (home / "tiny").iterdir()) == sorted(ALL_FILES)


def corrupt(folder: Path) -> str:
    """A valid IDX file whose content is not the one the checksum names."""
    images = read_idx(folder / "train-images-idx3-ubyte.gz").copy()
    images[0, 0, 0] ^= 1
    write_idx(folder / "train-images-idx3-ubyte.gz", images)
    return "/bad/"


def cut(folder: Path) -> str:
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-100])
    return "/bad/"


def short(folder: Path) -> str:
    return "/short/bad/"


@pytest.mark.parametrize("damage, reason", [(corrupt, "checksum mismatch"), (cut, "damaged gzip"),
                                            (short, "download truncated")],
                         ids=["checksum", "cut gzip", "short body"])
def test_a_bad_download_leaves_nothing_in_the_cache(tiny, mirror, home, monkeypatch, damage, reason):
    shutil.copytree(tiny, mirror.root / "bad")
    path = damage(mirror.root / "bad")
    monkeypatch.setenv("DIGITS_MIRRORS", mirror.url + path)
    with pytest.raises(DigitsError, match=reason):
        load_dataset("tiny")
    assert mirror.requests == [path + "train-images-idx3-ubyte.gz"]
    assert not (home / "tiny").exists() or not any((home / "tiny").iterdir())


def test_no_data_and_no_network_says_which_files_and_where(home, tmp_path, monkeypatch, closed_url):
    monkeypatch.setenv("DIGITS_DATA_DIR", str(tmp_path / "root"))
    monkeypatch.setenv("DIGITS_MIRRORS", closed_url)
    with pytest.raises(DigitsError) as error:
        load_dataset("mnist")
    message = str(error.value)
    assert "\n" not in message
    for name in ALL_FILES:
        assert name in message
    assert str(tmp_path / "root" / "mnist") in message and str(home / "mnist") in message
    assert "--data-dir" in message and "set DIGITS_DATA_DIR to a folder holding mnist/" in message
    assert not (home / "mnist").exists()


def test_a_mirror_that_is_not_a_url_is_a_clear_error(home, monkeypatch):
    monkeypatch.setenv("DIGITS_MIRRORS", "not-a-url")
    with pytest.raises(DigitsError, match="unknown url type"):
        load_dataset("mnist")


def test_a_dataset_not_here_yet_is_not_said_to_have_failed_to_download(tiny, home, mirror, monkeypatch):
    from digits.data import describe

    monkeypatch.setenv("DIGITS_MIRRORS", mirror.url + "/good/")  # where a download would go
    info = describe("tiny")  # `digits data` looks, and downloads nothing
    assert info["status"] == "missing" and mirror.requests == []
    assert info["message"].startswith("dataset 'tiny' not here yet (training downloads it): put its four files")
