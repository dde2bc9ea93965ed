"""Would test-time augmentation help `read` split touching digits? Each candidate piece's
score (its log confidence) is averaged over its prepared 28x28 image and a few variants of
it (moved sideways, rotated, scaled), read in the same batched model call; measured against
`read` as it is, on the same numbers, in one run.

The hope: a real digit is read the same under small changes, two touching digits read
confidently as one (most misread touching numbers, benchmarks/read_misses.py) or a sliver
are not, so their score drops. Every candidate piece is prepared and read (as in
read_misses.py). The digit a piece reads is the prepared image's; only the score changes.
Tune on seeds 7, 20 and 30, never on seed 0.

    .venv/bin/python benchmarks/read_tta.py CNN_SMALL_RUN --seed 7 [--variants shift2] [--count 200]
"""

from __future__ import annotations

from unittest import mock

import numpy as np
from scipy import ndimage

from mnist_digits import read
from mnist_digits.data import load_mnist
from mnist_digits.predict import Predictor
from read_misses import compare_scorings, read_every_piece, scoring_parser


def scaled(image: np.ndarray, factor: float) -> np.ndarray:
    """`image` scaled about its centre, on the same 28x28 grid."""
    centre = (np.array(image.shape) - 1) / 2
    return ndimage.affine_transform(image, np.eye(2) / factor, offset=centre - centre / factor, order=1)


VARIANTS = {  # name -> what makes each variant of a prepared image
    "shift1": [lambda image, d=d: ndimage.shift(image, (0, d), order=0) for d in (1, -1)],
    "shift2": [lambda image, d=d: ndimage.shift(image, (0, d), order=0) for d in (2, -2)],
    "shift3": [lambda image, d=d: ndimage.shift(image, (0, d), order=0) for d in (3, -3)],
    "vshift2": [lambda image, d=d: ndimage.shift(image, (d, 0), order=0) for d in (2, -2)],
    "rotate8": [lambda image, a=a: ndimage.rotate(image, a, reshape=False, order=1) for a in (8, -8)],
    "rotate15": [lambda image, a=a: ndimage.rotate(image, a, reshape=False, order=1) for a in (15, -15)],
    "scale10": [lambda image, f=f: scaled(image, f) for f in (1.1, 0.9)],
}


def with_averaged_scores(variants: list):
    """read's candidate reading and best split, each piece scored by its log confidence in
    the digit its prepared image reads, averaged over that image and its `variants`."""
    scores_of: dict[int, float] = {}  # id(piece) -> its averaged score

    def read_pieces(flat, groups, predictor):
        pieces, probabilities = read_every_piece(flat, groups, predictor)
        if pieces and variants:
            images = [make(piece.prepared) for piece in pieces for make in variants]
            varied = predictor.probabilities(images).reshape(len(pieces), len(variants), -1)
            digits = probabilities.argmax(axis=1)
            chances = np.concatenate([probabilities[:, None], varied], axis=1)[np.arange(len(pieces)), :, digits]
            scores_of.update(zip(map(id, pieces), np.log(np.maximum(chances, 1e-12)).mean(axis=1)))
        return pieces, probabilities

    def best_split(pieces, scores, height):
        averaged = [scores_of.get(id(piece), score) for piece, score in zip(pieces, scores)]
        return original_best_split(pieces, np.array(averaged), height)

    original_best_split = read._best_split
    return mock.patch.multiple(read, _read_pieces=read_pieces, _best_split=best_split)


def main() -> None:
    parser = scoring_parser(__doc__)
    parser.add_argument("--variants", choices=VARIANTS, default="shift2", help="default: shift2 (2 px left and right)")
    args = parser.parse_args()
    images, labels = load_mnist().split("test")
    predictor = Predictor.from_path(args.model)
    print(f"{predictor.classifier.name}, seed {args.seed}, {args.count} numbers per kind: exact / per digit, "
          f"all candidates read; without -> with scores averaged over {args.variants}")
    compare_scorings(predictor, images, labels, args.seed, args.count,
                     [lambda variants=variants: with_averaged_scores(variants) for variants in ([], VARIANTS[args.variants])])


if __name__ == "__main__":
    main()
