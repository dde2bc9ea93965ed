"""The model registry: a name -> a plain function that builds an uncompiled Keras model.

Every model takes a batch of 28x28 float32 images scaled to 0-1 and returns the ten
digit probabilities (softmax), so data, evaluation, prediction and export treat all of
them alike. Training recipes live in training.py.
"""

from __future__ import annotations

from typing import Callable

from .errors import UsageError

# Builders import Keras themselves: listing the models (e.g. for --help) must not pay
# for TensorFlow's import.
MODELS: dict[str, Callable] = {}


def register(name: str):
    def add(builder: Callable):
        MODELS[name] = builder
        return builder

    return add


def build_model(name: str):
    if name not in MODELS:
        raise UsageError(f"unknown model {name!r}; choose one of: {', '.join(sorted(MODELS))}")
    return MODELS[name]()


@register("mlp")
def mlp():
    """The seed network of the original write-up: 784 -> Dense 128 ReLU -> Dense 10 softmax.

    Dropout 0.2 (as in the TensorFlow beginner quickstart) adds no weights: 101,770 parameters.
    """
    import keras

    return keras.Sequential(
        [
            keras.Input(shape=(28, 28), name="image"),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(10, activation="softmax"),
        ],
        name="mlp",
    )
