"""`digits predict`: pictures, folders and globs in; a table, JSON lines or CSV out."""

from __future__ import annotations

import csv
import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import digits
from digits.cli import main
from picture_set import write_numbers, write_pictures
from pictures import ink_on_paper, number_picture


@pytest.fixture(scope="module")
def model(learned) -> str:
    return str(learned.checkpoint)


@pytest.fixture(scope="module")
def pictures(mnist, tmp_path_factory) -> list[tuple[Path, str, int]]:
    """Ten test digits as every kind of picture, in one folder per kind."""
    folder = tmp_path_factory.mktemp("pictures")
    return write_pictures(folder, mnist.test.images[:10].numpy(), mnist.test.labels[:10].numpy())


def run(capsys, *args: str) -> tuple[int, str, str]:
    status = main(["predict", *args])
    out, err = capsys.readouterr()
    return status, out, err


def test_json_lines_for_every_kind_of_picture(pictures, model, learned, capsys):
    folder = pictures[0][0].parent.parent
    status, out, err = run(capsys, str(folder), "--model", model, "--json", "--precision", "fp32")
    assert status == 0 and err == ""
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["file"] for r in records] == sorted(str(p) for p, _, _ in pictures)
    for r in records:
        assert len(r["probabilities"]) == 10 and sum(r["probabilities"]) == pytest.approx(1, abs=1e-4)
        assert r["digit"] == int(np.argmax(r["probabilities"])) == r["top3"][0]["digit"]
        assert r["confidence"] == max(r["probabilities"])
    # the command line reads each file exactly as the Python API does
    clf = digits.load(learned.checkpoint, precision="fp32")
    predicted = {r["file"]: r["digit"] for r in records}
    assert [predicted[str(p)] for p, _, _ in pictures] == clf.predict([p for p, _, _ in pictures]).tolist()
    right = [predicted[str(path)] == label for path, _, label in pictures]
    assert np.mean(right) >= 0.85  # a model trained briefly; benchmarks/real_pictures.py measures a real one
    assert {p.suffix for p, _, _ in pictures} == {".gif", ".jpg", ".bmp", ".tif", ".png", ".webp"}


def test_a_fashion_model_names_its_classes(pictures, model, tmp_path, capsys):
    payload = digits.load_checkpoint(model)
    fashion = list(digits.DATASETS["fashion-mnist"].classes)
    digits.save_checkpoint(tmp_path / "model.pt", {**payload, "dataset": "fashion-mnist", "classes": fashion})
    picture = str(pictures[0][0])
    status, out, _ = run(capsys, picture, "--model", str(tmp_path), "--json")
    record = json.loads(out)
    assert status == 0 and record["class"] == fashion[record["digit"]]
    assert [t["class"] for t in record["top3"]] == [fashion[t["digit"]] for t in record["top3"]]
    status, out, _ = run(capsys, picture, "--model", str(tmp_path))
    assert status == 0 and "│ class " in out.replace("┃", "│") and f" {record['class']} " in out
    assert main(["explain", picture, "--model", str(tmp_path), "--out", str(tmp_path / "why.png")]) == 0
    assert capsys.readouterr().out.startswith(f"{picture}: {record['class']} (")


