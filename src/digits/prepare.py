"""Turn real pictures of handwritten digits into MNIST-style 28×28 images.

MNIST digits are white ink on black, fitted into a 20×20 box (aspect ratio kept, anti-aliased)
and placed in a 28×28 field with their centre of mass at pixel (14, 14). A photo, scan or canvas
export is none of that: dark ink on light paper, any size, off-centre, colour, JPEG noise, uneven
light, transparency. `prepare` bridges the gap for one digit, `segment_number` for a number.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from scipy import ndimage

from .errors import DigitsError
from .mnist import FIELD

Source = Union[str, os.PathLike, bytes, BinaryIO, Image.Image, np.ndarray]

MAX_PIXELS = 40_000_000
# Pillow warns of pictures past 89 megapixels as it opens them; they are refused here, in one
# line, so its two-line warning would only come first. Set once: silencing per call is not thread-safe.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
WORK_SIZE = 1024  # larger pictures are reduced first: the digit ends up 20 px tall anyway
BOX, CENTRE = 20, 14  # MNIST fitted each digit into a 20×20 box, centred in the 28×28 field
# Pixel values up to this are taken to be on a 0–1 scale: resampling a 0–1 picture overshoots
# 1 a little, while on a 0–255 scale a picture this dark throughout would be blank.
UNIT_TOP = 1.5
MIN_CONTRAST = 0.12  # ink must differ from the paper by this much (0–1 scale) to count
SPECK = 0.05  # components with less ink than this fraction of the largest one's are noise…
MIN_AREA = 1e-4  # …and so are those with less than this fraction of the picture's area
THIN, THICK = 1.6, 5.5  # stroke widths (px in the 20-px box) outside MNIST's range, fixed to…
THIN_TARGET, THICK_TARGET = 2.5, 4.5  # …these; MNIST's median width is about 2.6 px
DIGIT_ASPECT = 0.85  # width/height a digit rarely exceeds by half: counts digits that touch
MERGE = 0.5  # fragments overlapping this much of the narrower one's width are one digit
WIDE = 1.25  # ink this many times wider than tall may be a number; 1% of single digits are as wide
# Ruled lines of notebook or squared paper are straight (runs an eighth of the picture long), cross
# nearly all of it, are thin (this fraction of its shorter side, or 3 px, at most: a pen stroke of 6 px
# in a 300-px picture is a stroke, even beside a darker blot of ink) and fainter than ink.
RULE_RUN, RULE_SPAN, RULE_WIDTH, RULE_FAINT = 1 / 8, 0.9, 0.02, 0.6
LUMA = np.array([0.299, 0.587, 0.114], np.float32)
EIGHT = np.ones((3, 3), bool)


def is_array(source: object) -> bool:
    """Whether ``source`` is pixels held as an array (NumPy's, PyTorch's, …), not a picture file
    or image: a NumPy string, a path, has ``__array__`` too."""
    return hasattr(source, "__array__") and not isinstance(source, (str, bytes, Image.Image))


def as_numpy(source: object) -> np.ndarray:
    """Pixels held in an array as NumPy's: a tensor is detached from autograd and brought to the
    CPU first, and a bfloat16 one, a type NumPy lacks, widened to float32."""
    if hasattr(source, "detach"):
        source = source.detach().cpu()
        if str(source.dtype) == "torch.bfloat16":
            source = source.float()
    return np.asarray(source)


def _name(source: Source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if is_array(source):
        return "array"
    if isinstance(source, Image.Image):
        return getattr(source, "filename", "") or "image"
    if isinstance(source, (bytes, bytearray)):
        return "image data"
    return str(getattr(source, "name", "image data"))


def _check_size(width: int, height: int, name: str) -> None:
    if width * height > MAX_PIXELS:
        raise DigitsError(f"{name}: image is {width}×{height} pixels, more than the "
                          f"{MAX_PIXELS // 1_000_000}-megapixel limit — scale it down first")


def on_255_scale(images: np.ndarray, name: str) -> np.ndarray:
    """Pixel values as float32 on MNIST's 0–255 scale (to be clipped to it), each image along the
    first axis judged on its own: up to UNIT_TOP a 0–1 image, scaled up; up to UNIT_TOP × 255 a
    0–255 one, overshooting as resampling leaves it; above, 12- or 16-bit, scaled by its own top.
    ``name`` says what holds them in errors."""
    a = np.asarray(images, dtype=np.float32)
    if not np.isfinite(a).all():
        raise DigitsError(f"{name} hold NaN or infinite values — clean them first")
    if not a.size:
        return a
    flat = a.reshape(len(a), -1)
    # Resampling rings below 0 around strokes (up to a tenth of the pixels), which is clipped; a
    # background below 0 is a normalisation, which clipping would turn into a blank picture.
    normalised = np.flatnonzero(np.count_nonzero(flat < 0, axis=1) >= flat.shape[1] / 2)
    if len(normalised):
        which = f" (image {normalised[0]} of {len(a)}, from 0)" if len(a) > 1 else ""
        raise DigitsError(f"{name} are mostly negative{which}, and pixels are 0–255 or 0–1 — undo any "
                          "normalisation (such as (x - 0.1307) / 0.3081) first")
    tops = flat.max(1)
    factors = np.where(tops <= UNIT_TOP, 255, np.where(tops <= UNIT_TOP * 255, 1, 255 / np.maximum(tops, 1)))
    return a * factors.astype(np.float32).reshape(-1, *[1] * (a.ndim - 1))


def _from_array(array: np.ndarray, name: str) -> Image.Image:
    a = given = np.asarray(array)
    if a.ndim > 2 and a.shape[-1] not in (3, 4):
        a = np.squeeze(a)  # e.g. a (1, 28, 28) tensor
    if a.size == 0 or a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (3, 4)):
        raise DigitsError(f"{name}: expected an H×W grey or H×W×3/4 colour array, got shape {given.shape}")
    _check_size(a.shape[1], a.shape[0], name)
    a = on_255_scale(a[None], f"{name}: its pixels")[0]
    mode = {2: "L", 3: "RGB", 4: "RGBA"}[a.shape[-1] if a.ndim == 3 else 2]
    return Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8), mode)


def open_image(source: Source) -> Image.Image:
    """Open a picture from a path, bytes, a binary file, a PIL image or a NumPy array.

    The pixel count is checked from the header before anything is decoded, so decompression
    bombs are refused cheaply. Photos are turned upright (EXIF orientation); of an animation
    the first frame is taken. Anything unreadable raises DigitsError naming the source.
    """
    name = _name(source)
    if is_array(source):
        return _from_array(as_numpy(source), name)
    if not isinstance(source, (str, os.PathLike, bytes, bytearray, Image.Image)) and not hasattr(source, "read"):
        raise DigitsError(f"cannot read a {type(source).__name__} as a picture — give a path, bytes, a binary "
                          "file, a PIL image or an array")
    if (isinstance(source, (bytes, bytearray)) and not source) or (
            isinstance(source, (str, os.PathLike)) and os.path.isfile(source)
            and os.path.getsize(source) == 0):
        raise DigitsError(f"{name}: the file is empty — save or export the picture again")
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    try:
        # Image.open reads only the header. (Past 179 megapixels Pillow refuses.)
        image = source if isinstance(source, Image.Image) else Image.open(source)
        with image if image is not source else contextlib.nullcontext():  # the caller's stays open
            _check_size(*image.size, name)
            if image is not source:  # JPEG decodes at 1/2–1/8 scale: a 12-MP photo in a fraction
                image.draft(None, (WORK_SIZE // 2, WORK_SIZE // 2))  # of the time, still ≥ WORK_SIZE/2
            image.load()  # decode now, inside the try, so a truncated file is caught here
            return ImageOps.exif_transpose(image)  # always a loaded copy
    except UnidentifiedImageError:
        raise DigitsError(f"{name}: not a picture this tool can read — use PNG, JPEG, GIF, BMP, "
                          "TIFF or WebP") from None
    except Image.DecompressionBombError:
        raise DigitsError(f"{name}: image is far more than the {MAX_PIXELS // 1_000_000}-megapixel "
                          "limit (a possible decompression bomb) — scale it down first") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        if isinstance(e, OSError) and e.errno is not None:  # the system's, not the decoder's
            raise DigitsError(f"{name}: cannot read the file ({e.strerror}) — check the path") from None
        raise DigitsError(f"{name}: the picture is damaged or incomplete ({e}) — "
                          "save or export it again") from None


def to_grayscale(image: Image.Image) -> np.ndarray:
    """Grey levels in [0, 1] (float32), with transparency composited onto paper.

    A canvas export is often strokes on a transparent background, the strokes black or white.
    When the visible pixels are one colour the alpha channel is the drawing, returned as dark
    ink on white. Otherwise transparent pixels take the paper's colour: the majority colour of
    the visible pixels when they cover most of the picture, else the colour opposite to theirs.
    """
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):  # scaled as an array of them would be
        return np.clip(on_255_scale(np.asarray(image)[None], "the picture's pixels")[0] / 255, 0, 1)
    if image.mode not in ("RGBA", "LA", "PA", "RGBa", "La") and "transparency" not in image.info:
        return np.asarray(image.convert("L"), dtype=np.float32) / 255
    rgba = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255
    grey, alpha = rgba[..., :3] @ LUMA, rgba[..., 3]
    if alpha.min() > 0.99:
        return grey
    visible = alpha > 0.5
    if not visible.any() or grey[visible].std() < 0.1:
        return 1 - alpha
    if visible.mean() > 0.5:  # transparent holes in a picture take its majority colour
        paper = float(np.median(grey[visible]))
    else:  # strokes on a transparent background: paper is the opposite of the ink's colour
        paper = float(_ink_grey(grey, visible) < 0.5)
    return alpha * grey + (1 - alpha) * paper


def _ink_grey(grey: np.ndarray, visible: np.ndarray) -> float:
    """The grey of strokes drawn on a transparent background. Strokes whose paper was made
    transparent keep anti-aliased edges blended towards that paper: then the ink is the side
    away from their outline (most of the pixels may be edge, as in an enlarged MNIST digit)."""
    outline = visible & ndimage.binary_dilation(~visible)
    inside = visible & ~outline
    if inside.any() and abs(np.median(grey[outline]) - np.median(grey[inside])) > MIN_CONTRAST:
        return 0.0 if np.median(grey[outline]) > np.median(grey[inside]) else 1.0
    return float(np.median(grey[visible]))


def _border(a: np.ndarray) -> np.ndarray:
    """The pixels along the edges of a picture (H, W), or of each picture of a batch (…, H, W)."""
    return np.concatenate([a[..., 0, :], a[..., -1, :], a[..., :, 0], a[..., :, -1]], axis=-1)


def ink_contrast(pictures: np.ndarray) -> np.ndarray:
    """How much further the lightest pixel departs from the border's median colour than the
    darkest does, for a picture (H, W) or each of a batch (…, H, W): positive for light ink on a
    dark ground, negative for dark ink on a light one, zero where the two cannot be told apart."""
    level = np.median(_border(pictures), axis=-1)
    return (pictures.max((-2, -1)) - level) - (level - pictures.min((-2, -1)))


def _otsu(values: np.ndarray) -> float:
    hist, edges = np.histogram(values, bins=256)
    p = hist / hist.sum()
    centres = (edges[:-1] + edges[1:]) / 2
    w0, m0 = np.cumsum(p), np.cumsum(p * centres)
    with np.errstate(divide="ignore", invalid="ignore"):
        between = np.nan_to_num((m0[-1] * w0 - m0) ** 2 / (w0 * (1 - w0)))
    return float(centres[np.argmax(between[:-1])])


def ink(gray: np.ndarray) -> np.ndarray:
    """Ink map in [0, 1] (float32, 1 = ink) of a grey picture of either polarity.

    The background is the border's colour; ink is whatever departs from it. Uneven light is
    flattened by dividing by a morphological closing (the paper with the strokes filled in), and
    ruled lines of notebook or squared paper are taken out; Otsu's threshold then finds the ink
    level, and the map ramps from the paper's noise level up to that ink level, so anti-aliased
    stroke edges stay grey as in MNIST. All zeros if blank.
    """
    g = np.asarray(gray, dtype=np.float32)
    if min(g.shape) >= 100:  # against sensor and JPEG noise; small pictures are left sharp
        g = ndimage.gaussian_filter(g, 1.0)
    if ink_contrast(g) > 0:  # light ink on a dark background
        g = 1 - g
    paper = _paper(g)
    depth = np.clip((paper - g) / np.maximum(paper, 0.05), 0, None)  # light acts multiplicatively
    depth = _unruled(depth)
    if depth.max() < MIN_CONTRAST:
        return np.zeros_like(g)
    t = _otsu(depth)
    top = float(np.median(depth[depth > t]))
    if top < MIN_CONTRAST:
        return np.zeros_like(g)
    plain = depth[depth <= t]
    middle = float(np.median(plain))
    noise = 1.4826 * float(np.median(np.abs(plain - middle)))
    low = min(max(middle + 4 * noise, 0.15 * top), t)
    return np.clip((depth - low) / (top - low), 0, 1).astype(np.float32)


def _rules(depth: np.ndarray) -> tuple[np.ndarray, int, int]:
    """The ruled lines along the rows of a depth map: each one's depth on its pixels (0 elsewhere),
    how many there are and how thick the thickest is (px)."""
    height, width = depth.shape
    run = max(3, int(width * RULE_RUN))  # an opening along the rows keeps what is long and straight
    runs = ndimage.maximum_filter1d(ndimage.minimum_filter1d(depth, run, axis=1), run, axis=1)
    labels, _ = ndimage.label(runs > MIN_CONTRAST / 3, structure=EIGHT)
    level, count, thickest = np.zeros_like(depth), 0, 0
    faint = RULE_FAINT * depth.max()
    for i, (rows, cols) in enumerate(ndimage.find_objects(labels), 1):
        if cols.stop - cols.start < RULE_SPAN * width:  # most runs are strokes or noise: no need to measure
            continue
        line = labels[rows, cols] == i  # one line, or several that the digit's strokes join
        lines = np.count_nonzero(line[1:] & ~line[:-1], axis=0) + line[0]  # in each column
        # lower quartiles over the columns: strokes the lines meet thicken and darken many of them
        thickness = np.percentile(line.sum(0) / lines, 25)
        core = np.percentile(np.where(line, depth[rows, cols], 0).max(0), 25)
        if thickness <= max(3, RULE_WIDTH * min(height, width)) and core < faint:
            level[rows, cols][line] = core
            count += int(np.percentile(lines, 25))
            thickest = max(thickest, int(thickness))
    return level, count, thickest


def _unruled(depth: np.ndarray) -> np.ndarray:
    """A depth map without the ruled lines of notebook or squared paper, which would join the
    digit and widen its box. One line across the picture may be the digit's own (a 7's bar or a
    4's crossbar cropped tight), so lines go only when two or more run one way; a margin line
    then goes too. Ink on a line stays, so that no stroke is cut in two: where the ink across
    the line runs further than the line is thick (a stroke crosses it, or lies along it), and
    by how much it darkens the line (a stroke as thin as the line lying along it)."""
    # Most pictures have no ruled lines: a look at a quarter of the resolution (each pixel the
    # darkest of its 4×4 block, so thin lines stay) rules them out at a sixteenth of the cost.
    height, width = (side // 4 * 4 for side in depth.shape)
    coarse = np.maximum.reduce([depth[i:height:4, j:width:4] for i in range(4) for j in range(4)])
    if min(coarse.shape) < 8 or max(_rules(coarse)[1], _rules(coarse.T)[1]) < 2:
        return depth
    rules = [_rules(depth), _rules(depth.T)]
    if max(count for _, count, _ in rules) < 2:
        return depth
    out = depth.copy()
    for view, (level, _, thickest) in zip((out, out.T), rules):  # rows, then columns (a view)
        on = level > 0
        across = ndimage.grey_opening(view, size=(thickest + 2, 1))
        view[on] = np.maximum(across, (view - level) / (1 - level))[on]  # ink darkens the line
    return out


def _paper(g: np.ndarray) -> np.ndarray:
    """The paper with the strokes filled in: a closing (max then min filter) wider than any stroke.

    The closing is as wide as a third of the picture and as smooth, so it is computed on the
    picture reduced by block maxima (which keep the paper and drop thin ink) to about 48
    pixels a window, and enlarged back: the same light, a fraction of the work. The
    max-filtered image holds no ink, so it is extended past the border linearly (odd
    reflection): a plain closing flattens a light gradient near the border.
    """
    height, width = g.shape
    half = max(1, min(height, width) // 6)
    step = max(1, half // 24)
    rows, cols = -(-height // step), -(-width // step)
    small = np.pad(g, ((0, rows * step - height), (0, cols * step - width)), "edge")
    small = small.reshape(rows, step, cols, step).max(axis=(1, 3))
    half = max(1, half // step)
    upper = np.pad(ndimage.maximum_filter(small, size=2 * half + 1), half, "reflect", reflect_type="odd")
    paper = ndimage.minimum_filter(upper, size=2 * half + 1)[half:-half, half:-half]
    if step == 1:
        return paper
    # Bilinear, with pixel centres aligned: block i's centre is at i * step + (step - 1) / 2.
    enlarged = Image.fromarray(paper).resize((cols * step, rows * step), Image.BILINEAR)
    return np.asarray(enlarged)[:height, :width]


def _gray(source: Source) -> np.ndarray:
    image = open_image(source)
    if max(image.size) > WORK_SIZE:
        if image.mode in ("1", "P"):  # Pillow resizes these by dropping pixels, thin lines too
            image = image.convert("RGBA" if "transparency" in image.info else "L")
        image.thumbnail((WORK_SIZE, WORK_SIZE), Image.BOX)
    try:
        return to_grayscale(image)
    except ValueError as e:  # a mode Pillow opens but cannot convert, such as CIE Lab
        raise DigitsError(f"{_name(source)}: cannot read its {image.mode} colours ({e}) — "
                          "save it as RGB or greyscale") from None


def _mnist_style(gray: np.ndarray) -> np.ndarray | None:
    """The picture as uint8 if it already is a digit as MNIST's are — 28×28, light on dark,
    fitted to about 20 px and centred — else None: a small digit in a corner of a 28×28 canvas
    is still to be prepared."""
    if gray.shape != (FIELD, FIELD) or np.median(_border(gray)) >= 0.1 or gray.max() < MIN_CONTRAST:
        return None
    rows, columns = (np.flatnonzero((gray > 0.1).any(axis)) for axis in (1, 0))
    side = max(rows[-1] - rows[0], columns[-1] - columns[0]) + 1
    off_centre = np.abs(np.array(ndimage.center_of_mass(gray)) - (FIELD - 1) / 2).max()
    if not (BOX - 3 <= side <= BOX + 2 and off_centre <= 1.5):  # all 70,000 of MNIST's digits are within
        return None
    return np.round(gray * 255).astype(np.uint8)


def _strokes(gray: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ink map, its 8-connected components and the labels of those not specks, largest first."""
    out = ink(gray)
    labels, count = ndimage.label(out > 0, structure=EIGHT)
    sizes = np.bincount(labels.ravel(), weights=out.ravel())[1:]  # ink, so faint smudges weigh little
    keep = np.flatnonzero(sizes >= max(SPECK * sizes.max(initial=0), MIN_AREA * out.size))
    if count == 0 or keep.size == 0:
        raise DigitsError(f"{name}: no ink found — the picture looks blank")
    return out, labels, keep[np.argsort(-sizes[keep], kind="stable")] + 1


