"""Would a class-conditional shape prior from MNIST's training digits help `read` split
touching digits? Measures it against `read` as it is, on the same numbers, in one run.

Most misread touching numbers are scoring misses (benchmarks/read_misses.py): the right
cut was offered, but the dynamic programming kept two touching digits as one piece, which
the model reads confidently as one digit. The prior tried here: for each digit class, how
the upright aspect of a digit's strong ink (width / height once its slant is taken out,
`upright_aspect`) is distributed over MNIST's TRAINING digits (never validation or test),
as log(p / p at the class's likeliest aspect) on ASPECT_GRID. A piece read as digit d then
costs WEIGHT per unit of -log(p(aspect | d) / max p) beyond FREE (aspects a digit usually
has cost nothing: a cost on every piece only makes splits dearer).

Every candidate piece is prepared and read (as in read_misses.py: `read` leaves out the
ones whose costs let them never win, which the prior would change), and each number's best
split is chosen without and with the prior. Tune on seeds 7, 20 and 30, never on seed 0.

    .venv/bin/python benchmarks/shape_prior.py CNN_SMALL_RUN --seed 7 \
        [--weight 0.25] [--free 2.0] [--count 200] [--table]
"""

from __future__ import annotations

from unittest import mock

import numpy as np
from scipy.stats import gaussian_kde

from mnist_digits import read
from mnist_digits.data import load_mnist
from mnist_digits.predict import Predictor
from mnist_digits.preprocess import STRONG_INK
from read_misses import compare_scorings, read_every_piece, scoring_parser

# The aspects the prior is tabled at (interpolated between them), and its floor: an aspect
# no training digit of the class has is at most this unlikely.
ASPECT_GRID = np.arange(0.05, 2.0, 0.1)
FLOOR = -8.0


def upright_aspect(mask: np.ndarray) -> float:
    """Width / height of the ink in `mask` once its slant is taken out (each row shifted by
    the slope of column on row that its pixels' moments give, at most 1): the generator and
    people slant digits, which changes a digit's width more than anything else (with the
    aspect as it is, the prior read fewer numbers right at every weight tried)."""
    rows, columns = np.nonzero(mask)
    rows_centred = rows - rows.mean()
    spread = float(rows_centred @ rows_centred)
    slope = float(np.clip(rows_centred @ (columns - columns.mean()) / spread, -1, 1)) if spread else 0.0
    upright = columns - slope * rows_centred
    return float((upright.max() - upright.min() + 1) / (rows.max() - rows.min() + 1))


def aspect_log_prior(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(10, len(ASPECT_GRID)): log(p(upright aspect | digit) / p at its likeliest aspect),
    a Gaussian kernel density on the log aspect (the aspects of 20 px digits are ratios of
    whole pixels, which a histogram shows as a comb)."""
    aspects = np.array([upright_aspect(image > STRONG_INK * 255) for image in images])
    table = []
    for digit in range(10):
        density = gaussian_kde(np.log(aspects[labels == digit]))(np.log(ASPECT_GRID))
        table.append(np.maximum(np.log(np.maximum(density, 1e-300) / density.max()), FLOOR))
    return np.array(table)


def with_shape_cost(table: np.ndarray, weight: float, free: float):
    """read's candidate reading and best split, with the shape cost taken off each piece's score."""
    probabilities_of: dict[int, np.ndarray] = {}  # id(piece) -> the model's probabilities

    def read_pieces(flat, groups, predictor):
        pieces, probabilities = read_every_piece(flat, groups, predictor)
        probabilities_of.update(zip(map(id, pieces), probabilities))
        return pieces, probabilities

    def best_split(pieces, scores, height):
        costs = []
        for piece in pieces:
            digit = int(probabilities_of[id(piece)].argmax())
            rarity = -np.interp(upright_aspect(piece.mask), ASPECT_GRID, table[digit])
            costs.append(weight * max(rarity - free, 0.0))
        return original_best_split(pieces, np.asarray(scores) - np.array(costs), height)

    original_best_split = read._best_split
    return mock.patch.multiple(read, _read_pieces=read_pieces, _best_split=best_split)


def main() -> None:
    parser = scoring_parser(__doc__)
    parser.add_argument("--weight", type=float, default=0.25, help="cost per unit of rarity (default: 0.25)")
    parser.add_argument("--free", type=float, default=2.0, help="rarity that costs nothing (default: 2.0)")
    parser.add_argument("--table", action="store_true", help="print the prior table")
    args = parser.parse_args()
    data = load_mnist()
    table = aspect_log_prior(data.x_train, data.y_train)  # training digits only
    if args.table:
        for digit, row in enumerate(table):
            print(digit, " ".join(f"{value:5.2f}" for value in row))
    images, labels = data.split("test")
    predictor = Predictor.from_path(args.model)
    print(f"{predictor.classifier.name}, seed {args.seed}, {args.count} numbers per kind: exact / per digit, "
          f"all candidates read; without -> with the shape prior (weight {args.weight}, free {args.free})")
    compare_scorings(predictor, images, labels, args.seed, args.count,
                     [lambda weight=weight: with_shape_cost(table, weight, args.free) for weight in (0.0, args.weight)])


if __name__ == "__main__":
    main()
