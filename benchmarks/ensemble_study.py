"""How much do ensembles of trained run folders gain, and why not more? For the given runs:
each member's validation and test accuracy, the test digits every member gets wrong, and
the accuracy of averaged probabilities for every subset of k members (mean, min, max over
the subsets, on validation and test), so one lucky or unlucky choice of members does not
decide the number. Nothing is trained here; the baseline is the mean single member.

    MNIST_DIGITS_DATA=/work/shared/mnist .venv/bin/python benchmarks/ensemble_study.py runs/cnn-s*

Averaging probabilities here is what `mnist-digits ensemble` does (a Keras Average layer);
the full combination of all runs is checked against it with --check (builds that model).
"""

from __future__ import annotations

import argparse
import itertools
import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from mnist_digits import runs  # noqa: E402
from mnist_digits.classifiers import KerasClassifier, load_classifier, load_keras_model  # noqa: E402
from mnist_digits.data import load_mnist, to_model_input  # noqa: E402
from mnist_digits.ensemble import combine  # noqa: E402
from mnist_digits.evaluation import accuracy_interval  # noqa: E402


def _member(run: str):
    return load_keras_model(f"{run}/{runs.MODEL_FILE}")


def subset_accuracies(probabilities: list[np.ndarray], labels: np.ndarray, k: int) -> list[float]:
    return [float(np.mean(np.mean([probabilities[i] for i in subset], axis=0).argmax(1) == labels))
            for subset in itertools.combinations(range(len(probabilities)), k)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run folders written by mnist-digits train")
    parser.add_argument("--data", help="MNIST folder (default: MNIST_DIGITS_DATA or the cache)")
    parser.add_argument("--tta", action="store_true",
                        help="every member with test-time augmentation (rotated and scaled views), "
                             "as `mnist-digits ensemble --tta` does")
    parser.add_argument("--check", action="store_true",
                        help="also build the ensemble of all runs as `mnist-digits ensemble` does "
                             "and confirm it gives the same test accuracy")
    args = parser.parse_args()

    data = load_mnist(args.data)
    splits = {"validation": (data.x_val, data.y_val), "test": (data.x_test, data.y_test)}
    probabilities = {name: [] for name in splits}
    print("| run | validation | test |\n|---|---:|---:|")
    for run in args.runs:
        # Averaging each member over the views first, then members, is what the ensemble does.
        classifier = (KerasClassifier(combine([_member(run)], test_time_augmentation=True), run)
                      if args.tta else load_classifier(run))
        accuracy = {}
        for name, (images, labels) in splits.items():
            probabilities[name].append(classifier.predict_proba(to_model_input(images)))
            accuracy[name] = np.mean(probabilities[name][-1].argmax(1) == labels)
        print(f"| {run} | {100 * accuracy['validation']:.2f}% | {100 * accuracy['test']:.2f}% |")

    wrong = [set(np.flatnonzero(p.argmax(1) != data.y_test)) for p in probabilities["test"]]
    print(f"\nTest digits wrong in every member: {len(set.intersection(*wrong))}; "
          f"in at least one: {len(set.union(*wrong))}.")

    print("\n| members | subsets | validation mean (min-max) | test mean (min-max) |\n|---:|---:|---|---|")
    for k in range(1, len(args.runs) + 1):
        cells = []
        for name, (_, labels) in splits.items():
            values = 100 * np.array(subset_accuracies(probabilities[name], labels, k))
            cells.append(f"{values.mean():.3f}% ({values.min():.2f}-{values.max():.2f})")
        print(f"| {k} | {math.comb(len(args.runs), k)} | {cells[0]} | {cells[1]} |")
    correct = int(np.sum(np.mean(probabilities["test"], axis=0).argmax(1) == data.y_test))
    low, high = accuracy_interval(correct, len(data.y_test))
    print(f"\nAll {len(args.runs)} members: {100 * correct / len(data.y_test):.2f}% on test, "
          f"95% interval {100 * low:.2f}-{100 * high:.2f}% (Wilson; the test set's own sampling noise).")

    if args.check:
        model = combine([_member(run) for run in args.runs], test_time_augmentation=args.tta)
        ours = KerasClassifier(model, "ensemble").predict_proba(to_model_input(data.x_test))
        mean = np.mean(probabilities["test"], axis=0)
        print(f"\n--check: the Keras ensemble model gives {100 * np.mean(ours.argmax(1) == data.y_test):.2f}%, "
              f"the averaged probabilities here {100 * np.mean(mean.argmax(1) == data.y_test):.2f}%.")


if __name__ == "__main__":
    main()
