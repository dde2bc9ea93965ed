"""CPU per drawing with preprocess's drawing path against the general path (the baseline),
alternating in one process, with the same answers checked.

    .venv/bin/python benchmarks/drawing_path.py MODEL [--rounds 15]

MODEL is a run folder or model file (the TFLite export of mlp shows preparation's share
best). The drawings are the page's: 140x140 RGBA PNGs of MNIST test digits as #111 ink on
white (serve_load.py's), and 420x140 number-pad PNGs of three such digits. Rows:
    prepare       decode + prepare one drawing: what `mnist-digits predict` does per PNG
    /api/predict  what a request runs in its worker thread (serve.app.read_digit): decode,
                  prepare, the model, the answer's JSON with the 28x28 PNG
    /api/read     read.read_number on a number pad: the ink found once, the digits cut and read
Each row: median CPU ms per drawing over --rounds rounds, each path in turn, and the ratio.
The server's CPU per request under load: serve_load.py --paths general drawing.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_load import canvas_pngs  # noqa: E402

from mnist_digits import preprocess  # noqa: E402
from mnist_digits.data import load_mnist  # noqa: E402
from mnist_digits.predict import Predictor  # noqa: E402
from mnist_digits.read import read_number  # noqa: E402
from mnist_digits.serve.app import read_digit  # noqa: E402


def number_pngs(count: int = 16, height: int = 140) -> list[bytes]:
    """Three MNIST test digits side by side on the page's number pad (three times as wide)."""
    digits = load_mnist().x_test[1000:1000 + 3 * count]
    pngs = []
    for index in range(count):
        row = np.hstack([np.pad(digit, 4) for digit in digits[3 * index:3 * index + 3]])
        ink = np.round(255 - row * ((255 - 0x11) / 255)).astype(np.uint8)
        image = Image.fromarray(ink).resize((3 * height, height), Image.Resampling.BILINEAR).convert("RGBA")
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    return pngs


def answers(work, items) -> list:
    """What `work` gives for each item, comparable across paths."""
    results = []
    for item in items:
        result = work(item)
        results.append(result.tobytes() if isinstance(result, np.ndarray) else repr(result))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="run folder or model file")
    parser.add_argument("--rounds", type=int, default=15, help="rounds per path, alternating (default: 15)")
    args = parser.parse_args()
    predictor = Predictor.from_path(args.model)
    drawings, numbers = canvas_pngs(), number_pngs()
    rows = {
        "prepare": (preprocess.prepare, drawings),
        "/api/predict": (lambda data: read_digit(predictor, data), drawings),
        "/api/read": (lambda data: read_number(data, predictor).record(), numbers),
    }
    print(f"{'row':<14} {'general ms':>11} {'drawing ms':>11} {'ratio':>7}  same answers")
    for name, (work, items) in rows.items():
        seconds = {False: [], True: []}
        results = {}
        for _ in range(args.rounds):
            for drawing_path in (False, True):
                preprocess.DRAWING_PATH = drawing_path
                started = time.process_time()
                results[drawing_path] = answers(work, items)
                seconds[drawing_path].append((time.process_time() - started) / len(items))
        general, drawing = (statistics.median(seconds[path]) * 1000 for path in (False, True))
        same = "yes" if results[False] == results[True] else "NO"
        print(f"{name:<14} {general:>11.3f} {drawing:>11.3f} {drawing / general:>6.2f}x  {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
