"""mnist-digits: the classic MNIST network in TensorFlow, done properly.

    from mnist_digits import load_mnist, build_model, train, evaluate
    data = load_mnist()                      # verified, split 55k / 5k / 10k
    result = train("mlp", data, seed=0)      # Keras model with its best weights
    metrics = evaluate(result.model.predict, data).metrics
"""

__version__ = "0.1.0"

from .data import load_mnist  # noqa: E402
from .errors import MnistDigitsError  # noqa: E402


def __getattr__(name):
    # TensorFlow takes seconds to import: load it only when a function needs it.
    if name == "build_model":
        from .models import build_model
        return build_model
    if name == "train":
        from .training import train
        return train
    if name == "evaluate":
        from .evaluation import evaluate
        return evaluate
    if name in ("train_run", "evaluate_model"):
        from . import pipeline
        return getattr(pipeline, name)
    if name == "load_classifier":
        from .classifiers import load_classifier
        return load_classifier
    raise AttributeError(name)


__all__ = ["load_mnist", "build_model", "train", "evaluate", "train_run", "evaluate_model",
           "load_classifier", "MnistDigitsError"]
