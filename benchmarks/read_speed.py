"""`read_number` of this checkout against another version of the package (e.g. main's
before a speed-up), in one process, on the 4-digit numbers benchmarks/read_numbers.py
times: the same answers, and how much faster.

    git archive main src | tar -x -C /tmp/main      # the baseline's sources
    .venv/bin/python benchmarks/read_speed.py /tmp/main/src MODEL... \
        [--count 100] [--rounds 5] [--seed 0] [--engine litert] [--allow-different]

MODEL: run folders or exports (an mlp: a Keras run and its TFLite export show the
preparation's cost with and without TensorFlow's per-call overhead). The baseline's
`mnist_digits` is imported under another name, so both versions read every number in the
same process, in interleaved rounds (the order alternating), the machine's load falling on
both alike. First each number is read by both: the texts, every digit's box and
confidence and the 28x28 images the model saw must be the same, or the script stops
(with --allow-different it says how many differ, and times them anyway).
Rates: numbers per wall-clock second and per CPU-second of this process (which depends
less on how busy the machine is) in the best round of each, and the median over rounds of
the baseline's CPU time / this checkout's.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mnist_digits import predict, read
from mnist_digits.data import load_mnist
from mnist_digits.errors import InputImageError
from mnist_digits.litert import ENGINES, load_classifier
from read_numbers import compose

KINDS = [("apart", "canvas"), ("apart", "photo"), ("touching", "canvas"), ("touching", "photo")]
BASELINE = "baseline_mnist_digits"


def import_baseline(source: Path):
    """The package under `source`/mnist_digits, imported as BASELINE (its imports of itself
    are relative, so it runs under any name): its read and predict modules."""
    folder = Path(tempfile.mkdtemp(prefix="read-speed-"))
    shutil.copytree(source / "mnist_digits", folder / BASELINE)
    sys.path.insert(0, str(folder))
    return importlib.import_module(f"{BASELINE}.read"), importlib.import_module(f"{BASELINE}.predict")


def answer(read, source, predictor):
    """What a user sees of one read, and the images the model saw."""
    try:
        result = read.read_number(source, predictor)
    except InputImageError as error:
        return str(error)
    return result.record(), [digit.prepared.tobytes() for digit in result.digits]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("baseline", type=Path, help="folder holding the baseline's mnist_digits package")
    parser.add_argument("models", nargs="+", help="run folders or exports")
    parser.add_argument("--count", type=int, default=100, help="numbers per kind (default: 100)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per version (default: 5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--allow-different", action="store_true",
                        help="time the versions even when some numbers are read differently (say how many)")
    parser.add_argument("--engine", choices=ENGINES, default="tensorflow",
                        help="what runs a Keras model (default: tensorflow; litert as read and serve do)")
    args = parser.parse_args()
    base_read, base_predict = import_baseline(args.baseline)
    images, labels = load_mnist().split("test")
    # The speed sets of benchmarks/read_numbers.py (its seeds + 100).
    numbers = [[number.image for number in compose(images, labels, args.count, args.seed + 100 + index, 4, *kind)]
               for index, kind in enumerate(KINDS)]
    for model in args.models:
        classifier = load_classifier(model, args.engine)
        versions = {"baseline": (base_read, base_predict.Predictor(classifier)),
                    "this checkout": (read, predict.Predictor(classifier))}
        (base_reader, base_predictor), (this_reader, this_predictor) = versions.values()
        differ = sum(answer(base_reader, number, base_predictor) != answer(this_reader, number, this_predictor)
                     for kind in numbers for number in kind)
        if differ and not args.allow_different:
            sys.exit(f"{model}: {differ} of {args.count * len(KINDS)} numbers read differently "
                     "(--allow-different to time them anyway)")
        seconds = {(version, kind): [] for version in versions for kind in range(len(KINDS))}  # (wall, CPU)
        for round_number in range(args.rounds):
            order = list(versions.items())[::1 if round_number % 2 == 0 else -1]
            for kind, sources in enumerate(numbers):
                for version, (reader, predictor) in order:
                    wall, cpu = time.perf_counter(), time.process_time()
                    for source in sources:
                        reader.read_number(source, predictor)
                    seconds[version, kind].append((time.perf_counter() - wall, time.process_time() - cpu))
        print(f"\n{model} ({classifier.name}): {args.count * len(KINDS) - differ} of {args.count * len(KINDS)} "
              f"numbers read the same; 4-digit numbers per second, best of {args.rounds} interleaved rounds")
        for kind, (spacing, style) in enumerate(KINDS):
            before, after = seconds["baseline", kind], seconds["this checkout", kind]
            ratio = statistics.median(b[1] / a[1] for b, a in zip(before, after))
            rates = [f"{args.count / min(wall for wall, _ in times):4.0f}/s "
                     f"({args.count / min(cpu for _, cpu in times):4.0f} per CPU-s)" for times in (before, after)]
            print(f"  {spacing:<9} {style:<7} baseline {rates[0]}   this checkout {rates[1]}   "
                  f"x{ratio:.2f} (median round, CPU)")


if __name__ == "__main__":
    main()
