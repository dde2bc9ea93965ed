"""Predictions -> the content of metrics.json: accuracy and loss per split, per-digit
precision/recall/F1, the confusion matrix, hardest and easiest digits, the pairs most
often confused, and a confidence calibration (temperature) fitted on the validation split.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from .data import Mnist, to_model_input

DIGITS = list(range(10))
EPSILON = 1e-7
# Below this calibrated confidence an answer is marked unsure (predict, serve). Calibrated
# on the validation split, so a confidence c means "right about c of the time" on
# MNIST-like digits. On photo-like test inputs, 0.9 flags about 8% of answers and 70% of
# the wrong ones.
UNSURE_BELOW = 0.9


def log_loss(probabilities: np.ndarray, labels: np.ndarray) -> float:
    picked = probabilities[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.clip(picked, EPSILON, 1.0))))


def accuracy_interval(correct: int, count: int) -> list[float]:
    """The 95% Wilson interval of an accuracy measured on `count` images: on MNIST's 10,000
    test images it is about +-0.11 points at 99.7%, so smaller differences may be chance."""
    from scipy.stats import binomtest

    interval = binomtest(correct, count).proportion_ci(0.95, method="wilson")
    return [float(interval.low), float(interval.high)]


def split_summary(probabilities: np.ndarray, labels: np.ndarray) -> dict:
    correct = int(np.sum(probabilities.argmax(axis=1) == labels))
    return {
        "accuracy": correct / len(labels),
        "accuracy_95_interval": accuracy_interval(correct, len(labels)),
        "loss": log_loss(probabilities, labels),
        "count": int(len(labels)),
    }


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """Softmax(log p / T): the same ranking, confidence sharpened (T < 1) or softened (T > 1)."""
    logits = np.log(np.clip(probabilities, EPSILON, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=1, keepdims=True)


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Temperature scaling (Guo et al., 2017): the T that minimises validation log loss."""
    # SciPy's optimizer and scikit-learn are imported where used: predict and serve need
    # only apply_temperature, and scikit-learn's import alone costs them half a second.
    from scipy.optimize import minimize_scalar

    result = minimize_scalar(
        lambda t: log_loss(apply_temperature(probabilities, t), labels),
        bounds=(0.05, 20.0), method="bounded",
    )
    return float(result.x)


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            error += members.mean() * abs(confidence[members].mean() - correct[members].mean())
    return float(error)


def per_class_metrics(labels: np.ndarray, predicted: np.ndarray) -> dict:
    from sklearn.metrics import precision_recall_fscore_support

    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=DIGITS, zero_division=0
    )
    return {
        str(d): {"precision": float(precision[d]), "recall": float(recall[d]),
                 "f1": float(f1[d]), "support": int(support[d])}
        for d in DIGITS
    }


def most_confused_pairs(matrix: np.ndarray, top: int = 5) -> list[dict]:
    off_diagonal = matrix.copy()
    np.fill_diagonal(off_diagonal, 0)
    order = np.argsort(off_diagonal, axis=None)[::-1][:top]
    pairs = []
    for flat in order:
        true, predicted = np.unravel_index(flat, matrix.shape)
        if off_diagonal[true, predicted] > 0:
            pairs.append({"true": int(true), "predicted": int(predicted),
                          "count": int(off_diagonal[true, predicted])})
    return pairs


@dataclass
class Evaluation:
    metrics: dict
    test_probabilities: np.ndarray


# Images per call while evaluating: a multiple of the classifiers' batch of 1,024, so the
# numbers do not depend on it, and small enough for the progress bar to move.
EVALUATION_CHUNK = 4096


def evaluate(predict_proba, data: Mnist, include_train: bool = True) -> Evaluation:
    """Metrics of a classifier (a function: float images (n, 28, 28) -> probabilities (n, 10)).
    A progress bar on stderr when it is a terminal: a large ensemble takes minutes here."""
    from sklearn.metrics import confusion_matrix
    from tqdm import tqdm

    probabilities = {}
    splits = ["test", "validation"] + (["train"] if include_train else [])
    total = sum(len(data.split(split)[0]) for split in splits)
    with tqdm(total=total, unit="image", desc="evaluating", file=sys.stderr, disable=None,
              leave=False) as progress:
        for split in splits:
            images = data.split(split)[0]
            chunks = [np.zeros((0, 10), np.float32)]
            for start in range(0, len(images), EVALUATION_CHUNK):
                chunks.append(predict_proba(to_model_input(images[start:start + EVALUATION_CHUNK])))
                progress.update(len(chunks[-1]))
            probabilities[split] = np.concatenate(chunks)
    labels = data.y_test.astype(np.int64)
    predicted = probabilities["test"].argmax(axis=1)
    matrix = confusion_matrix(labels, predicted, labels=DIGITS)
    per_class = per_class_metrics(labels, predicted)
    # Hardest = the digit most often misread (lowest recall), ties broken by F1.
    ranked = sorted(DIGITS, key=lambda d: (per_class[str(d)]["recall"], per_class[str(d)]["f1"]))
    metrics = {split: split_summary(probabilities[split], data.split(split)[1].astype(np.int64))
               for split in splits if len(data.split(split)[1])}
    metrics.update({
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
        "hardest_digit": ranked[0],
        "easiest_digit": ranked[-1],
        "most_confused": most_confused_pairs(matrix),
        "misclassified_count": int((predicted != labels).sum()),
    })
    if len(data.y_val):
        val_probabilities, val_labels = probabilities["validation"], data.y_val.astype(np.int64)
        temperature = fit_temperature(val_probabilities, val_labels)
        metrics["calibration"] = {
            "method": "temperature scaling on the validation split",
            "temperature": temperature,
            "test_ece_before": expected_calibration_error(probabilities["test"], labels),
            "test_ece_after": expected_calibration_error(
                apply_temperature(probabilities["test"], temperature), labels),
        }
    return Evaluation(metrics, probabilities["test"])
