"""Figures for a run, drawn with matplotlib's Agg backend (no screen needed).

Each function takes numbers computed elsewhere and writes one PNG atomically; none
computes anything of its own beyond laying it out. They build `Figure` objects directly,
not through pyplot's global state, so figures can be drawn in threads beside other work.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .runs import atomic_path


def _save(figure: Figure, target: Path) -> None:
    with atomic_path(target, suffix=".png") as temporary:
        figure.savefig(temporary, dpi=120, bbox_inches="tight", format="png")


def training_history(history: dict[str, list[float]], target: Path, title: str = "") -> None:
    """Accuracy and loss per epoch, training against validation."""
    figure = Figure(figsize=(10, 4))
    accuracy_axes, loss_axes = figure.subplots(1, 2)
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
    figure = Figure(figsize=(7, 6))
    axes = figure.subplots()
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
    """The most confident mistakes: image, true digit, predicted digit and confidence.

    One mosaic image with a caption over each digit: a grid of 36 axes took 5-10 s to lay
    out and draw, most of a fast model's evaluation (measured)."""
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    wrong = wrong[np.argsort(-probabilities[wrong, predicted[wrong]])][:count]
    columns = 6
    rows = max(1, int(np.ceil(len(wrong) / columns)))
    cell_width, cell_height = 28 + 8, 28 + 16  # room between digits, and for a caption above each
    mosaic = np.zeros((rows * cell_height, columns * cell_width), np.uint8)
    figure = Figure(figsize=(columns * 1.6, rows * 1.9))
    axes = figure.add_axes((0, 0, 1, 0.94))
    axes.axis("off")
    for place, index in enumerate(wrong):
        top, left = (place // columns) * cell_height + 16, (place % columns) * cell_width + 4
        mosaic[top:top + 28, left:left + 28] = images[index]
        axes.text(left + 14, top - 1, f"true {labels[index]} → {predicted[index]}\n"
                  f"{probabilities[index, predicted[index]]:.0%}", fontsize=8, ha="center", va="bottom")
    axes.imshow(mosaic, cmap="gray_r", interpolation="nearest")
    figure.suptitle("Most confident mistakes (test set)" if len(wrong) else "No mistakes")
    _save(figure, target)
