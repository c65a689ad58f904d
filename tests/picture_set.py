"""Folders of realistic picture files made from MNIST digits, as users would hand them over.

Each kind of picture (tests/pictures.py) is saved in a format such a picture comes in, so
that together they cover PNG, JPEG, BMP, GIF, TIFF and WebP, grey, RGB and RGBA. Used by
the command-line tests and by benchmarks/real_pictures.py; generated on demand, never kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from pictures import (big_canvas_off_centre, ink_on_paper, jpeg_uneven_light, light_on_dark,
                      number_picture, rgba_canvas, ruled_paper, thick_stroke, thin_stroke)

CANVAS_COLOURS = ((0, 0, 0), (255, 255, 255), (30, 60, 200))  # black, white and blue strokes

KINDS: dict[str, tuple[Callable[..., Image.Image], str]] = {
    "ink_on_paper": (ink_on_paper, "gif"),  # a scan saved as GIF (a palette of 256 colours)
    "big_canvas_off_centre": (big_canvas_off_centre, "jpg"),
    "thick_stroke": (thick_stroke, "bmp"),
    "thin_stroke": (thin_stroke, "tif"),
    "jpeg_uneven_light": (jpeg_uneven_light, "jpg"),
    "rgba_canvas": (lambda digit, seed: rgba_canvas(digit, colour=CANVAS_COLOURS[seed % 3]), "png"),
    "light_on_dark": (light_on_dark, "webp"),
    # a phone's photo of a notebook page, ruled or (every other one) squared
    "ruled_paper": (lambda digit, seed: ruled_paper(digit, squared=seed % 2 == 1, seed=seed), "jpg"),
}


def write_pictures(folder: Path, images: np.ndarray, labels: Sequence[int],
                   kinds: Sequence[str] = tuple(KINDS)) -> list[tuple[Path, str, int]]:
    """Every digit as every kind of picture: folder/<kind>/<index>-<label>.<format>.

    Returns (path, kind, label) for each file written.
    """
    written = []
    for kind in kinds:
        make, suffix = KINDS[kind]
        (folder / kind).mkdir(parents=True, exist_ok=True)
        for i, (digit, label) in enumerate(zip(images, labels)):
            path = folder / kind / f"{i:05d}-{int(label)}.{suffix}"
            make(digit, seed=i).save(path)
            written.append((path, kind, int(label)))
    return written


def write_numbers(folder: Path, images: np.ndarray, labels: Sequence[int], count: int,
                  seed: int = 0) -> list[tuple[Path, str]]:
    """Numbers of 2–4 test digits side by side, with gaps or slight overlaps: (path, number)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for k in range(count):
        chosen = rng.integers(0, len(images), int(rng.integers(2, 5)))
        gap = float(rng.uniform(-0.03, 0.15))  # of the digit's height; below 0 the digits overlap
        path = folder / f"{k:04d}.png"
        number_picture([images[i] for i in chosen], gap=gap, seed=k).save(path)
        written.append((path, "".join(str(int(labels[i])) for i in chosen)))
    return written
