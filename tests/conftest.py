"""Shared fixtures: the real MNIST data and one trained seed model per test session.

The data comes from MNIST_DIGITS_DATA when set (as in CI), else from the download cache.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # as the command does (tensorflow_import.py)


@pytest.fixture(scope="session")
def mnist():
    from mnist_digits.data import load_mnist

    return load_mnist()


@pytest.fixture(scope="session")
def small_mnist(mnist):
    """2,000 training, 200 validation and 2,000 test images: for quick unit tests."""
    return mnist.subset(train=2000, test=2000)


@pytest.fixture(scope="session")
def mlp_run(mnist, tmp_path_factory):
    """A run folder of the seed network trained with its default recipe on the full data
    (about 20 s on 2 cores): the model that predict, serve and export tests use."""
    from mnist_digits.pipeline import train_run

    run_dir, _, _ = train_run("mlp", mnist, out=tmp_path_factory.mktemp("runs") / "mlp", verbose=0)
    return run_dir


class UniformClassifier:
    """A stand-in model: every image is each digit with probability 0.1."""

    name = "uniform"
    info: dict = {}
    temperature = 1.0
    parameter_count = None

    def predict_proba(self, images):
        import numpy as np

        return np.full((len(images), 10), 0.1, dtype=np.float32)


@pytest.fixture(scope="session")
def uniform_predictor():
    """A Predictor over UniformClassifier: for tests of the server's limits and inputs,
    which do not depend on the model (and need no training)."""
    from mnist_digits.predict import Predictor

    return Predictor(UniformClassifier())
