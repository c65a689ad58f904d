"""Realistic pictures made from MNIST-style 28×28 digits (uint8, white on black), for tests.

Each function returns a PIL image such as a user might hand to `digits.prepare`: a scan, a
photo, a canvas export, a blackboard. `seed` makes the random parts (placement, noise, tint)
reproducible.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from scipy import ndimage


def upscale(digit: np.ndarray, size: int) -> np.ndarray:
    """The digit's ink (0–1 float) smoothly upscaled to size×size."""
    image = Image.fromarray(np.asarray(digit, np.float32) / 255, "F")
    return np.clip(np.asarray(image.resize((size, size), Image.BICUBIC)), 0, 1)


def _rgb(gray: np.ndarray, tint: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> Image.Image:
    rgb = np.clip(gray[..., None] * np.asarray(tint, np.float32), 0, 1)
    return Image.fromarray(np.round(rgb * 255).astype(np.uint8), "RGB")


def _on_paper(ink: np.ndarray, rng: np.random.Generator, noise: float = 0.01) -> Image.Image:
    """Dark ink on slightly tinted paper, with a little sensor noise."""
    paper = rng.uniform(0.88, 1.0)
    pen = rng.uniform(0.0, 0.25)
    gray = paper - (paper - pen) * ink + rng.normal(0, noise, ink.shape)
    return _rgb(gray, tuple(rng.uniform(0.93, 1.0, 3)))


def ink_on_paper(digit: np.ndarray, size: int = 280, seed: int = 0) -> Image.Image:
    """A clean scan: dark ink on white paper, the digit upscaled to size×size."""
    return _on_paper(upscale(digit, size), np.random.default_rng(seed))


def big_canvas_off_centre(digit: np.ndarray, canvas: tuple[int, int] = (1000, 800),
                          size: int = 150, seed: int = 0) -> Image.Image:
    """A big page with a small digit somewhere away from the centre."""
    rng = np.random.default_rng(seed)
    width, height = canvas
    ink = np.zeros((height, width), np.float32)
    corner = rng.choice([0, 1]), rng.choice([0, 1])  # which quarter of the page
    y = int(rng.integers(10, height // 2 - size)) + corner[0] * height // 2
    x = int(rng.integers(10, width // 2 - size)) + corner[1] * width // 2
    ink[y:y + size, x:x + size] = upscale(digit, size)
    return _on_paper(ink, rng)


def _disc(radius: int) -> np.ndarray:
    y, x = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return x * x + y * y <= radius * radius


def thick_stroke(digit: np.ndarray, size: int = 280, radius: int = 12, seed: int = 0) -> Image.Image:
    """Written with a fat marker: the upscaled strokes dilated by a disc."""
    ink = ndimage.grey_dilation(upscale(digit, size), footprint=_disc(radius))
    return _on_paper(ink, np.random.default_rng(seed))


def thin_stroke(digit: np.ndarray, size: int = 280, pen: float = 4.0, seed: int = 0) -> Image.Image:
    """Written with a fine pen: the strokes' centre lines redrawn `pen` pixels wide."""
    inside = ndimage.distance_transform_edt(upscale(digit, size) > 0.5)
    centre = (inside > 0) & (inside > ndimage.maximum_filter(inside, size=3) - 0.6)
    ink = np.clip(pen / 2 + 0.5 - ndimage.distance_transform_edt(~centre), 0, 1)
    return _on_paper(ink, np.random.default_rng(seed))


def jpeg_uneven_light(digit: np.ndarray, size: int = 300, quality: int = 70,
                      seed: int = 0) -> Image.Image:
    """A phone photo: light falling off across the page, sensor noise, JPEG compression."""
    rng = np.random.default_rng(seed)
    ink = upscale(digit, size)
    y, x = np.mgrid[0:size, 0:size] / size
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * (x - 0.5) + np.sin(angle) * (y - 0.5)  # -0.7…0.7
    light = 0.75 + 0.45 * ramp  # about 0.45 to 1.05 across the page
    gray = light * (0.92 - 0.8 * ink) + rng.normal(0, 0.03, ink.shape)
    buffer = io.BytesIO()
    _rgb(gray, (1.0, 0.97, 0.9)).save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    image = Image.open(buffer)
    image.load()
    return image


def rgba_canvas(digit: np.ndarray, size: int = 280, colour: tuple[int, int, int] = (0, 0, 0),
                seed: int = 0) -> Image.Image:
    """A drawing canvas export: strokes of one colour, the rest fully transparent."""
    del seed  # nothing random: a canvas export is exact
    alpha = np.round(upscale(digit, size) * 255).astype(np.uint8)
    rgba = np.zeros((size, size, 4), np.uint8)
    rgba[..., :3] = np.where(alpha[..., None] > 0, np.asarray(colour, np.uint8), 0)
    rgba[..., 3] = alpha
    return Image.fromarray(rgba, "RGBA")


def light_on_dark(digit: np.ndarray, size: int = 300, seed: int = 0) -> Image.Image:
    """Chalk on a blackboard: light grainy strokes on a dark, smudged, uneven board."""
    rng = np.random.default_rng(seed)
    ink = upscale(digit, size) * rng.uniform(0.7, 1.0, (size, size))  # chalk is grainy
    smudges = ndimage.gaussian_filter(rng.normal(0, 1, (size, size)), size / 8)
    board = 0.22 + 0.08 * smudges / (np.abs(smudges).max() + 1e-9)
    board = board + rng.normal(0, 0.02, board.shape)
    gray = board + (0.9 - board) * ink
    return _rgb(gray, (0.85, 1.0, 0.9))


def number_picture(digits_list: list[np.ndarray], gap: float = 0.1, size: int = 200,
                   seed: int = 0) -> Image.Image:
    """Digits written side by side on paper.

    `gap` is the space between one digit's ink and the next one's, as a fraction of `size`;
    small or slightly negative (the digits' extents overlap a little, ink may touch).
    """
    rng = np.random.default_rng(seed)
    inks = []
    for digit in digits_list:
        ink = upscale(digit, size)
        cols = np.nonzero(ink.max(0) > 0.05)[0]
        inks.append(ink[:, cols[0]:cols[-1] + 1])
    step = int(round(gap * size))
    margin = size // 4
    width = sum(i.shape[1] for i in inks) + step * (len(inks) - 1) + 2 * margin
    page = np.zeros((size + 2 * margin, width), np.float32)
    x = margin
    for ink in inks:
        region = page[margin:margin + size, x:x + ink.shape[1]]
        np.maximum(region, ink, out=region)
        x += ink.shape[1] + step
    return _on_paper(page, rng)


def _rule(length: int, at: float, width: float) -> np.ndarray:
    """A straight rule across `length` pixels: 1 within `width` of `at`, anti-aliased edges."""
    return np.clip(width / 2 + 0.5 - np.abs(np.arange(length) - at), 0, 1).astype(np.float32)


def ruled_paper(digit: np.ndarray, size: int = 300, squared: bool = False, seed: int = 0) -> Image.Image:
    """A digit written on a notebook page: faint blue rules every 30–45 px through and around it
    (and as many down it, on squared paper) and a red margin line by its left side, under dark
    ink; the lines cross the whole picture, as a photo cropped round the digit shows them."""
    rng = np.random.default_rng(seed)
    ink = np.zeros((size, size), np.float32)
    x = int(rng.integers(50, 80))
    ink[50:250, x:x + 200] = upscale(digit, 200)
    spacing = rng.uniform(30, 45)
    at = np.arange(rng.uniform(0, spacing), size, spacing)
    across = np.max([_rule(size, y, rng.uniform(1, 2)) for y in at], axis=0)
    blue = np.maximum(across[:, None], across[None, :] if squared else 0)
    red = np.ones(size)[:, None] * _rule(size, x + rng.uniform(0, 30), 2)
    paper = rng.uniform(0.9, 1.0) * np.asarray((1.0, 0.98, 0.93))  # off-white
    page = paper * (1 - blue[..., None] * (1 - rng.uniform((0.55, 0.7, 0.85), (0.7, 0.8, 0.95))))
    page = page * (1 - red[..., None] * (1 - np.asarray((0.9, 0.45, 0.45))))
    pen = rng.uniform(0.05, 0.25)
    rgb = page * (1 - ink[..., None]) + pen * ink[..., None] + rng.normal(0, 0.01, (size, size, 1))
    return Image.fromarray(np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8), "RGB")