def _restroke(crop: np.ndarray) -> np.ndarray:
    """Bring a stroke width far outside MNIST's range back into it (thin pen, fat marker)."""
    mask = crop > 0.5
    perimeter = np.count_nonzero(mask & ~ndimage.binary_erosion(mask))
    if perimeter == 0:
        return crop
    width = 2 * np.count_nonzero(mask) / perimeter  # a stroke of length L: area wL, perimeter 2L
    side = max(crop.shape)
    final = width * BOX / side
    if THIN <= final <= THICK:
        return crop
    target = THIN_TARGET if final < THIN else THICK_TARGET
    # grow (or shrink) by r on each side; the box grows with it, hence the divisor
    r = (target * side / BOX - width) / (2 * (1 - target / BOX))
    if r > 0:
        pad = int(np.ceil(r)) + 1
        mask = np.pad(mask, pad)
        grown = np.clip(r + 0.5 - ndimage.distance_transform_edt(~mask), 0, 1)
        return np.maximum(np.pad(crop, pad), grown).astype(np.float32)
    thinner = np.clip(ndimage.distance_transform_edt(mask) + r, 0, 1).astype(np.float32)
    return thinner if thinner.max() > 0.5 else crop


def _area_average(square: np.ndarray, size: int) -> np.ndarray:
    """A square shrunk to size×size, each pixel the mean of the area it covers. (Pillow's BOX
    filter samples pixel centres: one lying on the boundary between two output pixels counts for
    neither, so shrinking 21 to 20 drops the middle row, and a one-pixel stroke there vanishes.)"""
    n = len(square)
    edges = np.arange(size + 1) * (n / size)
    pixels = np.arange(n)
    overlap = np.minimum(edges[1:, None], pixels + 1) - np.maximum(edges[:-1, None], pixels)
    weights = (np.clip(overlap, 0, None) * (size / n)).astype(np.float32)
    return weights @ square @ weights.T


