"""Tests for digits.prepare: real pictures → MNIST-style 28×28 digits."""

from __future__ import annotations

import gzip
import importlib
import io
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps
from scipy import ndimage

from digits.errors import DigitsError
from digits.prepare import open_image, prepare, prepare_counted, segment_number, to_grayscale
from pictures import (big_canvas_off_centre, ink_on_paper, jpeg_uneven_light, light_on_dark,
                      number_picture, rgba_canvas, ruled_paper, thick_stroke, thin_stroke, upscale)

preparing = importlib.import_module("digits.prepare")  # the module: digits.prepare is its function

# Shapes in unit coordinates, drawn into a box: lines (polylines) and ellipses.
ONE = [("line", [(0.5, 0), (0.5, 1)])]
ZERO = [("ellipse", (0, 0, 1, 1))]
SEVEN = [("line", [(0, 0), (1, 0), (0.35, 1)])]
FOUR = [("line", [(0.7, 1), (0.7, 0), (0, 0.65), (1, 0.65)])]
Z_TWO = [("line", [(0, 0), (1, 0), (0, 1), (1, 1)])]
# a 5 whose top bar is not joined to the rest: two fragments, one above the other
BROKEN_FIVE = [("line", [(0.15, 0), (1, 0)]),
               ("line", [(0.1, 0.25), (0.1, 0.5), (0.6, 0.45), (0.95, 0.7), (0.6, 1), (0, 0.92)])]


def draw(shapes: list, size=(200, 200), boxes=((50, 30, 150, 170),), ink=0, paper=255,
         width=16) -> Image.Image:
    """Dark-on-light ("L") picture of each shape drawn into its box (x0, y0, x1, y1)."""
    image = Image.new("L", size, paper)
    pen = ImageDraw.Draw(image)
    for parts, (x0, y0, x1, y1) in zip(shapes, boxes):
        def at(u, v):
            return x0 + u * (x1 - x0), y0 + v * (y1 - y0)
        for kind, points in parts:
            if kind == "line":
                pen.line([at(*p) for p in points], fill=ink, width=width, joint="curve")
            else:
                pen.ellipse([*at(*points[:2]), *at(*points[2:])], outline=ink, width=width)
    return image


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.astype(float).ravel(), b.astype(float).ravel())[0, 1])


