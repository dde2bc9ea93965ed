"""The shape prior of `read` (read.ASPECT_LOG_PRIOR): for each digit class, how the upright
aspect of a digit's strong ink (read.upright_aspect: width / height once its slant is taken
out) is distributed over MNIST's TRAINING digits (never validation or test), as
log(p / p at the class's likeliest aspect) at read.ASPECT_GRID. Prints the constant to
paste into read.py.

    PYTHONPATH=src .venv/bin/python benchmarks/shape_prior.py
"""

from __future__ import annotations

import numpy as np
from scipy.stats import gaussian_kde

from mnist_digits.data import load_mnist
from mnist_digits.preprocess import STRONG_INK
from mnist_digits.read import ASPECT_GRID, upright_aspect

# The table's floor: an aspect no training digit of the class has is this unlikely at most.
FLOOR = -8.0


def main() -> None:
    data = load_mnist()
    aspects = np.array([upright_aspect(image > STRONG_INK * 255) for image in data.x_train])
    print(f"# log(p(upright aspect | digit) / p at its likeliest aspect), at ASPECT_GRID, from "
          f"{len(aspects)} MNIST training digits (benchmarks/shape_prior.py)")
    print("ASPECT_LOG_PRIOR = np.array([")
    for digit in range(10):
        # A smooth density (a Gaussian kernel on the log aspect): the aspects of 20 px digits
        # are ratios of whole pixels, which a histogram shows as a comb.
        density = gaussian_kde(np.log(aspects[data.y_train == digit]))(np.log(ASPECT_GRID))
        row = np.maximum(np.log(np.maximum(density, 1e-300) / density.max()), FLOOR)
        print("    [" + ", ".join(f"{value:.2f}" for value in row) + f"],  # {digit}")
    print("])")


if __name__ == "__main__":
    main()
