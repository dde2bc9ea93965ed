"""Why `read_number` misreads composed numbers: for one kind of benchmarks/read_numbers.py
(the same numbers for the same seed), each misread number's annotated image is saved, and
each miss is told apart by whether some tiling of the group's candidate pieces reads the
true number (the cut was offered, the dynamic programming's costs chose another: a scoring
miss) or none does (a cut never offered, a digit lost or split, or the model misreading a
digit: a candidate miss). Every candidate piece is prepared and read here, also those that
`read` leaves out because their costs alone let them never win, so that the two kinds of
miss keep their meaning (slower; 1 of 200 touching canvases, seed 7, reads otherwise).
Tune on seed 7, never on seed 0 (the reported table).

    .venv/bin/python benchmarks/read_misses.py CNN_SMALL_RUN \
        --kind "4 touching photo" --seed 7 --out misses/
"""

from __future__ import annotations

import argparse
from pathlib import Path
from unittest import mock

import numpy as np
from read_numbers import KINDS, accuracy, compose

from mnist_digits import read
from mnist_digits.data import load_mnist
from mnist_digits.errors import InputImageError
from mnist_digits.predict import Predictor


def group_texts(pieces, digits) -> set[str]:
    """Every text a tiling of one group's candidate pieces reads (each piece as its likeliest digit)."""
    ends = max(piece.end for piece in pieces)
    texts: dict[int, set[str]] = {0: {""}}
    for end in range(1, ends + 1):
        texts[end] = {text + str(digit) for piece, digit in zip(pieces, digits)
                      if piece.end == end for text in texts.get(piece.start, ())}
    return texts[ends]


def reachable(truth: str, groups: list[set[str]]) -> bool:
    """Whether one text per group, left to right, makes `truth`."""
    prefixes = {""}
    for texts in groups:
        prefixes = {prefix + text for prefix in prefixes for text in texts if truth.startswith(prefix + text)}
    return truth in prefixes


def read_every_piece(flat, groups, predictor):
    """read._read_pieces without leaving out the candidates that cannot win."""
    pieces = [piece for group in groups
              for piece in read._pieces(flat, group.mask, group.box, group.index, group.height)]
    rows: dict[int, np.ndarray] = {}
    read._prepare_and_read(pieces, rows, predictor)
    kept = [piece for piece in pieces if id(piece) in rows]
    return kept, np.array([rows[id(piece)] for piece in kept]).reshape(len(kept), -1)


def scoring_parser(doc: str) -> argparse.ArgumentParser:
    """The arguments of a script that compares ways of scoring with compare_scorings."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("model", help="run folder (e.g. cnn-small)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--count", type=int, default=200, help="numbers per kind (default: 200)")
    return parser


def compare_scorings(predictor, images, labels, seed: int, count: int, scorings: list) -> None:
    """Per kind of read_numbers.py, the same numbers read under each of `scorings` (callables
    returning a context manager that changes how read scores its candidates): exact / per
    digit, on one line, first -> second."""
    for index, (digits, spacing, style) in enumerate(KINDS):
        numbers = compose(images, labels, count, seed + index, digits, spacing, style)
        cells = []
        for scoring in scorings:
            with scoring():
                result = accuracy(predictor, numbers)
            cells.append(f"{result['exact']:6.1%} / {result['per_digit']:5.1%}")
        print(f"  {digits:<4} {spacing:<9} {style:<7} {' -> '.join(cells)}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="run folder (e.g. cnn-small)")
    parser.add_argument("--kind", default="4 touching photo", choices=[" ".join(map(str, kind)) for kind in KINDS])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, help="folder for the misread numbers' annotated images")
    args = parser.parse_args()
    index = [" ".join(map(str, kind)) for kind in KINDS].index(args.kind)
    digits, spacing, style = KINDS[index]
    images, labels = load_mnist().split("test")
    numbers = compose(images, labels, args.count, args.seed + index, digits, spacing, style)
    predictor = Predictor.from_path(args.model)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)

    groups: list[list] = []  # each group's candidate pieces, as read_number offers them to the DP
    best_split = read._best_split

    def recording(pieces, scores, height):
        groups.append(pieces)
        return best_split(pieces, scores, height)

    misses = {"scoring": 0, "candidate": 0}
    with mock.patch.object(read, "_best_split", recording), mock.patch.object(read, "_read_pieces", read_every_piece):
        for number_index, number in enumerate(numbers):
            groups.clear()
            try:
                result = read.read_number(number.image, predictor)
            except InputImageError as error:
                print(f"{number_index:4d} {number.text}: {error}")
                misses["candidate"] += 1
                continue
            if result.text == number.text:
                continue
            texts = [group_texts(pieces, predictor.probabilities(np.stack([p.prepared for p in pieces])).argmax(axis=1))
                     for pieces in groups]
            kind = "scoring" if reachable(number.text, texts) else "candidate"
            misses[kind] += 1
            print(f"{number_index:4d} {number.text} read {result.text}: {kind} miss "
                  f"(digits {', '.join(f'{d.digit} {d.confidence:.0%}' for d in result.digits)})")
            if args.out:
                (args.out / f"{number_index:03d}_{number.text}_read_{result.text}.png").write_bytes(
                    read.annotated_png(number.image, result))
    print(f"{args.kind}, seed {args.seed}: {len(numbers) - sum(misses.values())} of {len(numbers)} read exactly; "
          f"misses: {misses['scoring']} scoring (the right cuts were offered), {misses['candidate']} candidate")


if __name__ == "__main__":
    main()
