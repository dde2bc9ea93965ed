"""An independent set of photo-like digits, to measure `prepare` on inputs it was not built from.

It shares no code and no physics with mnist_digits.preprocess (and never imports it):
ink absorbs light (Beer-Lambert, per colour channel) instead of blending linearly; the
page is ruled or squared paper, lit unevenly with a soft shadow; the camera sees it in
perspective, out of focus, with its own gamma, shot and read noise, and JPEG. The digits
come from MNIST's test images AND from handwriting-style fonts from Debian's font packages
(writers other than MNIST's), slanted, rotated, thickened and elastically distorted.

Two parts, made alike from disjoint sources:
  "development": MNIST test digits with even indices, fonts DEVELOPMENT_FONTS, seed 0.
      May be looked at while changing `prepare`.
  "reporting": MNIST test digits with odd indices, fonts REPORTING_FONTS, seed 1.
      For the README's number only: never used to tune anything.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from scipy import ndimage

FONTS = Path("/usr/share/fonts")
# Debian packages: fonts-dkg-handwriting fonts-rufscript fonts-humor-sans fonts-comic-neue
# fonts-breip fonts-dancingscript fonts-sjfonts (installed by .ci/run).
DEVELOPMENT_FONTS = ["truetype/fifthhorseman/dkg.ttf", "truetype/rufscript/Rufscript010.ttf",
                     "truetype/humor-sans/Humor-Sans.ttf", "opentype/comic-neue/ComicNeue-Regular.otf"]
REPORTING_FONTS = ["truetype/breip/Breip.ttf", "opentype/dancingscript/DancingScript-Regular.otf",
                   "truetype/sjfonts/Delphine.ttf", "truetype/sjfonts/SteveHand.ttf"]
PARTS = {"development": (0, DEVELOPMENT_FONTS), "reporting": (1, REPORTING_FONTS)}


def missing_fonts() -> list[str]:
    return [name for name in DEVELOPMENT_FONTS + REPORTING_FONTS if not (FONTS / name).is_file()]


@dataclass
class Sample:
    source: str  # "mnist" or the font file's name
    data: bytes  # a JPEG, as a phone would send it
    label: int


# --- the digit as ink coverage (0-1, 1 = full ink) -----------------------------------------


def mnist_ink(digit: np.ndarray, height: int) -> np.ndarray:
    """An MNIST digit (white on black uint8) scaled up, cropped to its ink."""
    rows, cols = np.nonzero(digit > 30)
    crop = digit[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    width = max(int(round(height * crop.shape[1] / crop.shape[0])), 2)
    big = Image.fromarray(crop).resize((width, height), Image.Resampling.LANCZOS)
    return np.clip(np.asarray(big, np.float32) / 255.0, 0, 1)


def font_ink(font_file: Path, digit: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """`digit` written in a font: thickened or not, slanted, cropped to its ink."""
    size = height * 2
    font = ImageFont.truetype(str(font_file), size)
    canvas = Image.new("L", (size * 2, size * 2), 0)
    stroke = int(rng.integers(0, max(size // 30, 1) + 1))
    ImageDraw.Draw(canvas).text((size // 2, size // 4), str(digit), font=font, fill=255,
                                stroke_width=stroke, stroke_fill=255)
    slant = float(rng.uniform(-0.25, 0.25))  # x' = x + slant * y
    canvas = canvas.transform(canvas.size, Image.Transform.AFFINE, (1, slant, -slant * size, 0, 1, 0),
                              Image.Resampling.BILINEAR)
    ink = np.asarray(canvas, np.float32) / 255.0
    rows, cols = np.nonzero(ink > 0.1)
    ink = ink[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    scale = height / ink.shape[0]
    return np.clip(ndimage.zoom(ink, scale, order=1), 0, 1)


def elastic(ink: np.ndarray, rng: np.random.Generator, strength: float = 0.06) -> np.ndarray:
    """A smooth random displacement of up to `strength` of the digit's height: a writer's
    wobble (a 4x4 grid of random moves, interpolated)."""
    pad = max(ink.shape) // 6
    ink = np.pad(ink, pad)
    height, width = ink.shape
    dy, dx = (ndimage.zoom(rng.uniform(-1, 1, (4, 4)), (height / 4, width / 4), order=3)[:height, :width]
              for _ in range(2))
    rows, cols = np.mgrid[0:height, 0:width]
    return ndimage.map_coordinates(ink, [rows + dy * strength * height, cols + dx * strength * height], order=1)


def rotated(ink: np.ndarray, degrees: float) -> np.ndarray:
    return ndimage.rotate(ink, degrees, reshape=True, order=1)


# --- the page and the camera ------------------------------------------------------------------


def paper_lines(shape, rng: np.random.Generator, spacing: float) -> np.ndarray:
    """Line density 0-1 of ruled (horizontal lines) or squared paper, or none."""
    kind = rng.choice(["plain", "ruled", "squared"])
    lines = np.zeros(shape, np.float32)
    if kind == "plain":
        return lines
    offset = rng.uniform(0, spacing)
    rows = np.arange(shape[0])[:, None]
    lines = np.maximum(lines, (np.abs((rows - offset) % spacing) < 1.2).astype(np.float32))
    if kind == "squared":
        cols = np.arange(shape[1])[None, :]
        lines = np.maximum(lines, (np.abs((cols - offset) % spacing) < 1.2).astype(np.float32))
    return lines * rng.uniform(0.25, 0.6)


def light(shape, rng: np.random.Generator) -> np.ndarray:
    """Illumination: a gentle gradient, and half the time a soft-edged shadow."""
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]] / max(shape)
    angle = rng.uniform(0, 2 * np.pi)
    illumination = 0.85 + 0.15 * np.cos(angle) * (cols - 0.5) + 0.15 * np.sin(angle) * (rows - 0.5)
    if rng.random() < 0.5:
        edge_angle = rng.uniform(0, 2 * np.pi)
        distance = np.cos(edge_angle) * (cols - 0.5) + np.sin(edge_angle) * (rows - 0.5) - rng.uniform(-0.3, 0.1)
        softness = rng.uniform(0.02, 0.08)
        illumination *= 1 - rng.uniform(0.25, 0.5) / (1 + np.exp(-distance / softness))
    return illumination


def perspective(image: Image.Image, rng: np.random.Generator, amount: float = 0.08) -> Image.Image:
    """The page seen from a little off-axis: each corner moved by up to `amount` of the size."""
    width, height = image.size
    corners = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float64)
    moved = corners + rng.uniform(-amount, amount, (4, 2)) * [width, height]
    # Solve for the 8 coefficients mapping output (moved) corners to input corners.
    matrix, target = [], []
    for (x, y), (u, v) in zip(moved, corners):
        matrix.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        matrix.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        target += [u, v]
    coefficients = np.linalg.solve(np.array(matrix), np.array(target))
    return image.transform(image.size, Image.Transform.PERSPECTIVE, tuple(coefficients),
                           Image.Resampling.BICUBIC, fillcolor=tuple(int(c) for c in image.getpixel((0, 0))))


def photograph(ink: np.ndarray, rng: np.random.Generator) -> bytes:
    """Ink on paper, lit, photographed: an RGB JPEG."""
    digit_height = ink.shape[0]
    side = int(digit_height * rng.uniform(1.6, 2.6))
    height, width = max(side, int(ink.shape[0] * 1.35)), max(side, int(ink.shape[1] * 1.35))
    page_ink = np.zeros((height, width), np.float32)
    margin = int(0.12 * side)  # clear of the edges the perspective moves
    top = int(rng.integers(margin, max(height - ink.shape[0] - margin, margin + 1)))
    left = int(rng.integers(margin, max(width - ink.shape[1] - margin, margin + 1)))
    region = page_ink[top:top + ink.shape[0], left:left + ink.shape[1]]
    region[...] = ink[:region.shape[0], :region.shape[1]]

    paper = np.array([rng.uniform(0.85, 1.0), rng.uniform(0.83, 0.98), rng.uniform(0.75, 0.95)])
    line_colour = np.array([0.9, 0.6, 0.3])  # absorbs red most: light blue lines
    pen = rng.choice(["black", "blue", "pencil"])
    absorbance = {"black": np.array([2.5, 2.5, 2.3]), "blue": np.array([2.2, 1.6, 0.6]),
                  "pencil": np.array([0.9, 0.9, 0.9])}[pen] * rng.uniform(0.8, 1.2)
    lines = paper_lines(page_ink.shape, rng, spacing=digit_height * rng.uniform(0.7, 1.1))
    optical_density = page_ink[..., None] * absorbance + lines[..., None] * line_colour
    reflected = paper * np.exp(-optical_density) * light(page_ink.shape, rng)[..., None]

    image = Image.fromarray(np.uint8(np.clip(reflected, 0, 1) * 255))
    image = perspective(image, rng)
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.8)))  # focus
    linear = np.asarray(image, np.float32) / 255.0
    photons = rng.uniform(150, 800)  # at full white: fewer in dim light, more noise
    noisy = rng.poisson(linear * photons) / photons + rng.normal(0, 0.01, linear.shape)
    encoded = np.clip(noisy, 0, 1) ** rng.uniform(0.7, 1.4)  # the camera's tone curve
    buffer = io.BytesIO()
    Image.fromarray(np.uint8(np.clip(encoded, 0, 1) * 255)).save(
        buffer, "JPEG", quality=int(rng.integers(40, 90)))
    return buffer.getvalue()


def distorted(ink: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.clip(rotated(elastic(ink, rng), float(rng.uniform(-10, 10))), 0, 1)


def photo_like_set(part: str, mnist_images: np.ndarray, mnist_labels: np.ndarray,
                   mnist_count: int = 300, per_font_digit: int = 5) -> list[Sample]:
    """The part's samples: `mnist_count` MNIST test digits (even indices for "development",
    odd for "reporting", spread over the whole test set) and `per_font_digit` of each digit
    in each of the part's fonts that is installed."""
    seed, fonts = PARTS[part]
    rng = np.random.default_rng(seed)
    parity = seed  # 0: even indices, 1: odd
    picks = np.linspace(0, len(mnist_images) // 2 - 1, mnist_count).round().astype(int) * 2 + parity
    samples = []
    for index in picks:
        ink = distorted(mnist_ink(mnist_images[index], int(rng.integers(32, 100))), rng)
        samples.append(Sample("mnist", photograph(ink, rng), int(mnist_labels[index])))
    for name in fonts:
        if not (FONTS / name).is_file():
            continue
        for digit in range(10):
            for _ in range(per_font_digit):
                ink = distorted(font_ink(FONTS / name, digit, int(rng.integers(32, 100)), rng), rng)
                samples.append(Sample(Path(name).name, photograph(ink, rng), digit))
    return samples