def _fit(piece: np.ndarray) -> np.ndarray:
    """Scale the ink into the 20×20 box and put its centre of mass at (14, 14), as MNIST did."""
    rows, cols = np.nonzero(piece)
    crop = _restroke(piece[rows.min():rows.max() + 1, cols.min():cols.max() + 1])
    rows, cols = np.nonzero(crop > 0)
    crop = crop[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    h, w = crop.shape
    side = max(h, w)
    square = np.zeros((side, side), np.float32)  # pad to a square so the aspect ratio is exact
    square[(side - h) // 2:(side - h) // 2 + h, (side - w) // 2:(side - w) // 2 + w] = crop
    if side >= BOX:  # area averaging = anti-aliasing
        small = _area_average(square, BOX)
    else:
        small = np.clip(np.asarray(Image.fromarray(square, "F").resize((BOX, BOX), Image.BILINEAR)), 0, None)
    small /= small.max()  # MNIST digits all reach full white, even faint or thin ones
    rows, cols = np.nonzero(small >= 0.5 / 255)
    small = small[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    cy, cx = ndimage.center_of_mass(small)
    # MNIST shifted by whole pixels; a digit that would stick out is kept whole instead
    top = int(np.clip(round(CENTRE - cy), 0, FIELD - small.shape[0]))
    left = int(np.clip(round(CENTRE - cx), 0, FIELD - small.shape[1]))
    field = np.zeros((FIELD, FIELD), np.float32)
    field[top:top + small.shape[0], left:left + small.shape[1]] = small
    return np.round(field * 255).astype(np.uint8)


def prepare(source: Source) -> np.ndarray:
    """One digit's picture as a 28×28 uint8 MNIST-style image (white digit on black).

    A 28×28 picture that already is MNIST-style — light on dark, fitted and centred as MNIST's
    digits are — is returned unchanged (as uint8), so dataset digits pass through bit for bit.
    """
    return _prepare(source, count=False)[0]


def prepare_counted(source: Source) -> tuple[np.ndarray, int]:
    """prepare(source), and how many digits its ink looks like: 1, unless segment_number finds
    separate digits side by side and the ink is clearly wider than tall (as a number is, and a
    single digit is not, even one whose thin strokes fall apart). One piece of ink, however
    wide — a broad 0, or a 7's first stroke — counts as one digit."""
    return _prepare(source, count=True)


def _prepare(source: Source, count: bool) -> tuple[np.ndarray, int]:
    # Counting finds each stroke's box, a pass over the whole picture (about 5 ms for a photo):
    # only the callers that say how many digits a picture holds pay for it.
    gray = _gray(source)
    ready = _mnist_style(gray)
    if ready is not None:
        return ready, 1
    out, labels, keep = _strokes(gray, _name(source))
    digit = _fit(np.where(np.isin(labels, keep), out, 0))
    if not count:
        return digit, 1
    boxes = ndimage.find_objects(labels)
    groups, line = _groups(boxes, keep)
    rows = [boxes[label - 1][0] for label in keep]
    height = max(r.stop for r in rows) - min(r.start for r in rows)
    width = max(g[1] for g in groups) - min(g[0] for g in groups)
    if len(groups) < 2 or width < WIDE * height:
        return digit, 1
    return digit, sum(_digits_across(right - left, line) for left, right, _ in groups)


def _overlap(a: list, b: list) -> float:
    """How much of the narrower of two [left, right, …] column spans the other one covers."""
    return (min(a[1], b[1]) - max(a[0], b[0])) / min(a[1] - a[0], b[1] - b[0])


def _digits_across(width: int, line: int) -> int:
    """How many digits of the line's height ink this wide holds: more than 1 where they touch."""
    return max(1, int(width / (DIGIT_ASPECT * line) + 0.5))


def _split(piece: np.ndarray, line: int) -> list[np.ndarray]:
    """Cut ink as wide as several digits of the line's height where fewest strokes cross."""
    cols = np.nonzero(piece.any(0))[0]
    x0, width = cols[0], cols[-1] + 1 - cols[0]
    n = _digits_across(width, line)
    if n < 2:
        return [piece]
    strip = piece[:, x0:x0 + width]
    core = strip > 0.5
    crossings = np.count_nonzero(core[1:] & ~core[:-1], axis=0) + core[0]  # strokes per column
    cost = crossings + 0.5 * strip.sum(0) / strip.sum(0).max()  # where touching digits meet
    cuts = [x0]
    for k in range(1, n):  # near the even cuts
        lo, hi = int(width * (k - 0.25) / n), int(width * (k + 0.25) / n) + 1
        cuts.append(x0 + lo + int(np.argmin(cost[lo:hi])))
    cuts.append(x0 + width)
    pieces = []
    for a, b in zip(cuts, cuts[1:]):
        part = np.zeros_like(piece)
        part[:, a:b] = piece[:, a:b]
        if part.max() >= 0.5:  # not a sliver of anti-aliased edge
            pieces.append(part)
    return pieces or [piece]


def _groups(boxes: list, keep: np.ndarray) -> tuple[list[list], int]:
    """The kept components (``boxes`` as find_objects gives them) gathered into digits, each
    [left, right, labels], and the line's height: that of the tallest component."""
    line = max(boxes[i - 1][0].stop - boxes[i - 1][0].start for i in keep)
    groups: list[list] = []  # built from the largest component down
    for label in keep:
        rows, cols = boxes[label - 1]
        span = [cols.start, cols.stop]
        best = max(groups, key=lambda g: _overlap(g, span), default=None)
        cover = _overlap(best, span) if best else 0.0
        if cover >= MERGE or (cover > 0 and rows.stop - rows.start < line / 2):
            best[0], best[1] = min(best[0], span[0]), max(best[1], span[1])
            best[2].append(label)
        else:
            groups.append([*span, [label]])
    return groups, line


def segment_number(source: Source, name: str | None = None) -> list[np.ndarray]:
    """The digits of a multi-digit number's picture, left to right, each as prepare() makes it;
    errors call the picture ``name`` (by default its path, or what kind of thing it is).

    Ink is split into connected components. A fragment goes with the digit it lies over or
    under: one whose horizontal extent overlaps most of the narrower one's, or a short one
    (under half the line's height, like the loose bar of a 5) that overlaps it at all. Ink as
    wide as two or more digits (digits that touch) is cut where the fewest strokes cross.
    """
    gray = _gray(source)
    ready = _mnist_style(gray)
    if ready is not None:
        return [ready]
    out, labels, keep = _strokes(gray, name or _name(source))
    groups, line = _groups(ndimage.find_objects(labels), keep)
    digits = []
    for _, _, group in sorted(groups, key=lambda g: g[0]):
        piece = np.where(np.isin(labels, group), out, 0)
        digits.extend(_fit(part) for part in _split(piece, line))
    return digits
