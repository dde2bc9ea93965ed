"""A person's image -> a 28x28 digit prepared the way MNIST digits were.

MNIST digits are white ink on black, size-normalised so the longer side fits a 20x20
box (keeping the aspect ratio, anti-aliased), then placed in 28x28 so that their centre
of mass sits at the centre. A phone photo or a canvas drawing is none of that, and a
plain resize destroys it; `prepare` makes one the way MNIST made its digits:

    load       decode.py's safe decoding (the security boundary: limits, one frame,
               EXIF orientation), reduced to at most ~768 px inside Pillow
    gray       luminance in [0, 1]; transparency composited onto contrasting paper;
               16-bit images scaled by their own range
    ink        polarity detected (ink is the tail far from the background), ink made bright
    flat       background taken away (grey paper, uneven light, shadows: a grey opening),
               noise floor cut, ink stretched to 0-1; blank images stop here
    crop       the digit's strong ink, without specks or marks at a photo's edge, plus
               room for its blurred edge
    stroke     a pen far thinner or thicker than MNIST's redrawn towards its median width
    fit        the strong ink's longer side scaled to 20 px with anti-aliasing (aspect kept)
    prepared   placed in 28x28 with the centre of mass at (14, 14), as MNIST's are

MNIST's own digits come back almost unchanged (test accuracy within 0.3 points).

`find_ink` is the first four steps (once per image), `prepare_piece` the last four (once
per digit): `read` cuts several digits from one image's ink and prepares each alike.

A drawing (the page's: 8-bit, at least half of it one exact paper level, nothing on it but
strokes) gets the same ink, bit for bit, by a cheaper path: with no shade to take away,
`ink` and `flat` are functions of a pixel's level alone, worked out once per level from the
image's histogram (_find_drawn_digit). Anything else takes the general path.
"""

from __future__ import annotations

import io
import os
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from .decode import EXIF_ORIENTATION, PixelBudget, decode, decoder_errors, open_image
from .errors import InputImageError, NoDigitFound, first_line

# Images are decoded and worked on at most this size: plenty for a digit, and it keeps
# a 12-megapixel photo cheap (JPEG decodes straight to it).
WORKING_SIDE = 768
BOX = 20          # MNIST: the longer side of the digit fits 20 px
SIDE = 28         # in a 28x28 image
# A digit needs at least this much contrast (on 0-1) between ink and paper.
MIN_CONTRAST = 0.08
# Ink must stand this many noise deviations above the paper (JPEG ringing, grain).
NOISE_SIGMAS = 4.0
# Ink above this (on 0-1, after stretching) is surely ink, and marks its true edge
# (a blurred edge is at half strength where the ink ends).
STRONG_INK = 0.5
# Separate marks lighter than this fraction of the heaviest stroke are specks.
SPECK_FRACTION = 0.1
# Ink filling more than BLOB_FILL of a bounding box that covers more than BLOB_AREA of
# the image is a sheet of paper, not a digit.
BLOB_FILL = 0.7
BLOB_AREA = 0.25
# MNIST's stroke widths in the 20 px box, measured as _normalise_stroke does on 5,000
# training digits: about the 2nd and 94th percentile (thick pens fool the models more
# than thin ones), and the median a stroke outside is redrawn to (at STROKE_WORK px).
THIN_STROKE = 1.6
THICK_STROKE = 4.0
STROKE_TARGET = 2.7
STROKE_WORK = 80
# Paper darker than this (in shadow) is not brightened further.
DARKEST_PAPER = 0.1
# Images no bigger than this are digits already cut out, never photos.
SMALL_SIDE = 64
# The background is estimated on a copy this small.
BACKGROUND_SIDE = 48
# binary_erosion's default structure, made once (making it is a third of a small erosion's time).
FOUR_NEIGHBOURS = ndimage.generate_binary_structure(2, 1)
# EXIF orientations whose upright image swaps width and height.
TURNS_SIDEWAYS = (5, 6, 7, 8)
# The quantiles that tell the ink's polarity and an even background (_polarity).
POLARITY_QUANTILES = (0.01, 0.2, 0.5, 0.8, 0.99)
# A drawing's strokes are one ink: in the page's drawings, the commonest level after the
# paper's (the strokes' cores) holds 35-75% of the other pixels (measured with pens from the
# page's to twice as thick, and every smoothing); in a photo a shadow is a noisy gradient.
ONE_INK_SHARE = 0.25
# Drawings (the page's among them) take a cheaper path with the same result (_find_drawn_digit);
# MNIST_DIGITS_DRAWING_PATH=0 turns it off, to measure it against the general path
# (benchmarks/serve_load.py --paths).
DRAWING_PATH = os.environ.get("MNIST_DIGITS_DRAWING_PATH", "1") != "0"


