"""A longer fuzzing run than the suite's: the fuzz tests with random (not the suite's
fixed) examples, many more of them.

    .venv/bin/python benchmarks/fuzz_inputs.py [--examples 5000]

Any bytes given to the image decoder, `prepare`, the HTTP endpoints (tests/test_fuzz.py),
the IDX reader and predict's .npy/IDX batch readers must end in a result or the project's
own error (HTTP 4xx JSON) within hypothesis' deadline. A failure prints the smallest input
that shows it and the seed to reproduce it with.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pytest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=5000, help="examples per property (default: 5000)")
    args = parser.parse_args()
    if not 1 <= args.examples <= 1_000_000:
        parser.error("--examples must be 1-1,000,000")
    os.environ["MNIST_DIGITS_FUZZ_EXAMPLES"] = str(args.examples)
    tests = Path(__file__).resolve().parents[1] / "tests"
    properties = [str(tests / "test_fuzz.py"),
                  f"{tests / 'test_idx.py'}::test_fuzz_idx_reader_ends_in_an_array_or_data_error",
                  f"{tests / 'test_predict.py'}::test_fuzz_batch_readers_end_in_images_or_an_input_error"]
    return int(pytest.main([*properties, "-q", "-p", "no:cacheprovider", "--hypothesis-show-statistics"]))


if __name__ == "__main__":
    sys.exit(main())
