"""A recipe per model (optimizer, schedule, epochs, batch size) and the fit loop.

Randomness comes from one seed: weights, dropout and shuffling are drawn from it and
TensorFlow's deterministic ops are switched on, so the same seed on a CPU gives the
same numbers. Ctrl-C ends training between steps and keeps the best weights so far.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace

import keras
import numpy as np
import tensorflow as tf

from .data import Mnist, as_dataset
from .models import build_model


@dataclass(frozen=True)
class Recipe:
    epochs: int
    batch_size: int
    learning_rate: float
    # Cosine decay of the learning rate to zero over the run.
    schedule: str = "cosine"


RECIPES: dict[str, Recipe] = {
    # Adam with cosine decay at batch 256 reaches >= 98% where the quickstart's fixed
    # rate at batch 32 stops near 97.7%, in fewer seconds: larger batches cut the
    # per-step overhead that dominates a small model on a CPU (benchmarks/mlp_vs_quickstart.py).
    "mlp": Recipe(epochs=15, batch_size=256, learning_rate=3e-3),
}


def recipe_for(model_name: str, epochs: int | None = None, batch_size: int | None = None) -> Recipe:
    recipe = RECIPES[model_name]
    changes = {k: v for k, v in (("epochs", epochs), ("batch_size", batch_size)) if v}
    return replace(recipe, **changes)


@dataclass
class TrainResult:
    model: keras.Model
    history: dict[str, list[float]]
    recipe: Recipe
    seconds: float
    interrupted: bool
    best_epoch: int


class KeepBest(keras.callbacks.Callback):
    """Records each epoch's logs and keeps the weights with the best validation accuracy."""

    def __init__(self):
        super().__init__()
        self.history: dict[str, list[float]] = {}
        self.best_accuracy = -1.0
        self.best_weights = None
        self.best_epoch = 0

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            if key != "learning_rate":
                self.history.setdefault(key, []).append(float(value))
        accuracy = float((logs or {}).get("val_accuracy", -1.0))
        if accuracy > self.best_accuracy:
            self.best_accuracy, self.best_epoch = accuracy, epoch + 1
            self.best_weights = self.model.get_weights()


def seed_everything(seed: int) -> None:
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def compile_model(model: keras.Model, recipe: Recipe, steps_per_epoch: int) -> None:
    if recipe.schedule == "cosine":
        learning_rate = keras.optimizers.schedules.CosineDecay(
            recipe.learning_rate, decay_steps=recipe.epochs * steps_per_epoch
        )
    else:
        learning_rate = recipe.learning_rate
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        # XLA made the small models 3x slower per epoch on a 2-core CPU (measured).
        jit_compile=False,
    )


def train(model_name: str, data: Mnist, epochs: int | None = None, batch_size: int | None = None,
          seed: int = 0, callbacks: list | None = None, verbose: int | str = "auto") -> TrainResult:
    """Build `model_name`, fit it with its recipe, and return it with its best weights."""
    recipe = recipe_for(model_name, epochs, batch_size)
    seed_everything(seed)
    model = build_model(model_name)
    steps_per_epoch = int(np.ceil(len(data.x_train) / recipe.batch_size))
    compile_model(model, recipe, steps_per_epoch)
    train_set = as_dataset(data.x_train, data.y_train, recipe.batch_size, shuffle=True, seed=seed)
    val_set = as_dataset(data.x_val, data.y_val, 1000)
    keep_best = KeepBest()
    started, interrupted = time.perf_counter(), False
    try:
        model.fit(train_set, validation_data=val_set, epochs=recipe.epochs,
                  callbacks=[keep_best, *(callbacks or [])], verbose=verbose,
                  shuffle=False)  # the dataset shuffles itself, from the seed
    except KeyboardInterrupt:
        interrupted = True
    seconds = time.perf_counter() - started
    if keep_best.best_weights is not None:
        model.set_weights(keep_best.best_weights)
    return TrainResult(model, keep_best.history, recipe, seconds, interrupted, keep_best.best_epoch)


def recipe_dict(recipe: Recipe) -> dict:
    return asdict(recipe)