def test_table_and_csv(pictures, model, capsys):
    files = [str(p) for p, kind, _ in pictures if kind == "rgba_canvas"][:3]
    status, out, _ = run(capsys, *files, "--model", model)
    assert status == 0
    assert all(word in out for word in ("file", "digit", "confidence", "top-3", "seed (torch "))
    assert all(Path(f).name in out for f in files)
    digit_cells = [line.split("│")[2] for line in out.splitlines() if any(f in line for f in files)]
    assert len(digit_cells) == 3 and all(cell.endswith(f"{cell.strip()} ") and cell.startswith("  ")
                                         for cell in digit_cells)  # a figure, right-aligned under "digit"

    status, out, _ = run(capsys, *files, "--model", model, "--csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert status == 0 and [r["file"] for r in rows] == files
    assert list(rows[0]) == ["file", "digit", "confidence", *(f"p{d}" for d in range(10))]
    assert all(int(r["digit"]) == int(np.argmax([float(r[f"p{d}"]) for d in range(10)])) for r in rows)


def test_globs_and_folders(pictures, model, capsys):
    folder = pictures[0][0].parent.parent
    status, out, _ = run(capsys, str(folder / "thin_stroke" / "*.tif"), str(folder / "rgba_canvas"),
                         "--model", model, "--csv")
    files = [r["file"] for r in csv.DictReader(io.StringIO(out))]
    assert status == 0 and len(files) == 20
    assert files[:10] == sorted(str(p) for p, kind, _ in pictures if kind == "thin_stroke")


def png_bomb(width: int = 50_000, height: int = 50_000) -> bytes:
    """A real decompression bomb: about 300 kB of PNG that decodes to 2.5 gigapixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row, packer = bytes(1 + width // 8), zlib.compressobj(9)  # 1-bit grey rows, all black
    body = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def test_bad_inputs_are_one_line_each_and_the_rest_is_predicted(pictures, model, tmp_path, capsys):
    good = [str(p) for p, kind, _ in pictures if kind == "ink_on_paper"][:2]
    bad = {"notes.png": b"this is not a picture\n", "empty.jpg": b"",
           "truncated.png": next(p for p, kind, _ in pictures if kind == "rgba_canvas").read_bytes()[:300],
           "bomb.png": png_bomb()}
    for name, content in bad.items():
        (tmp_path / name).write_bytes(content)
    Image.new("RGB", (200, 200), "white").save(tmp_path / "blank.png")
    (tmp_path / "nothing here").mkdir()
    (tmp_path / "nothing here" / "readme.txt").write_text("no pictures")
    args = [good[0], *(str(tmp_path / n) for n in [*bad, "blank.png", "nothing here"]),
            str(tmp_path / "missing.png"), str(tmp_path / "*.jpeg"), good[1]]

    status, out, err = run(capsys, *args, "--model", model, "--json")
    assert status == 2
    assert [json.loads(line)["file"] for line in out.splitlines()] == good
    lines = err.splitlines()
    assert len(lines) == len(args) - 2 and all(line.startswith("digits: error: ") for line in lines)
    for line, what in zip(lines, ["notes.png: not a picture", "empty.jpg: the file is empty",
                                  "truncated.png: the picture is damaged or incomplete",
                                  "bomb.png: image is far more than the 40-megapixel limit",
                                  "blank.png: no ink found", "nothing here: no pictures in this folder",
                                  "missing.png: cannot read the file", "*.jpeg: no pictures match"]):
        assert f"{tmp_path}/{what}" in line


def test_numbers(mnist, model, tmp_path, capsys):
    numbers = write_numbers(tmp_path / "numbers", mnist.test.images[:30].numpy(),
                            mnist.test.labels[:30].numpy(), count=6, seed=1)
    status, out, err = run(capsys, str(tmp_path / "numbers"), "--number", "--model", model, "--json",
                           "--show-preprocessed", str(tmp_path / "seen"))
    records = [json.loads(line) for line in out.splitlines()]
    written = sum(len(r["digits"]) for r in records)
    assert status == 0 and err == f"wrote what the model saw to {tmp_path / 'seen'}: {written} files\n"
    assert [r["file"] for r in records] == [str(p) for p, _ in numbers]
    for r in records:
        assert isinstance(r["number"], str) and len(r["confidences"]) == len(r["digits"]) == len(r["number"])
        assert r["confidence"] == pytest.approx(np.prod(r["confidences"]), abs=1e-5)
    assert sum(r["number"] == number for r, (_, number) in zip(records, numbers)) >= 4
    seen = sorted((tmp_path / "seen").iterdir())
    assert seen == sorted(Path(file) for r in records for file in r["preprocessed"])
    assert seen[0].name == "0001-0000-1.png" and Image.open(seen[0]).size == (28, 28)

    status, out, _ = run(capsys, str(numbers[0][0]), "--number", "--model", model, "--csv")
    (row,) = csv.DictReader(io.StringIO(out))
    assert status == 0 and row["number"] == records[0]["number"]


def test_a_picture_that_looks_like_a_number_points_at_number(mnist, model, tmp_path, capsys):
    number_picture([mnist.test.images[i].numpy() for i in range(4)]).save(tmp_path / "year.png")
    ink_on_paper(mnist.test.images[0].numpy()).save(tmp_path / "seven.png")
    status, out, _ = run(capsys, str(tmp_path / "year.png"), str(tmp_path / "seven.png"), "--model", model, "--json")
    assert status == 0 and [json.loads(line).get("looks_like_digits") for line in out.splitlines()] == [4, None]
    status, out, _ = run(capsys, str(tmp_path / "year.png"), str(tmp_path / "seven.png"), "--model", model)
    assert status == 0 and out.endswith(f"\n{tmp_path / 'year.png'} looks like 4 digits: read it as a number "
                                        "with --number\n")
    status, out, _ = run(capsys, str(tmp_path / "seven.png"), "--model", model)
    assert status == 0 and "looks like" not in out


def test_show_preprocessed_writes_what_the_model_saw(pictures, model, tmp_path, capsys):
    path = next(p for p, kind, _ in pictures if kind == "light_on_dark")
    status, out, _ = run(capsys, str(path), "--model", model, "--show-preprocessed", str(tmp_path / "seen"))
    (seen,) = (tmp_path / "seen").iterdir()
    assert status == 0 and seen.name == f"0001-{path.stem}.png"
    assert out.endswith(f"\nwrote what the model saw to {tmp_path / 'seen'}: 1 file\n")
    assert np.array_equal(np.asarray(Image.open(seen)), digits.prepare(path))
    status, out, err = run(capsys, str(path), "--model", model, "--show-preprocessed", str(path))
    assert status == 2 and out == "" and err == (f"digits: error: --show-preprocessed {path}: a file, not a folder — "
                                                 "give a folder for the files this writes\n")


def test_without_a_model_it_says_how_to_make_one(pictures, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DIGITS_MODEL", raising=False)
    status, out, err = run(capsys, str(pictures[0][0]))
    assert status == 2 and out == ""
    assert err == ("digits: error: no trained model under runs/ — train one with `digits train`,"
                   " or pass --model CHECKPOINT\n")