def similar(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation, allowing the 1-px shift that rounding the centre of mass can make."""
    return max(corr(np.roll(a, (dy, dx), (0, 1)), b) for dy in (-1, 0, 1) for dx in (-1, 0, 1))


def centre_of_mass(a: np.ndarray) -> np.ndarray:
    return np.array(ndimage.center_of_mass(a.astype(float)))


def save(image: Image.Image, path: Path, **options) -> Path:
    image.save(path, **options)
    return path


@pytest.mark.parametrize("shape", [ONE, ZERO, SEVEN, BROKEN_FIVE])
def test_prepare_makes_an_mnist_style_digit(shape, tmp_path):
    out = prepare(save(draw([shape]), tmp_path / "digit.png"))
    assert out.shape == (28, 28) and out.dtype == np.uint8
    assert out.max() == 255 and out[[0, 0, -1, -1], [0, -1, 0, -1]].max() == 0  # white on black
    assert np.abs(centre_of_mass(out) - 14).max() <= 1
    rows, cols = np.nonzero(out)
    height, width = np.ptp(rows) + 1, np.ptp(cols) + 1
    assert max(height, width) in (19, 20)  # fitted into the 20×20 box
    assert min(height, width) <= 20


def test_position_and_canvas_size_do_not_matter():
    small = prepare(draw([SEVEN]))
    for box in [(20, 40, 120, 180), (700, 480, 800, 620)]:
        big = prepare(draw([SEVEN], size=(900, 700), boxes=[box]))
        assert similar(big, small) > 0.97
        assert np.abs(centre_of_mass(big) - 14).max() <= 1


def test_aspect_ratio_is_kept():
    out = prepare(draw([ZERO], boxes=[(40, 60, 160, 120)]))  # twice as wide as tall
    rows, cols = np.nonzero(out > 64)
    assert np.ptp(cols) + 1 == pytest.approx(20, abs=1)
    assert (np.ptp(cols) + 1) / (np.ptp(rows) + 1) == pytest.approx(2, rel=0.2)


@pytest.mark.parametrize("shape", [ZERO, SEVEN])
def test_light_on_dark_gives_the_same_digit(shape):
    picture = draw([shape])
    assert similar(prepare(ImageOps.invert(picture)), prepare(picture)) > 0.98


@pytest.mark.parametrize("colour", [(0, 0, 0), (255, 255, 255), (30, 60, 200)])
def test_strokes_on_a_transparent_canvas(colour, tmp_path):
    alpha = ImageOps.invert(draw([SEVEN]))  # the strokes are opaque, the rest transparent
    canvas = Image.new("RGBA", alpha.size, (*colour, 0))
    canvas.putalpha(alpha)
    out = prepare(save(canvas, tmp_path / "canvas.png"))
    assert similar(out, prepare(draw([SEVEN]))) > 0.98


def test_transparent_margin_around_a_photo_is_paper():
    photo = draw([SEVEN]).convert("RGBA")
    alpha = Image.new("L", photo.size, 0)
    ImageDraw.Draw(alpha).rectangle((8, 8, 192, 192), fill=255)  # rounded-off, cut-out edges
    photo.putalpha(alpha)
    assert similar(prepare(photo), prepare(draw([SEVEN]))) > 0.98


def test_to_grayscale_composites_transparency_onto_paper():
    white_strokes = Image.new("RGBA", (50, 50), (255, 255, 255, 0))
    ImageDraw.Draw(white_strokes).line([(10, 25), (40, 25)], fill=(255, 255, 255, 255), width=5)
    gray = to_grayscale(white_strokes)
    assert gray.dtype == np.float32 and gray.shape == (50, 50)
    assert gray[0, 0] != pytest.approx(gray[25, 25], abs=0.5)  # strokes stay visible


def test_a_transparent_paper_keeps_its_anti_aliased_edges_as_paper(tmp_path):
    # An enlarged digit's soft edges outnumber its ink; with its white made transparent (a GIF's
    # or PNG's transparent colour) it is still dark ink on paper, not a hollow outline.
    for i, digit in enumerate(mnist_test_images(20)):
        picture = Image.fromarray(255 - digit).resize((200, 200), Image.BILINEAR)
        keyed = save(picture, tmp_path / f"{i}.png", transparency=255)
        assert np.array_equal(prepare(keyed), prepare(picture))


def test_a_float_picture_that_overshoots_one_is_on_a_0_to_1_scale(tmp_path):
    picture = np.asarray(draw([SEVEN]).resize((300, 300), Image.BICUBIC), np.float32) / 255
    overshooting = np.asarray(Image.fromarray(picture, "F").resize((280, 280), Image.BICUBIC))
    assert overshooting.max() > 1
    expected = prepare(np.clip(overshooting, 0, 1))
    assert np.array_equal(prepare(overshooting), expected)
    as_tiff = [prepare(save(Image.fromarray(a, "F"), tmp_path / f"{i}.tiff"))
               for i, a in enumerate((overshooting, np.clip(overshooting, 0, 1)))]
    assert np.array_equal(*as_tiff)  # a float TIFF keeps more than 8 bits, so not quite `expected`


@pytest.mark.parametrize("bits", [16, 12])
def test_a_16_bit_file_reads_as_the_same_array_does(bits, tmp_path):
    # A 12-bit camera or scanner stores its 0–4095 in a 16-bit PNG: scaled by its own top, as an
    # array is, not by 65,535, which would leave it a blank picture.
    digit = np.kron(prepare(draw([SEVEN])), np.ones((4, 4), np.uint8)).astype(np.uint16) * (257 if bits == 16 else 16)
    Image.fromarray(digit).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode == "I;16"
    np.testing.assert_array_equal(prepare(tmp_path / "deep.png"), prepare(digit))
    assert similar(prepare(tmp_path / "deep.png"), prepare(draw([SEVEN]))) > 0.9


def test_a_one_pixel_stroke_where_shrinking_drops_a_row(tmp_path):
    # A dash 21 px long and 1 px thick fills a 21-px square's middle row, which Pillow's BOX
    # filter, shrinking 21 to 20, drops: the digit came out blank and reading failed.
    dash = Image.new("L", (31, 5), 255)
    ImageDraw.Draw(dash).line([(5, 2), (25, 2)], fill=60)
    assert prepare(dash).max() == 255


def test_a_picture_in_colours_pillow_cannot_convert_is_one_line(tmp_path):
    path = save(draw([SEVEN]).convert("RGB").convert("LAB"), tmp_path / "lab.tiff")
    with pytest.raises(DigitsError, match=f"^{path}: cannot read its LAB colours .* save it as RGB or greyscale$"):
        prepare(path)


@pytest.mark.parametrize("shape", [SEVEN, FOUR, Z_TWO], ids=["seven", "four", "z-two"])
def test_a_digit_cropped_to_its_bars_loses_none_of_them(shape, monkeypatch):
    # Bars across the whole picture, one way or both, are the digit's own, not ruled lines.
    picture = draw([shape], size=(100, 140), boxes=[(8, 8, 92, 132)], width=12)
    prepared = prepare(picture)
    monkeypatch.setattr(preparing, "_unruled", lambda depth: depth)
    assert np.array_equal(prepared, prepare(picture))


def test_an_mnist_seven_cropped_to_its_ink_loses_none_of_it(monkeypatch):
    seven = mnist_test_images(1)[0]
    rows, cols = np.nonzero(seven)
    crop = seven[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    picture = Image.fromarray(np.round(255 - 255 * upscale(crop, 200)).astype(np.uint8))
    prepared = prepare(picture)
    monkeypatch.setattr(preparing, "_unruled", lambda depth: depth)
    assert np.array_equal(prepared, prepare(picture))


def test_uneven_light_and_noise():
    picture = np.asarray(draw([ZERO]), np.float32) / 255
    y, x = np.mgrid[0:200, 0:200] / 200
    light = 0.3 + 0.7 * (0.6 * x + 0.4 * y)  # from deep shadow to full light
    noisy = picture * light + np.random.default_rng(0).normal(0, 0.02, picture.shape)
    assert similar(prepare(np.clip(noisy, 0, 1)), prepare(draw([ZERO]))) > 0.95


def test_jpeg_photo(tmp_path):
    path = save(draw([SEVEN]).convert("RGB"), tmp_path / "photo.jpg", quality=50)
    assert similar(prepare(path), prepare(draw([SEVEN]))) > 0.97


def test_exif_orientation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    sideways = draw([SEVEN]).rotate(90, expand=True).convert("RGB")
    path = save(sideways, tmp_path / "phone.jpg", exif=exif.tobytes(), quality=95)
    assert similar(prepare(path), prepare(draw([SEVEN]))) > 0.97


def test_every_kind_of_source_gives_the_same_result(tmp_path):
    picture = draw([SEVEN])
    path = save(picture, tmp_path / "seven.png")
    expected = prepare(path)
    with open(path, "rb") as file:
        assert np.array_equal(prepare(file), expected)
        assert not file.closed  # the caller's file is the caller's to close
    for source in [str(path), path.read_bytes(), picture, np.asarray(picture),
                   np.asarray(picture) / 255.0, np.asarray(picture.convert("RGB"))]:
        assert np.array_equal(prepare(source), expected)


def test_first_frame_of_an_animation(tmp_path):
    frames = [draw([SEVEN]).convert("P"), draw([ZERO]).convert("P")]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    assert similar(prepare(path), prepare(draw([SEVEN]))) > 0.97


def test_an_mnist_style_digit_passes_through_unchanged():
    digit = prepare(draw([SEVEN]))  # fitted to 20 px and centred, as MNIST's digits are
    assert np.array_equal(prepare(digit), digit)
    assert np.array_equal(prepare(digit / 255.0), digit)


def test_a_small_digit_in_a_corner_of_a_28_by_28_canvas_is_still_prepared():
    corner = np.zeros((28, 28), np.uint8)
    corner[:14, :14] = np.asarray(Image.fromarray(prepare(draw([SEVEN]))).resize((14, 14), Image.BOX))
    fitted = prepare(corner)
    rows, columns = np.flatnonzero((fitted > 25).any(1)), np.flatnonzero((fitted > 25).any(0))
    assert max(rows[-1] - rows[0], columns[-1] - columns[0]) + 1 >= 19  # fitted to the 20-px box…
    assert np.abs(np.array(ndimage.center_of_mass(fitted)) - 13.5).max() <= 1  # …and centred
    assert similar(fitted, prepare(draw([SEVEN]))) > 0.9


@pytest.mark.parametrize("picture", [
    Image.new("L", (300, 200), 255),
    Image.new("RGB", (300, 200), (200, 30, 30)),
    Image.new("L", (300, 200), 0),
    Image.new("RGBA", (300, 200), (0, 0, 0, 0)),
    Image.new("L", (28, 28), 0),
    Image.fromarray(np.clip(np.random.default_rng(1).normal(235, 4, (300, 400)), 0, 255).astype(np.uint8)),
], ids=["white", "red", "black", "transparent", "black-28", "noisy-paper"])
def test_a_blank_picture_is_refused(picture, tmp_path):
    path = save(picture, tmp_path / "blank.png")
    with pytest.raises(DigitsError, match="blank.png: no ink found"):
        prepare(path)
    with pytest.raises(DigitsError, match="no ink found"):
        segment_number(path)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("content, problem", [
    (b"hello, I am not a picture\n", "not a picture"),
    (b"", "empty"),
    (png_bytes(draw([SEVEN]))[:400], "damaged or incomplete"),
    (png_bytes(draw([SEVEN]))[:30], "not a picture"),
], ids=["text", "empty", "truncated", "header-only"])
def test_unreadable_files_are_refused_by_name(content, problem, tmp_path):
    path = tmp_path / "upload.png"
    path.write_bytes(content)
    with pytest.raises(DigitsError, match=problem) as caught:
        open_image(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(DigitsError, match="nope.png: cannot read"):
        prepare(tmp_path / "nope.png")
    with pytest.raises(DigitsError, match="cannot read"):
        prepare(tmp_path)


def png_header_claiming(width: int, height: int) -> bytes:
    """A 1×1 PNG whose IHDR is patched (with a valid CRC) to claim width×height pixels."""
    data = bytearray(png_bytes(Image.new("L", (1, 1))))
    data[16:24] = struct.pack(">II", width, height)  # IHDR data starts after 8 + 4 + 4 bytes
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # over type + data
    return bytes(data)


def test_decompression_bomb_is_refused_quickly(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_claiming(50_000, 50_000))
    start = time.perf_counter()
    with pytest.raises(DigitsError, match="bomb.png: .*40-megapixel limit"):
        prepare(path)
    assert time.perf_counter() - start < 0.5


def test_a_picture_over_the_pixel_limit_is_refused_before_decoding(tmp_path):
    path = tmp_path / "huge.png"
    path.write_bytes(png_header_claiming(8000, 6000))
    with pytest.raises(DigitsError, match="huge.png: image is 8000×6000 pixels, more than the "
                                          "40-megapixel limit"):
        prepare(path)
    with pytest.raises(DigitsError, match="array: image is 9000×5000 pixels"):
        prepare(np.broadcast_to(np.uint8(0), (5000, 9000)))


def test_a_picture_pillow_warns_of_is_refused_in_one_line_and_no_warning(tmp_path):
    path = tmp_path / "wide.png"
    path.write_bytes(png_header_claiming(10_000, 10_000))  # past Pillow's 89-megapixel warning
    script = "import sys, digits\ntry:\n    digits.prepare(sys.argv[1])\nexcept digits.DigitsError as e:\n    print(e)"
    out = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, check=True)
    assert out.stdout == f"{path}: image is 10000×10000 pixels, more than the 40-megapixel limit — scale it down " \
                         "first\n"
    assert out.stderr == ""


def test_bad_arrays_are_refused():
    with pytest.raises(DigitsError, match="shape"):
        prepare(np.zeros((3, 4, 5)))
    with pytest.raises(DigitsError, match="NaN"):
        prepare(np.full((30, 30), np.nan))


def test_segment_number_reads_left_to_right(tmp_path):
    shapes, boxes = [ONE, ZERO, SEVEN], [(40, 40, 140, 180), (200, 40, 300, 180), (360, 40, 460, 180)]
    picture = draw(shapes, size=(520, 220), boxes=boxes)
    digits = segment_number(save(picture, tmp_path / "number.png"))
    assert len(digits) == 3
    for digit, shape in zip(digits, shapes):
        assert digit.shape == (28, 28) and digit.dtype == np.uint8
        assert similar(digit, prepare(draw([shape]))) > 0.95


def test_segment_number_splits_touching_digits():
    picture = draw([ZERO, ZERO], size=(320, 220), boxes=[(40, 40, 140, 180), (136, 40, 236, 180)])
    _, count = ndimage.label(np.asarray(picture) < 128)
    assert count == 1  # the premise: one blob of ink
    digits = segment_number(picture)
    assert len(digits) == 2
    assert all(similar(d, prepare(draw([ZERO]))) > 0.8 for d in digits)


def test_segment_number_keeps_a_broken_digit_whole():
    picture = draw([ONE, BROKEN_FIVE, SEVEN], size=(520, 220),
                   boxes=[(40, 40, 140, 180), (200, 40, 300, 180), (360, 40, 460, 180)])
    digits = segment_number(picture)
    assert len(digits) == 3
    assert similar(digits[1], prepare(draw([BROKEN_FIVE]))) > 0.95


def test_long_pen_strokes_with_a_darker_blot_are_not_taken_for_ruled_lines():
    # An "11" of two grey 6-px strokes nearly as long as the picture, each with a darker blot where
    # the pen pressed: two parallel lines fainter than the darkest ink, but as thick as a stroke.
    eleven = Image.new("L", (300, 300), 240)
    pen = ImageDraw.Draw(eleven)
    for x in (110, 190):
        pen.line([(x, 10), (x, 292)], fill=120, width=6)
        pen.ellipse([x - 5, 8, x + 5, 18], fill=10)
    ones = segment_number(eleven)
    assert len(ones) == 2
    assert all(np.ptp(np.flatnonzero((one > 25).any(1))) >= 18 for one in ones)  # whole strokes, not blots


def test_a_picture_counts_the_digits_it_looks_like(mnist):
    number = number_picture([mnist.test.images[i].numpy() for i in range(4)])
    assert prepare_counted(number)[1] == 4
    assert np.array_equal(prepare_counted(number)[0], prepare(number))
    wide_zero, bar = Image.new("L", (300, 200), 255), Image.new("L", (280, 280), 255)
    ImageDraw.Draw(wide_zero).ellipse([40, 40, 260, 160], outline=0, width=12)
    ImageDraw.Draw(bar).line([(60, 60), (220, 60)], fill=0, width=19)  # a 7's first stroke, on the page
    for single in (draw([SEVEN]), ink_on_paper(mnist.test.images[0].numpy()), mnist.test.images[0].numpy(),
                   wide_zero, bar):
        assert prepare_counted(single)[1] == 1
    # A thin-stroked digit may fall apart into pieces, but they lie over one another, not side by side.
    pieces = [prepare_counted(thin_stroke(digit, seed=i))[1] for i, digit in enumerate(mnist_test_images(100))]
    assert pieces.count(1) >= 99


def test_segment_number_of_a_single_digit():
    digits = segment_number(draw([SEVEN]))
    assert len(digits) == 1 and np.array_equal(digits[0], prepare(draw([SEVEN])))


# --- on real MNIST digits, when the data is there -------------------------------------------

def mnist_test_images(count: int) -> np.ndarray:
    root = os.environ.get("DIGITS_DATA_DIR")
    path = Path(root or ".") / "mnist" / "t10k-images-idx3-ubyte.gz"
    if not root or not path.exists():
        pytest.skip("set DIGITS_DATA_DIR to a folder holding mnist/t10k-images-idx3-ubyte.gz")
    with gzip.open(path) as file:
        return np.frombuffer(file.read(), np.uint8, offset=16).reshape(-1, 28, 28)[:count]


def test_mnist_digits_pass_through_bit_for_bit():
    for digit in mnist_test_images(200):
        assert np.array_equal(prepare(digit), digit)


def test_mnist_digits_survive_a_round_trip_through_paper():
    digits = mnist_test_images(200)
    scores = [corr(prepare(ink_on_paper(d, seed=i)), d) for i, d in enumerate(digits)]
    assert np.mean(scores) > 0.9 and np.min(scores) > 0.6


@pytest.mark.parametrize("make, floor, count", [
    (big_canvas_off_centre, 0.85, 10), (thick_stroke, 0.75, 25), (thin_stroke, 0.8, 25),
    (jpeg_uneven_light, 0.85, 25), (rgba_canvas, 0.9, 25),
    (lambda d, seed: rgba_canvas(d, colour=(255, 255, 255), seed=seed), 0.9, 25),
    (light_on_dark, 0.9, 25), (ruled_paper, 0.85, 25),
    (lambda d, seed: ruled_paper(d, squared=True, seed=seed), 0.85, 25),
], ids=["big-canvas", "thick", "thin", "jpeg-uneven-light", "rgba-black", "rgba-white", "chalk", "ruled",
        "squared"])
def test_mnist_digits_survive_realistic_pictures(make, floor, count):
    digits = mnist_test_images(count)
    scores = [corr(prepare(make(d, seed=i)), d) for i, d in enumerate(digits)]
    assert np.mean(scores) > floor


@pytest.mark.parametrize("gap", [0.12, 0.03])
def test_segment_number_on_mnist_numbers(gap):
    images = mnist_test_images(1000)
    rng = np.random.default_rng(7)
    right = 0
    for trial in range(8):
        chosen = images[rng.integers(0, len(images), int(rng.integers(2, 5)))]
        digits = segment_number(number_picture(list(chosen), gap=gap, seed=trial))
        if len(digits) == len(chosen):
            right += 1
            assert np.mean([corr(a, b) for a, b in zip(digits, chosen)]) > 0.75
    assert right >= 7
