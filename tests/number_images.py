"""Images of handwritten numbers composed from MNIST TEST digits only (never training or
validation digits), for the `read` tests and benchmarks/read_numbers.py.

    number = compose_number(test_images, test_labels, rng, digits=4, spacing="touching", style="photo")
    number.image, number.text, number.singles  # singles: each digit alone, rendered alike

Spacing: "apart" (gaps of 3-11 px at MNIST's scale, 15-55% of a digit's height) or
"touching" (from 1 px apart to overlapping by 3 px), or a number of pixels. Each digit gets its own size (+-15%), slant (+-0.3) and baseline jitter.
Style: "canvas" (black on white, as the page exports a drawing) or "photo" (tinted paper,
uneven light, grey ink, noise, blur, a small rotation, JPEG).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

SPACINGS = ("apart", "touching")
STYLES = ("canvas", "photo")
# The digits are composed at MNIST's scale, then drawn this many times larger.
UPSCALE = 4


@dataclass
class NumberImage:
    image: np.ndarray          # uint8, height x width (canvas) or x 3 (photo); or JPEG bytes
    text: str
    singles: list              # each digit alone, rendered the same way


def _digit_ink(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An MNIST digit's ink (0-1), cropped, resized by +-15% and slanted."""
    ink = image.astype(np.float32) / 255.0
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    ink = np.pad(ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1], 4)
    scale = rng.uniform(0.85, 1.15)
    slant = rng.uniform(-0.3, 0.3)
    height, width = ink.shape
    picture = Image.fromarray(ink, mode="F")
    sheared_width = width + int(abs(slant) * height) + 1
    # Pillow maps each output pixel back: x_in = x_out + slant * y_out + shift.
    shift = -max(slant, 0.0) * height
    picture = picture.transform((sheared_width, height), Image.Transform.AFFINE,
                                (1, slant, shift, 0, 1, 0), resample=Image.Resampling.BILINEAR)
    picture = picture.resize((max(1, round(sheared_width * scale)), max(1, round(height * scale))),
                             Image.Resampling.BILINEAR)
    ink = np.clip(np.asarray(picture), 0.0, 1.0)
    rows, cols = np.flatnonzero((ink > 0.05).any(axis=1)), np.flatnonzero((ink > 0.05).any(axis=0))
    return ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def _place(inks: list[np.ndarray], spacing: str, rng: np.random.Generator):
    """Put the digits side by side on one canvas; returns it and each digit's own canvas."""
    height = max(ink.shape[0] for ink in inks) + 16
    positions, x = [], 8
    for index, ink in enumerate(inks):
        if index:
            if isinstance(spacing, int):
                x += spacing
            else:
                x += int(rng.integers(3, 12)) if spacing == "apart" else int(rng.integers(-3, 2))
        top = (height - ink.shape[0]) // 2 + int(rng.integers(-2, 3))
        positions.append((top, x))
        x += ink.shape[1]
    width = x + 8
    canvas = np.zeros((height, width), dtype=np.float32)
    singles = []
    for ink, (top, left) in zip(inks, positions):
        region = canvas[top:top + ink.shape[0], left:left + ink.shape[1]]
        np.maximum(region, ink, out=region)
        alone = np.zeros((height, ink.shape[1] + 16), dtype=np.float32)
        alone[top:top + ink.shape[0], 8:8 + ink.shape[1]] = ink
        singles.append(alone)
    return canvas, singles


def render(ink: np.ndarray, style: str, seed: int):
    """Ink (0-1, MNIST scale) -> what a person would send: a canvas export (uint8 array,
    black on white) or a photo (JPEG bytes)."""
    rng = np.random.default_rng(seed)
    big = Image.fromarray(ink, mode="F").resize((ink.shape[1] * UPSCALE, ink.shape[0] * UPSCALE),
                                                 Image.Resampling.BILINEAR)
    ink = np.clip(np.asarray(big), 0.0, 1.0)
    if style == "canvas":
        return np.round(255 * (1.0 - ink)).astype(np.uint8)
    height, width = ink.shape
    paper = rng.uniform(0.75, 0.95, size=3)                         # tinted paper
    ys, xs = np.mgrid[0:height, 0:width] / max(height, width)
    light = 1.0 - 0.35 * (rng.uniform(0.3, 1) * xs + rng.uniform(0.0, 0.5) * ys)   # uneven light
    pen = rng.uniform(0.05, 0.3, size=3)
    colour = (paper * (1 - ink[..., None]) + pen * ink[..., None]) * light[..., None]
    colour += rng.normal(0, 0.02, size=colour.shape)                # sensor noise
    photo = Image.fromarray(np.round(255 * np.clip(colour, 0, 1)).astype(np.uint8), mode="RGB")
    photo = photo.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))
    fill = tuple(int(255 * c * 0.9) for c in paper)
    photo = photo.rotate(rng.uniform(-3, 3), resample=Image.Resampling.BILINEAR, expand=False, fillcolor=fill)
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=int(rng.integers(70, 92)))
    return buffer.getvalue()


def compose_number(images: np.ndarray, labels: np.ndarray, rng: np.random.Generator, digits: int | str,
                   spacing: str | int, style: str, singles: bool = True) -> NumberImage:
    """A number of `digits` random MNIST test digits (or of these digits, given as text),
    composed with `spacing` (or this many pixels between digits at MNIST's scale) and rendered;
    with `singles`, each digit alone too (rendered the same way; most of the time it takes)."""
    if isinstance(digits, str):
        chosen = [rng.choice(np.flatnonzero(labels == int(digit))) for digit in digits]
    else:
        chosen = rng.integers(0, len(images), size=digits)
    inks = [_digit_ink(images[i], rng) for i in chosen]
    canvas, alone = _place(inks, spacing, rng)
    seed = int(rng.integers(2**31))
    return NumberImage(render(canvas, style, seed), "".join(str(int(labels[i])) for i in chosen),
                       [render(single, style, seed) for single in alone] if singles else [])
