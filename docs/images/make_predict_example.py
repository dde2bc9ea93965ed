"""Make the README's "Use it on your own digits" example: a phone-photo-like image of a
handwritten digit, what `prepare` makes of it step by step, and what a plain resize
makes of it, with the model's answer for each.

    .venv/bin/python docs/images/make_predict_example.py MODEL

Writes, next to this script:
    predict-example-photo.jpg        the input: blue pen on cream paper, uneven light, JPEG
    predict-example-prepared.png     the 28x28 the model sees (as --save-prepared writes it)
    predict-example-steps.png        the steps of the preparation, enlarged, side by side
    predict-example-plain.png        a plain resize of the whole photo to 28x28, enlarged
The digit is an MNIST test digit drawn large, so its true label is known.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageOps
from scipy import ndimage

HERE = Path(__file__).resolve().parent
TEST_INDEX = 23  # an MNIST test "5"
TILE = 140


def photo_of(digit: np.ndarray, seed: int = 0) -> bytes:
    """A 640x480 'photo': the digit drawn 260 px tall with a ballpoint pen, off-centre,
    turned a little, on cream paper lit from one side, with sensor noise, as JPEG."""
    rng = np.random.default_rng(seed)
    ink = Image.fromarray(digit).resize((260, 260), Image.Resampling.BICUBIC).rotate(-6, Image.Resampling.BICUBIC)
    ink = ndimage.grey_dilation(np.asarray(ink, np.float32) / 255, size=(3, 3))
    coverage = np.zeros((480, 640), np.float32)
    coverage[120:380, 300:560] = np.clip(ink, 0, 1)
    rows, cols = np.mgrid[0:480, 0:640]
    light = 0.5 + 0.45 * (cols / 640) * (0.6 + 0.4 * rows / 480)
    cream, blue = np.array([0.96, 0.93, 0.86]), np.array([0.12, 0.16, 0.45])
    rgb = (coverage[..., None] * blue + (1 - coverage[..., None]) * cream) * light[..., None]
    rgb += rng.normal(0, 0.015, rgb.shape)
    buffer = io.BytesIO()
    Image.fromarray(np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)).save(buffer, "JPEG", quality=82)
    return buffer.getvalue()


def tile(step: np.ndarray, title: str) -> Image.Image:
    values = np.asarray(step, np.float32)
    if values.ndim == 3:
        image = Image.fromarray(values.astype(np.uint8)).convert("RGB")
    else:
        scale = 255.0 if values.max() <= 1.0 else 1.0
        image = Image.fromarray(np.round(np.clip(values * scale, 0, 255)).astype(np.uint8)).convert("RGB")
    resample = Image.Resampling.NEAREST if max(image.size) <= 80 else Image.Resampling.LANCZOS
    image = ImageOps.pad(image, (TILE, TILE), method=resample, color=(40, 40, 40))
    framed = Image.new("RGB", (TILE, TILE + 18), "white")
    framed.paste(image, (0, 18))
    ImageDraw.Draw(framed).text((4, 3), title, fill="black")
    return framed


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    from mnist_digits.data import load_mnist
    from mnist_digits.predict import Predictor
    from mnist_digits.preprocess import load_image, prepare, to_png

    data = load_mnist(progress=False)
    digit, label = data.x_test[TEST_INDEX], int(data.y_test[TEST_INDEX])
    photo = photo_of(digit)
    (HERE / "predict-example-photo.jpg").write_bytes(photo)
    prepared, steps = prepare(photo, return_steps=True)
    (HERE / "predict-example-prepared.png").write_bytes(to_png(prepared))
    tiles = [tile(np.asarray(load_image(photo)), "input")]
    tiles += [tile(image, name) for name, image in steps.items()]
    strip = Image.new("RGB", (len(tiles) * (TILE + 6), TILE + 18), "white")
    for index, image in enumerate(tiles):
        strip.paste(image, (index * (TILE + 6), 0))
    strip.save(HERE / "predict-example-steps.png")

    plain = ImageOps.invert(load_image(photo).convert("L")).resize((28, 28), Image.Resampling.LANCZOS)
    plain.resize((TILE, TILE), Image.Resampling.NEAREST).save(HERE / "predict-example-plain.png")

    predictor = Predictor.from_path(sys.argv[1])
    for name, image in [("prepared", prepared), ("plain resize", np.asarray(plain, np.float32) / 255)]:
        answer = predictor.predict_prepared(image[None])[0]
        ranked = sorted(range(10), key=lambda d: -answer["probabilities"][d])[:3]
        top = ", ".join(f"{d} {answer['probabilities'][d]:.1%}" for d in ranked)
        print(f"{name:>12}: {answer['digit']}  {answer['confidence']:.1%}  (top 3: {top})"
              f"{'  unsure' if answer['unsure'] else ''}   [true label {label}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
