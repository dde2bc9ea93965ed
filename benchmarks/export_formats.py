"""Every export form of one trained model against the Keras model it came from (the baseline):
file size, accuracy on the full test set, and single-image latency (median and p99).

    MNIST_DIGITS_DATA=/work/shared/mnist .venv/bin/python benchmarks/export_formats.py RUN_DIR

RUN_DIR is a run folder from `mnist-digits train` (nothing is trained here). The exports are
written to a temporary folder (or --out) through the same function as `mnist-digits export`,
then each is loaded the way evaluate/predict/serve load it (load_classifier) and timed on
one image per call, as a server answering one drawing at a time sees it. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from mnist_digits import runs  # noqa: E402
from mnist_digits.classifiers import load_classifier  # noqa: E402
from mnist_digits.data import load_mnist, to_model_input  # noqa: E402
from mnist_digits.export import export_model  # noqa: E402
from mnist_digits.model_card import format_size  # noqa: E402

FORMS = [("savedmodel", None), ("tflite", "float32"), ("tflite", "float16"), ("tflite", "int8")]


def single_image_latency_ms(classifier, images: np.ndarray, calls: int, warmup: int = 20) -> np.ndarray:
    for index in range(warmup):
        classifier.predict_proba(images[index:index + 1])
    timings = np.empty(calls)
    for call in range(calls):
        image = images[call % len(images)][None]
        start = time.perf_counter()
        classifier.predict_proba(image)
        timings[call] = time.perf_counter() - start
    return timings * 1000


def measure(name: str, classifier, size_bytes: int, images, labels, calls: int) -> dict:
    accuracy = float(np.mean(classifier.predict_proba(images).argmax(axis=1) == labels))
    latency = single_image_latency_ms(classifier, images, calls)
    return {"form": name, "size": size_bytes, "accuracy": accuracy,
            "median_ms": float(np.median(latency)), "p99_ms": float(np.percentile(latency, 99))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="run folder of a trained model")
    parser.add_argument("--calls", type=int, default=500, help="single-image calls per form (default 500)")
    parser.add_argument("--out", type=Path, help="keep the exports here (default: a temporary folder)")
    args = parser.parse_args()

    data = load_mnist()
    images, labels = to_model_input(data.x_test), data.y_test.astype(np.int64)
    rows = [measure("keras (baseline)", load_classifier(args.run),
                    (args.run / runs.MODEL_FILE).stat().st_size, images, labels, args.calls)]
    with tempfile.TemporaryDirectory(prefix="export-formats-") as temporary:
        root = args.out or Path(temporary)
        for format, quantize in FORMS:
            form = format if format == "savedmodel" else f"tflite-{quantize}"
            result = export_model(args.run, data, format=format,
                                  quantize=quantize if format == "tflite" else None,
                                  out=root / form, force=True)
            rows.append(measure(form, load_classifier(result.path), result.size_bytes,
                                images, labels, args.calls))

    baseline = rows[0]
    print(f"\nModel {args.run}; {len(labels):,} test images; {args.calls} single-image calls per form; "
          f"{os.cpu_count()} CPUs.\n")
    print("| Form | Size | Size vs Keras | Test accuracy | vs Keras (points) | "
          "Latency median | p99 | Speed vs Keras (median) |")
    print("|------|-----:|--------------:|--------------:|------------------:|"
          "---------------:|----:|------------------------:|")
    for row in rows:
        print(f"| {row['form']} | {format_size(row['size'])} | {row['size'] / baseline['size']:.2f}x | "
              f"{row['accuracy']:.2%} | {100 * (row['accuracy'] - baseline['accuracy']):+.2f} | "
              f"{row['median_ms']:.3f} ms | {row['p99_ms']:.3f} ms | "
              f"{baseline['median_ms'] / row['median_ms']:.1f}x |")


if __name__ == "__main__":
    main()
