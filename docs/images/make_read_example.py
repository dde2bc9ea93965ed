"""Make the README's `read` example: a photo of a handwritten number composed from MNIST
test digits (two of them touching), and the annotated copy `read --save-annotated` writes.

    PYTHONPATH=src:tests .venv/bin/python docs/images/make_read_example.py MODEL

Writes, next to this script: read-example-photo.jpg (the input) and
read-example-annotated.png (boxes, digits and confidences drawn on it).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from mnist_digits.data import load_mnist
from mnist_digits.predict import Predictor
from mnist_digits.read import annotated_png, read_number
from number_images import compose_number

HERE = Path(__file__).resolve().parent
NUMBER = "2026"


def main(model: str) -> None:
    images, labels = load_mnist().split("test")
    photo = compose_number(images, labels, np.random.default_rng(12), NUMBER, "touching", "photo").image
    (HERE / "read-example-photo.jpg").write_bytes(photo)
    result = read_number(photo, Predictor.from_path(model))
    (HERE / "read-example-annotated.png").write_bytes(annotated_png(photo, result))
    print(f"{NUMBER} read as {result.text!r}")


if __name__ == "__main__":
    main(sys.argv[1])
