"""Figures for a run, drawn with matplotlib's Agg backend (no screen needed).

Each function takes numbers computed elsewhere and writes one PNG atomically; none
computes anything of its own beyond laying it out.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402

from .runs import atomic_path  # noqa: E402


def _save(figure, target: Path) -> None:
    with atomic_path(target, suffix=".png") as temporary:
        figure.savefig(temporary, dpi=120, bbox_inches="tight", format="png")
    plt.close(figure)


def training_history(history: dict[str, list[float]], target: Path, title: str = "") -> None:
    """Accuracy and loss per epoch, training against validation."""
    figure, (accuracy_axes, loss_axes) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    for axes, key, label in ((accuracy_axes, "accuracy", "Accuracy"), (loss_axes, "loss", "Loss")):
        if key in history:
            axes.plot(epochs, history[key], "o-", label="training", markersize=3)
        if f"val_{key}" in history:
            axes.plot(epochs, history[f"val_{key}"], "s-", label="validation", markersize=3)
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_ylabel(label.lower())
        axes.set_title(label)
        axes.grid(alpha=0.3)
        axes.legend()
    if title:
        figure.suptitle(title)
    _save(figure, target)


def confusion_matrix(matrix: list[list[int]], target: Path, title: str = "") -> None:
    """Counts of true digit (rows) against predicted digit (columns), log-shaded."""
    matrix = np.asarray(matrix)
    figure, axes = plt.subplots(figsize=(7, 6))
    shown = axes.imshow(np.log1p(matrix), cmap="Blues")
    for true in range(10):
        for predicted in range(10):
            count = matrix[true, predicted]
            if count:
                dark = np.log1p(count) > 0.6 * np.log1p(matrix.max())
                axes.text(predicted, true, str(count), ha="center", va="center", fontsize=8,
                          color="white" if dark else "black")
    axes.set_xticks(range(10))
    axes.set_yticks(range(10))
    axes.set_xlabel("predicted digit")
    axes.set_ylabel("true digit")
    axes.set_title(title or "Confusion matrix (test set)")
    figure.colorbar(shown, ax=axes, label="log(1 + count)")
    _save(figure, target)


def misclassified(images: np.ndarray, labels: np.ndarray, probabilities: np.ndarray,
                  target: Path, count: int = 36) -> None:
    """The most confident mistakes: image, true digit, predicted digit and confidence."""
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    wrong = wrong[np.argsort(-probabilities[wrong, predicted[wrong]])][:count]
    columns = 6
    rows = max(1, int(np.ceil(len(wrong) / columns)))
    figure, grid = plt.subplots(rows, columns, figsize=(columns * 1.6, rows * 1.9), squeeze=False)
    for axes in grid.flat:
        axes.axis("off")
    for axes, index in zip(grid.flat, wrong):
        axes.imshow(images[index], cmap="gray_r")
        axes.set_title(f"true {labels[index]} → {predicted[index]}\n"
                       f"{probabilities[index, predicted[index]]:.0%}", fontsize=8)
    figure.suptitle("Most confident mistakes (test set)" if len(wrong) else "No mistakes")
    figure.tight_layout()
    _save(figure, target)
