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
DEFAULT_MODEL = "mlp"


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


def _conv_bn_relu(x, filters: int, kernel_size: int = 3, strides: int = 1, padding: str = "valid"):
    """Conv -> batch norm -> ReLU; the conv has no bias because batch norm adds its own."""
    import keras

    x = keras.layers.Conv2D(filters, kernel_size, strides=strides, padding=padding, use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    return keras.layers.ReLU()(x)


@register("cnn-small")
def cnn_small():
    """A fast convolutional net: two conv blocks of 32 and 64 filters with max pooling,
    then Dense 128 and the softmax (225,034 parameters, ~5 MFLOPs per image).

    Conv + bias + ReLU without batch norm: oneDNN fuses them into one op, which on a CPU
    is about twice as fast per epoch as the same net with batch norm (measured).
    """
    import keras

    image = keras.Input(shape=(28, 28), name="image")
    x = keras.layers.Reshape((28, 28, 1))(image)
    x = keras.layers.Conv2D(32, 3, activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(64, 3, activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dropout(0.4)(x)
    x = keras.layers.Dense(128, activation="relu")(x)
    x = keras.layers.Dropout(0.2)(x)
    probabilities = keras.layers.Dense(10, activation="softmax")(x)
    return keras.Model(image, probabilities, name="cnn_small")


@register("cnn-fast-aug")  # the same network, trained 8 epochs with augmentation (training.py)
@register("cnn-fast")
def cnn_fast():
    """The quickest to good accuracy on a CPU: Conv 24 5x5 -> max pool -> Conv 32 5x5 ->
    max pool -> Dense 256 -> softmax (153,754 parameters, ~3.4 MFLOPs per image, no dropout
    or batch norm: its one-to-three-epoch recipe does not overfit, and conv + bias + ReLU
    is one fused oneDNN op). The LeNet-5 shape with more filters in the first layer.
    """
    import keras

    image = keras.Input(shape=(28, 28), name="image")
    x = keras.layers.Reshape((28, 28, 1))(image)
    x = keras.layers.Conv2D(24, 5, activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(32, 5, activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(256, activation="relu")(x)
    probabilities = keras.layers.Dense(10, activation="softmax")(x)
    return keras.Model(image, probabilities, name="cnn_fast")


@register("cnn")
def cnn():
    """The strongest single model here: a compact BN-ReLU conv net in two stages
    (conv 3x3, conv 3x3, strided conv 5x5 in place of pooling; 32 then 64 filters),
    Dense 128 and the softmax, with dropout between stages. About 327k parameters and
    30 MFLOPs per image; trained with augmentation and label smoothing (training.py).
    """
    import keras

    image = keras.Input(shape=(28, 28), name="image")
    x = keras.layers.Reshape((28, 28, 1))(image)
    for filters in (32, 64):
        x = _conv_bn_relu(x, filters)
        x = _conv_bn_relu(x, filters)
        x = _conv_bn_relu(x, filters, kernel_size=5, strides=2, padding="same")
        x = keras.layers.Dropout(0.4)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(128, use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Dropout(0.4)(x)
    probabilities = keras.layers.Dense(10, activation="softmax")(x)
    return keras.Model(image, probabilities, name="cnn")
