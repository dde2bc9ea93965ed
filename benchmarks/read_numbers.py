"""How well and how fast `read_number` reads numbers composed from MNIST test digits,
against the same digits read one by one by `predict` (each digit alone, rendered the
same way), in the same run.

    .venv/bin/python benchmarks/read_numbers.py CNN_SMALL_RUN MLP_RUN \
        [--count 200] [--seed 0]

Numbers come from tests/number_images.py: 4 digits (and 2-8 digits), "apart" or
"touching" (1 px apart to 3 px overlapping), as canvas exports or as photos (JPEG).
Per kind: exact-number accuracy and per-digit accuracy (digits matched in order, over the
true digits) for `read`, and for the baseline (exact: all of the number's digits right).
Targets with cnn-small: 4-digit apart exact >= 95%, touching >= 85%; per-digit within
1 point of the baseline when apart. Speed with mlp: >= 150 four-digit numbers/s, and
POST /api/read p99 under 100 ms for a 4-digit drawing.
"""

from __future__ import annotations

import argparse
import difflib
import sys
import time
from pathlib import Path

import numpy as np

from mnist_digits.data import load_mnist
from mnist_digits.errors import InputImageError
from mnist_digits.litert import ENGINES
from mnist_digits.predict import Predictor
from mnist_digits.read import read_number

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the generator lives with the tests
from number_images import compose_number  # noqa: E402

KINDS = [(4, "apart", "canvas"), (4, "apart", "photo"), (4, "touching", "canvas"),
         (4, "touching", "photo"), ("2-8", "apart", "photo"), ("2-8", "touching", "photo")]


def compose(images, labels, count: int, seed: int, digits, spacing: str, style: str):
    rng = np.random.default_rng(seed)
    return [compose_number(images, labels, rng, int(rng.integers(2, 9)) if digits == "2-8" else digits,
                           spacing, style) for _ in range(count)]


def read_text(source, predictor) -> str:
    try:
        return read_number(source, predictor).text
    except InputImageError:
        return ""


def matched(truth: str, read: str) -> int:
    return sum(block.size for block in difflib.SequenceMatcher(None, truth, read).get_matching_blocks())


def accuracy(predictor, numbers) -> dict:
    texts = [read_text(number.image, predictor) for number in numbers]
    singles = [predictor.predict_images(number.singles) for number in numbers]
    one_by_one = ["".join(str(getattr(answer, "digit", "?")) for answer in answers) for answers in singles]
    digits = sum(len(number.text) for number in numbers)
    return {
        "exact": np.mean([text == number.text for text, number in zip(texts, numbers)]),
        "per_digit": sum(matched(number.text, text) for text, number in zip(texts, numbers)) / digits,
        "baseline_exact": np.mean([text == number.text for text, number in zip(one_by_one, numbers)]),
        "baseline_per_digit": sum(a == b for text, number in zip(one_by_one, numbers)
                                  for a, b in zip(text, number.text)) / digits,
    }


def speed(predictor, numbers) -> tuple[float, float, float, float]:
    """Numbers per second through read_number, and through predict reading their digits
    one image at a time (the baseline): per wall second, and per CPU second of this process
    (which depends less on how busy the machine is)."""
    def rates(work) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        for number in numbers:
            work(number)
        return len(numbers) / (time.perf_counter() - wall), len(numbers) / (time.process_time() - cpu)

    read_wall, read_cpu = rates(lambda number: read_text(number.image, predictor))
    one_wall, one_cpu = rates(lambda number: [predictor.predict_image(single) for single in number.singles])
    return read_wall, read_cpu, one_wall, one_cpu


def api_latency(predictor, numbers) -> list[float]:
    """Milliseconds per POST /api/read through a real server on loopback, one client, for
    4-digit drawings sent as the page sends them (140 px tall PNGs)."""
    import io

    import httpx
    from PIL import Image

    from mnist_digits.serve import create_app, running

    bodies = []
    for number in numbers:
        image = Image.fromarray(number.image)
        image = image.resize((round(image.width * 140 / image.height), 140), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        bodies.append(buffer.getvalue())
    times = []
    with running(create_app(predictor)) as url, httpx.Client(base_url=url) as client:
        for body in bodies[:5]:  # warm up
            client.post("/api/read", content=body, headers={"Content-Type": "image/png"})
        for body in bodies:
            start = time.perf_counter()
            client.post("/api/read", content=body, headers={"Content-Type": "image/png"}).raise_for_status()
            times.append(1000 * (time.perf_counter() - start))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cnn_small", help="cnn-small run folder (accuracy)")
    parser.add_argument("mlp", help="mlp run folder (speed)")
    parser.add_argument("--count", type=int, default=200, help="numbers per kind (default: 200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--speed-only", action="store_true", help="skip the accuracy tables")
    parser.add_argument("--engine", choices=ENGINES, default="litert",
                        help="what runs the mlp for the speed table (default: litert, as read and serve do)")
    args = parser.parse_args()
    data = load_mnist()
    images, labels = data.split("test")
    for path in () if args.speed_only else (args.cnn_small, args.mlp):
        predictor = Predictor.from_path(path)
        name = predictor.classifier.name
        print(f"\n{name} ({path}), {args.count} numbers per kind, seed {args.seed}")
        print(f"  {'digits':<6} {'spacing':<9} {'style':<7} {'exact':>7} {'per digit':>10}"
              f"   {'one by one: exact':>17} {'per digit':>10}")
        for index, (digits, spacing, style) in enumerate(KINDS):
            numbers = compose(images, labels, args.count, args.seed + index, digits, spacing, style)
            result = accuracy(predictor, numbers)
            print(f"  {digits:<6} {spacing:<9} {style:<7} {result['exact']:>7.1%} {result['per_digit']:>10.1%}"
                  f"   {result['baseline_exact']:>17.1%} {result['baseline_per_digit']:>10.1%}")
    predictor = Predictor.from_path(args.mlp, args.engine)
    predictor.probabilities(np.zeros((1, 28, 28)))  # the first call traces the model
    print(f"\nspeed with {predictor.classifier.name}, engine {args.engine}: 4-digit numbers per second (photos: JPEG decoding included; canvas: arrays)")
    for index, (spacing, style) in enumerate([("apart", "canvas"), ("apart", "photo"),
                                              ("touching", "canvas"), ("touching", "photo")]):
        numbers = compose(images, labels, args.count, args.seed + 100 + index, 4, spacing, style)
        read_wall, read_cpu, one_wall, one_cpu = speed(predictor, numbers)
        print(f"  {spacing:<9} {style:<7} read {read_wall:4.0f}/s ({read_cpu:4.0f} per CPU-s)   "
              f"predict one digit image at a time {one_wall:4.0f}/s ({one_cpu:4.0f} per CPU-s)   "
              f"ratio {read_wall / one_wall:.2f} ({read_cpu / one_cpu:.2f})")
    times = api_latency(predictor, compose(images, labels, args.count, args.seed + 200, 4, "apart", "canvas"))
    print(f"\nPOST /api/read, one client, 4-digit drawings 140 px tall: p50 {np.percentile(times, 50):.0f} ms, "
          f"p99 {np.percentile(times, 99):.0f} ms (target p99 < 100 ms)")


if __name__ == "__main__":
    main()