def ink_bounds(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """The bounding box (top, bottom, left, right; bottom and right exclusive) of a mask's
    true pixels, or None when there are none."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _scaled_size(shape: tuple[int, ...], scale: float) -> tuple[int, int]:
    """Pillow's (width, height) for an array of `shape` scaled by `scale`, at least 1 px."""
    return max(1, round(shape[1] * scale)), max(1, round(shape[0] * scale))


def _resize(values: np.ndarray, size: tuple[int, int], resample: Image.Resampling) -> np.ndarray:
    """A float32 image resized to (width, height) by Pillow (anti-aliased for BOX, LANCZOS)."""
    return np.asarray(Image.fromarray(values, mode="F").resize(size, resample))


def _scale_to_unit(values: np.ndarray) -> np.ndarray:
    """Any integer or float pixel array -> float32 in [0, 1] by its type's range."""
    if values.dtype == np.bool_:
        return values.astype(np.float32)
    if np.issubdtype(values.dtype, np.integer):
        if values.dtype == np.uint8:
            return values.astype(np.float32) / 255.0
        top = float(values.max(initial=0))
        # 16-bit images use 0-65535; 32-bit "I" images from 16-bit files do too.
        scale = 255.0 if top <= 255 else 65535.0 if top <= 65535 else top
        return np.clip(values.astype(np.float32) / scale, 0.0, 1.0)
    values = values.astype(np.float32)
    if not np.all(np.isfinite(values)):
        raise InputImageError("image holds NaN or infinite values")
    top = float(values.max(initial=0))
    return np.clip(values / (255.0 if top > 1.0 else 1.0), 0.0, 1.0)


def _composite(gray: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Put a transparent image on paper that contrasts with what is drawn: black ink on
    a transparent canvas lands on white, white ink on black."""
    weight = alpha.sum()
    if weight == 0:
        return np.zeros_like(gray)
    drawn = float((gray * alpha).sum() / weight)
    paper = 1.0 if drawn < 0.5 else 0.0
    return gray * alpha + paper * (1.0 - alpha)


def _to_gray(image: Image.Image) -> np.ndarray:
    """Luminance in [0, 1] as float32; transparency composited onto paper; 16-bit
    images scaled by their own range (Pillow's "L" conversion would clip them)."""
    with decoder_errors():  # converting decodes too (a palette, a colour profile...)
        try:
            return _image_to_gray(image)
        except ValueError as error:  # a colour mode Pillow cannot convert
            raise InputImageError(f"unsupported colour mode {image.mode} ({first_line(error)}); "
                                  "export it as an ordinary PNG or JPEG") from None


def _image_to_gray(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode == "P":
        has_alpha = "transparency" in image.info or image.palette.mode == "RGBA"
        image = image.convert("RGBA" if has_alpha else "RGB")
        mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _scale_to_unit(np.asarray(image))
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        alpha = np.asarray(image.getchannel("A"), dtype=np.float32) / 255.0
        gray = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
        if alpha.min() >= 1.0:
            return gray
        return _composite(gray, alpha)
    if mode != "L":
        image = image.convert("L")
    return np.asarray(image, dtype=np.float32) / 255.0


def _array_to_gray(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        return _scale_to_unit(array)
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        values = _scale_to_unit(array)
        gray = values[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        if array.shape[-1] == 4:
            return _composite(gray, values[..., 3])
        return gray
    raise InputImageError(f"array of shape {array.shape} is not an image "
                          "(expected height x width, optionally x 3 or x 4 channels)")


def _shrink(gray: np.ndarray) -> np.ndarray:
    """At most WORKING_SIDE px on the longer side, by box averaging (anti-aliased)."""
    longer = max(gray.shape)
    if longer <= WORKING_SIDE:
        return gray
    image = Image.fromarray(gray, mode="F")
    if longer // WORKING_SIDE >= 2:
        image = image.reduce(longer // WORKING_SIDE)  # cheap whole-factor step first
    if max(image.size) > WORKING_SIDE:
        size = _scaled_size((image.height, image.width), WORKING_SIDE / max(image.size))
        image = image.resize(size, Image.Resampling.BOX)
    return np.asarray(image)


def _gray_from_source(source, budget: PixelBudget | None) -> tuple[np.ndarray, float, tuple[int, int]]:
    """Luminance at working size, how many of the original (upright) image's pixels one
    working pixel spans, and the original's (width, height) -- to give boxes in the
    image's own coordinates."""
    if isinstance(source, np.ndarray):
        if source.size == 0:
            raise InputImageError("empty array, not an image")
        size = (source.shape[1], source.shape[0])
        gray = _shrink(_array_to_gray(source))
    else:
        # The header's size, before a JPEG is decoded smaller; EXIF may turn it upright
        # (asked once decoding succeeded: decode has read the EXIF, safely, by then).
        header = source if isinstance(source, Image.Image) else open_image(source)
        size = header.size
        gray = _to_gray(decode(header, WORKING_SIDE, budget))
        if header.getexif().get(EXIF_ORIENTATION) in TURNS_SIDEWAYS:
            size = size[::-1]
    return gray, max(size) / max(gray.shape), size


def _quantiles(values: np.ndarray, fractions: tuple[float, ...], counts: np.ndarray | None = None) -> list[float]:
    """Nearest-rank quantiles of non-negative values (every image here is) by one partial
    sort (np.percentile is slow on small images). With `counts`: of `values` each repeated
    that many times (an image's levels and how many pixels hold each), the same numbers as
    for the pixels themselves."""
    if counts is not None:
        order = np.argsort(values, kind="stable")
        ends = np.cumsum(counts[order])  # the rank after the last pixel of each level, in order
        ranks = [round(f * (int(ends[-1]) - 1)) for f in fractions]
        return values[order[np.searchsorted(ends, ranks, side="right")]].tolist()
    # Non-negative float32 values are in the order of their bits read as int32, and NumPy
    # partitions integers about 1.4x faster than floats (which it orders NaN-aware).
    flat = np.ascontiguousarray(values, dtype=np.float32).ravel().view(np.int32)
    # Rank 0 is always asked for too: NumPy's partition for a single rank takes 30-50x
    # longer on arrays of many equal values -- a drawing's empty background (measured).
    ranks = sorted({0, *(round(f * (flat.size - 1)) for f in fractions)})
    ordered = np.partition(flat, ranks).view(np.float32)
    return [float(ordered[round(f * (flat.size - 1))]) for f in fractions]


def _polarity(quantiles: list[float], small: bool, flip: bool = False) -> tuple[bool, float | None, bool]:
    """From an image's POLARITY_QUANTILES: whether its ink is dark on light paper (ink is
    the tail of the histogram far from the background, the median -- or the other one,
    with `flip`); the paper's level once the ink is made bright when the paper is one
    exact level over half of the image, else None; and whether the histogram alone shows
    that paper to be a perfectly even background (a drawing, an MNIST digit). `small`:
    the image is a digit already cut out (at most SMALL_SIDE px)."""
    low, fifth, background, four_fifths, high = quantiles
    # Even: one value over half of the image -- and over 80% of a bigger one, which may
    # be a photo with a hard shadow (a small one is a digit already cut out, MNIST's
    # own among them: a third of those have ink on more than a fifth of their pixels).
    # A bigger one with more ink may still be a drawing: _judge_background tells.
    if (background - low > high - background) != flip:
        paper = 1.0 - background if background == high else None
        return True, paper, paper is not None and (small or fifth == background)
    paper = background if background == low else None
    return False, paper, paper is not None and (small or four_fifths == background)


def _eight_bit_levels(gray: np.ndarray) -> np.ndarray | None:
    """The image's levels 0-255 when it holds 8-bit levels only (k/255, as _to_gray makes
    them), else None."""
    levels = np.rint(gray * 255.0).astype(np.uint8)
    return levels if np.array_equal(levels.astype(np.float32) / 255.0, gray) else None


def _only_strokes(ink: np.ndarray, paper: float) -> bool:
    """Whether bright ink on paper of one exact level holds nothing wider than a third of
    the image (shade, a shadow, a table: what _uneven_background would take away) but
    the paper, exactly. The opening is the paper everywhere exactly when its erosion is
    (the dilation after it keeps any higher pixel; nothing is below the paper): half the work.
    Exact: Pillow's box average of one level is that level (checked for all 256)."""
    small, window = _background_sample(ink)
    return ndimage.grey_erosion(small, size=(window, window), mode="nearest").max() == np.float32(paper)


def _one_ink(histogram) -> bool:
    """Whether what is not paper is strokes of one ink and the antialiasing at their edges:
    8-bit levels only (an image with a _level_histogram, `histogram`), and the commonest level
    after the paper's (the strokes' cores) holds ONE_INK_SHARE of the other pixels. A photo's
    shadow is a noisy gradient."""
    if histogram is None:
        return False
    counts = np.sort(histogram[2])
    second = counts[-2] if counts.size > 1 else 0
    return second >= ONE_INK_SHARE * (counts.sum() - counts[-1])


def _judge_background(histogram, ink: np.ndarray, paper: float | None, even: bool) -> tuple[float | None, bool]:
    """From _polarity's paper and verdict: the level of a perfectly even background once
    the ink is made bright (else None), and whether the image is a photo (marks at its
    edge are a shadow or a table, not strokes). Paper of one exact level with nothing
    wide on it is even whatever share of the image the strokes cover; it is a drawing,
    a thick pen's, when they are one ink (_one_ink of the image's _level_histogram,
    `histogram`), else a photo with a narrow shadow at its edge, maybe. (Only an image
    bigger than SMALL_SIDE gets this far: a smaller one with one paper level is even.)"""
    if even:
        return paper, False
    if paper is None or not _only_strokes(ink, paper):
        return None, True
    return paper, not _one_ink(histogram)


def _level_histogram(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """For an image that holds 8-bit levels only (k/255, as _to_gray makes them: a JPEG
    photo, a PNG, a drawing): its levels 0-255, the levels that occur and how many pixels
    hold each. None for any other image, and for small ones: up to SMALL_SIDE px, sorting
    the pixels costs no more (28x28: 0.09 ms against 0.12)."""
    if max(gray.shape) <= SMALL_SIDE:
        return None
    levels = _eight_bit_levels(gray)
    if levels is None:
        return None
    counts = np.bincount(levels.ravel(), minlength=256)
    present = np.flatnonzero(counts)
    return levels, present, counts[present]


def _polarity_quantiles(gray: np.ndarray, histogram) -> list[float]:
    """_quantiles(gray, POLARITY_QUANTILES), from the image's _level_histogram when it has
    one: the same numbers, ~3x faster than sorting the pixels of a number's photo."""
    if histogram is None:
        return _quantiles(gray, POLARITY_QUANTILES)
    _, present, counts = histogram
    return _quantiles(present.astype(np.float32) / 255.0, POLARITY_QUANTILES, counts)


def _ink_bright(gray: np.ndarray, histogram, flip: bool = False) -> tuple[np.ndarray, bool, float | None, bool]:
    """The image with bright ink, whether it was dark ink on light paper, the level of a
    perfectly even background (else None) and whether the image is a photo (see
    _polarity and _judge_background). `histogram`: the image's _level_histogram."""
    on_paper, paper, even = _polarity(_polarity_quantiles(gray, histogram), max(gray.shape) <= SMALL_SIDE, flip)
    ink = 1.0 - gray if on_paper else gray
    return (ink, on_paper, *_judge_background(histogram, ink, paper, even))


def _background_sample(ink: np.ndarray) -> tuple[np.ndarray, int]:
    """A copy of bright ink at most BACKGROUND_SIDE px, and the window of the grey opening
    that takes the strokes off it: a third of its size."""
    height, width = ink.shape
    if max(height, width) > BACKGROUND_SIDE:
        small = _resize(ink, _scaled_size(ink.shape, BACKGROUND_SIDE / max(height, width)),
                        Image.Resampling.BOX)
    else:
        small = ink
    return small, max(3, max(small.shape) // 3)


def _uneven_background(ink: np.ndarray) -> np.ndarray:
    """The background under bright ink, at most BACKGROUND_SIDE px: a grey opening removes
    everything narrower than a third of the image (the strokes) and leaves the slowly
    varying background -- grey paper, uneven light, a shadow. Done on a small copy:
    cheap at any size."""
    small, window = _background_sample(ink)
    return ndimage.grey_opening(small, size=(window, window), mode="nearest")


def _remove_background(ink: np.ndarray, on_paper: bool, even: float | None) -> np.ndarray:
    """Take the paper away: the even background's level, or the uneven one's estimate
    (_uneven_background, upsampled to the image's size).

    On paper, light multiplies: ink darkens the paper by a fraction whatever the light
    falling there, so the ink is measured as that fraction (1 - pixel / paper)."""
    if even is not None:
        background = np.float32(even)
    else:
        background = _uneven_background(ink)
        if background.shape != ink.shape:
            background = _resize(background, ink.shape[::-1], Image.Resampling.BILINEAR)
    flat = np.maximum(ink - background, 0.0)
    if on_paper:
        flat /= np.maximum(1.0 - background, DARKEST_PAPER)
    return flat


def _normalise_ink(flat: np.ndarray, even: bool, counts: np.ndarray | None = None) -> np.ndarray | None:
    """Cut the noise floor and stretch the ink to 0-1; None if there is no ink above
    the noise. The noise level comes from the background pixels (most of the image),
    so a clean image -- an MNIST digit -- is left as it is. With `counts`, `flat` holds
    an image's levels, each in that many pixels (see _quantiles)."""
    if even:  # the background is exactly 0 now: no noise to measure
        background, noise, peak = 0.0, 0.0, _quantiles(flat, (0.999,), counts)[0]
    else:
        background, peak = _quantiles(flat, (0.5, 0.999), counts)
        noise = 1.4826 * _quantiles(np.abs(flat - background), (0.5,), counts)[0]  # robust sigma
    floor = max(background + NOISE_SIGMAS * noise, 0.5 / 255)
    # The ink level: the top of the clearly inked pixels (those above a third of the
    # near-maximum), not of everything above the floor -- faint leftovers of uneven
    # light can outnumber the ink. For an MNIST digit it is 1: nothing changes.
    inked = flat > max(floor, peak / 3)
    ink_pixels = flat[inked]
    if ink_pixels.size == 0:
        return None
    level = _quantiles(ink_pixels, (0.99,), None if counts is None else counts[inked])[0]
    if level - floor < max(MIN_CONTRAST, NOISE_SIGMAS * noise):
        return None
    return np.clip((flat - floor) / (level - floor), 0.0, 1.0)


def _digit_mask(ink: np.ndarray, photo: bool, speck_fraction: float = SPECK_FRACTION) -> np.ndarray | None:
    """The strong ink that makes the digit: connected marks, without specks lighter
    than `speck_fraction` of the heaviest mark. In a photo, marks touching the image's edge (a shadow, the
    table around the paper) are dropped when there is ink away from the edge."""
    strong = ink > STRONG_INK
    labels, count = ndimage.label(strong, structure=np.ones((3, 3)))
    if count == 0:
        return None
    if count == 1:
        return strong
    # Summed over the strong pixels only (a tenth of the image), in the same order: the same sums.
    mass = np.bincount(labels[strong], weights=ink[strong], minlength=count + 1)
    if photo:
        at_edge = np.zeros(count + 1, dtype=bool)
        at_edge[np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])] = True
        if (mass[~at_edge] > 0).any():
            mass[at_edge] = 0.0
    keep = mass >= speck_fraction * mass.max()
    keep[0] = False
    return keep[labels]


def _is_blob(mask: np.ndarray) -> bool:
    """A big filled shape, not pen strokes: the paper itself, read with the wrong
    polarity (a sheet on a dark table, smaller than the table)."""
    top, bottom, left, right = ink_bounds(mask)
    box_area = (bottom - top) * (right - left)
    return box_area > BLOB_AREA * mask.size and mask.sum() > BLOB_FILL * box_area


def _find_digit(gray: np.ndarray, histogram, flip: bool = False, speck_fraction: float = SPECK_FRACTION):
    """(ink, flat, mask): the image with bright ink, with the background taken away and
    the ink stretched to 0-1 (None if there is no ink), and the digit's strong ink.
    `histogram`: the image's _level_histogram."""
    ink, on_paper, even, photo = _ink_bright(gray, histogram, flip)
    flat = _normalise_ink(_remove_background(ink, on_paper, even), even is not None)
    mask = None if flat is None else _digit_mask(flat, photo, speck_fraction)
    return ink, flat, mask


def _find_drawn_digit(gray: np.ndarray, histogram, speck_fraction: float = SPECK_FRACTION):
    """What _find_digit(gray) finds, bit for bit, found cheaply in a drawing: an 8-bit
    image (with a _level_histogram, `histogram`) that is at least half one exact level, the
    paper, with nothing but strokes on it (no shade for the background estimate to take
    away). Then every step before the digit's mask is a function of a pixel's level
    alone: done once per level that occurs, quantiles taken from its histogram instead
    of sorting pixels. None for any other image (the general path's)."""
    if histogram is None:
        return None
    levels, present, counts = histogram
    grays = present.astype(np.float32) / 255.0
    on_paper, paper, even = _polarity(_polarity_quantiles(gray, histogram), small=False)
    if paper is None:  # the paper is not one exact level
        return None
    ink = 1.0 - gray if on_paper else gray
    even, photo = _judge_background(histogram, ink, paper, even)
    if even is None:  # shade or a second paper level: no drawing
        return None
    flats = _normalise_ink(_remove_background(1.0 - grays if on_paper else grays, on_paper, even), True, counts)
    if flats is None:
        return ink, None, None
    flat_of_level = np.zeros(256, dtype=np.float32)
    flat_of_level[present] = flats
    flat = flat_of_level.take(levels)  # as flat_of_level[levels], in half the time
    return ink, flat, _digit_mask(flat, photo, speck_fraction)


def _ink_box(mask: np.ndarray) -> tuple[slice, slice]:
    """The bounding box of the digit's strong ink, with room around it for its faint,
    blurred edge."""
    top, bottom, left, right = ink_bounds(mask)
    margin = 2 * (1 + (max(bottom - top, right - left) - 1) // BOX)  # ~2 output px
    return (slice(max(top - margin, 0), bottom + margin),
            slice(max(left - margin, 0), right + margin))


def _stroke_width(ink: np.ndarray) -> float:
    """Mean stroke width in pixels: twice the area over the boundary length (the
    boundary: ink pixels with a 4-neighbour outside the ink)."""
    mask = ink > 0.5
    inner = ndimage.binary_erosion(mask, FOUR_NEIGHBOURS)  # outside the image counts as no ink
    area = np.count_nonzero(mask)
    return 2.0 * area / max(area - np.count_nonzero(inner), 1)


def _strong_extent(digit: np.ndarray) -> int:
    """The longer side of the strong ink's bounding box: what becomes BOX px."""
    bounds = ink_bounds(digit > STRONG_INK)
    if bounds is None:
        return max(digit.shape)
    top, bottom, left, right = bounds
    return max(bottom - top, right - left)


def _erode(values: np.ndarray, disk: np.ndarray) -> np.ndarray:
    """ndimage.grey_erosion(values, footprint=disk, mode="constant", cval=0.0), value for
    value, at a quarter of its cost: the minimum over the disk's rows of 1-D minimum filters
    as wide as each row (a 2-D footprint is visited pixel by pixel, ~1 ms a thick digit)."""
    radius = disk.shape[0] // 2
    height, width = values.shape
    padded = np.pad(values, radius)  # outside the image counts as no ink
    by_width: dict[int, np.ndarray] = {}
    eroded = None
    for offset, row in enumerate(disk):
        row_width = int(row.sum())
        if row_width not in by_width:
            by_width[row_width] = ndimage.minimum_filter1d(padded, row_width, axis=1, mode="constant", cval=0.0)
        shifted = by_width[row_width][offset:offset + height, radius:radius + width]
        eroded = shifted.copy() if eroded is None else np.minimum(eroded, shifted, out=eroded)
    return eroded


def _normalise_stroke(cropped: np.ndarray) -> np.ndarray:
    """Thin a marker-thick digit or thicken a hairline one towards MNIST's pen.

    Widths are measured with the digit drawn STROKE_WORK px tall (whatever its own
    resolution) and given in pixels of the 20 px box. MNIST digits that are not
    outliers (THIN_STROKE-THICK_STROKE holds about 92% of them) are left alone; others
    are redrawn at that size with a grey erosion or dilation of the width difference.
    """
    scale = STROKE_WORK / _strong_extent(cropped)
    work = _resize(cropped, _scaled_size(cropped.shape, scale), Image.Resampling.BILINEAR)
    width = _stroke_width(work) * BOX / STROKE_WORK
    if THIN_STROKE <= width <= THICK_STROKE:
        return cropped
    change = abs(width - STROKE_TARGET) * STROKE_WORK / BOX  # in pixels of `work`
    radius = max(1, round(change / 2))
    disk = np.hypot(*np.mgrid[-radius:radius + 1, -radius:radius + 1]) <= radius
    if width > THICK_STROKE:
        work = _erode(work, disk)
        # Erosion keeps the darkest of each neighbourhood: on a noisy photo, greyer ink.
        if work.max() > 0:
            work = np.clip(work / _quantiles(work[work > 0], (0.99,))[0], 0.0, 1.0)
    else:
        work = ndimage.grey_dilation(np.pad(work, radius), footprint=disk)
    if not (work > STRONG_INK).any():
        return cropped  # erosion ate it all: keep the original
    top, bottom, left, right = ink_bounds(work > 0)
    return np.ascontiguousarray(work[top:bottom, left:right])


def _fit_box(digit: np.ndarray) -> np.ndarray:
    """Scale so the strong ink's longer side is BOX px, keeping the aspect ratio,
    anti-aliased; the faint edge comes along outside it, as in MNIST (where the ink
    above half strength spans exactly 20 px in 98% of digits)."""
    resized = _resize(digit, _scaled_size(digit.shape, BOX / _strong_extent(digit)), Image.Resampling.LANCZOS)
    fitted = np.clip(resized, 0.0, 1.0)
    fitted[fitted < 0.5 / 255] = 0.0  # resampling ripples, invisible in 8 bits
    bounds = ink_bounds(fitted > 0)
    if bounds is None:
        return fitted
    top, bottom, left, right = bounds
    return fitted[top:bottom, left:right]


def _centre(fitted: np.ndarray) -> np.ndarray:
    """Place in SIDE x SIDE with the centre of mass at MNIST's (14, 14), counting from
    0, by a whole-pixel shift as MNIST did. A digit whose mass sits far to one side is
    kept in the frame by its strong ink; only the faint edge may be cut."""
    height, width = fitted.shape
    row_mass, col_mass = ndimage.center_of_mass(fitted)
    first_row, end_row, first_col, end_col = ink_bounds(fitted > STRONG_INK) or (0, height, 0, width)
    top = min(max(round(SIDE / 2 - row_mass), -first_row), SIDE - end_row)
    left = min(max(round(SIDE / 2 - col_mass), -first_col), SIDE - end_col)
    out = np.zeros((SIDE, SIDE), dtype=np.float32)
    source = fitted[max(-top, 0):SIDE - top, max(-left, 0):SIDE - left]
    out[max(top, 0):max(top, 0) + source.shape[0], max(left, 0):max(left, 0) + source.shape[1]] = source
    return out


@dataclass(frozen=True)
class Ink:
    """An image's ink, found once: what every digit in it is cut from."""

    flat: np.ndarray   # bright ink on black, 0-1: background, uneven light and noise taken away
    mask: np.ndarray   # the strong ink worth reading (specks and marks at a photo's edge dropped)
    scale: float       # pixels of the original (upright) image per pixel of `flat`
    size: tuple[int, int]  # the original (upright) image's width and height


def find_ink(source, steps: dict | None = None, speck_fraction: float = SPECK_FRACTION,
             budget: PixelBudget | None = None) -> Ink:
    """Decode `source` and find its ink the way MNIST digits need it: upright, grey,
    transparency on paper, polarity, paper and uneven light taken away, noise cut.
    Records the "gray", "ink" and "flat" images in `steps` when given. Raises
    InputImageError for unreadable images, NoDigitFound for ones with no ink in them. Marks
    lighter than `speck_fraction` of the heaviest are specks, left out of the mask.
    `budget` (decode.PixelBudget) pays for the pixels decoded, when given."""
    gray, scale, size = _gray_from_source(source, budget)
    if steps is not None:
        steps["gray"] = gray
    histogram = _level_histogram(gray)
    drawn = _find_drawn_digit(gray, histogram, speck_fraction) if DRAWING_PATH else None
    ink, flat, mask = drawn or _find_digit(gray, histogram, speck_fraction=speck_fraction)
    if mask is not None and _is_blob(mask):
        flipped = _find_digit(gray, histogram, flip=True, speck_fraction=speck_fraction)
        if flipped[2] is not None and not _is_blob(flipped[2]):
            ink, flat, mask = flipped
    if steps is not None:
        steps["ink"] = ink
    if flat is None:
        raise NoDigitFound("no digit found (the image is blank or has almost no contrast)")
    if steps is not None:
        steps["flat"] = flat
    if mask is None:
        raise NoDigitFound("no digit found (no ink left after removing the background)")
    return Ink(flat, mask, scale, size)


def prepare_piece(flat: np.ndarray, mask: np.ndarray, steps: dict | None = None) -> np.ndarray:
    """One digit's ink -> 28x28 like MNIST: cropped to its strong ink (`mask`) with
    room for the blurred edge, pen width normalised, longer side fitted to 20 px,
    centred by mass. Records "crop", "stroke", "fit", "prepared" in `steps` when given."""
    cropped = flat[_ink_box(mask)]
    if steps is not None:
        steps["crop"] = cropped
    cropped = _normalise_stroke(cropped)
    if steps is not None:
        steps["stroke"] = cropped
    fitted = _fit_box(cropped)
    if steps is not None:
        steps["fit"] = fitted
    if fitted.sum() <= 0:
        raise NoDigitFound("no digit found (the ink vanished when scaled to 20 px)")
    prepared = _centre(fitted / fitted.max())
    if steps is not None:
        steps["prepared"] = prepared
    return prepared


def prepare(source, return_steps: bool = False, budget: PixelBudget | None = None):
    """Prepare an image of one handwritten digit like an MNIST digit.

    `source`: a path, bytes, a PIL image or a numpy array (height x width, optionally
    with 3 or 4 channels; uint8, uint16, bool or float in [0, 1]). Returns a (28, 28)
    float32 array in [0, 1], white ink on black -- with `return_steps=True`, also an
    ordered dict of the intermediate images (step name -> 2-D array) for display.
    Raises InputImageError for unreadable images, NoDigitFound for ones with no digit in them.
    `budget` (decode.PixelBudget) pays for the pixels decoded, when given.
    """
    steps: OrderedDict[str, np.ndarray] | None = OrderedDict() if return_steps else None
    ink = find_ink(source, steps, budget=budget)
    prepared = prepare_piece(ink.flat, ink.mask, steps)
    return (prepared, steps) if return_steps else prepared


def to_png(prepared: np.ndarray) -> bytes:
    """PNG bytes of a prepared 28x28 image (white ink on black), for saving and display."""
    pixels = np.round(np.clip(prepared, 0.0, 1.0) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def prepare_many(sources, budget: PixelBudget | None = None) -> list[tuple[np.ndarray | None, str | None]]:
    """`prepare` each source: (prepared, None) or (None, the one-line error). Plain
    values in, plain values out, so it runs as well in a worker process. `budget`
    (decode.PixelBudget) pays for all of them: once spent, the rest are refused."""
    results = []
    for source in sources:
        try:
            results.append((prepare(source, budget=budget), None))
        except InputImageError as error:
            results.append((None, str(error)))
    return results
