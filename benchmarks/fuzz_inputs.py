"""A long fuzzing run of the readers of outside files: the IDX reader and predict's batch
readers (.npy, IDX, gzipped IDX). The suite runs the same properties briefly and
derandomized (300 examples each); this runs them with fresh random examples.

    .venv/bin/python benchmarks/fuzz_inputs.py [--examples 20000]

Each property: any bytes end in an array or the project's own error, never another
exception, each example within 2 s (hypothesis' deadline). Prints examples/s per property,
so a reader that became slow shows; exits non-zero if hypothesis found a failing example
(printed, with how to reproduce it).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROPERTIES = [
    "tests/test_idx.py::test_fuzz_idx_reader_ends_in_an_array_or_data_error",
    "tests/test_predict.py::test_fuzz_batch_readers_end_in_images_or_an_input_error",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=20_000, help="examples per property (default: 20000)")
    args = parser.parse_args()
    env = {**os.environ, "MNIST_DIGITS_FUZZ": "long", "PYTHONPATH": str(ROOT / "src")}
    failed = False
    for test in PROPERTIES:
        started = time.perf_counter()
        # The `long` profile (tests/conftest.py) with this many examples, random each run.
        result = subprocess.run(
            [sys.executable, "-m", "pytest", test, "-q", "-p", "no:cacheprovider",
             f"--hypothesis-seed={int(time.time())}"],
            cwd=ROOT, env={**env, "MNIST_DIGITS_FUZZ_EXAMPLES": str(args.examples)},
            capture_output=True, text=True, timeout=3600)
        seconds = time.perf_counter() - started
        status = "ok" if result.returncode == 0 else "FAILED"
        print(f"{test.split('::')[1]:<62} {status:>6}  {args.examples:,} examples in {seconds:.0f} s "
              f"({args.examples / seconds:,.0f}/s, pytest start-up included)")
        if result.returncode != 0:
            failed = True
            print(result.stdout[-4000:])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
