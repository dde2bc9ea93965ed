"""Shared fixtures: the real MNIST data and one trained seed model per test session.

The data comes from MNIST_DIGITS_DATA when set (as in CI), else from the download cache.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # as the command does (tensorflow_import.py)
# Commands the tests spawn run in other folders: a relative MNIST_DIGITS_DATA
# (../shared/mnist) must name the same folder there.
if os.environ.get("MNIST_DIGITS_DATA"):
    os.environ["MNIST_DIGITS_DATA"] = os.path.abspath(os.environ["MNIST_DIGITS_DATA"])

# Fuzzing (hypothesis) of the IDX and batch readers: a short seeded run in the suite, so CI
# is repeatable; a long random one with MNIST_DIGITS_FUZZ_EXAMPLES (benchmarks/fuzz_inputs.py).
# tests/test_fuzz.py sets its own, with the same variable.
_FUZZ_EXAMPLES = os.environ.get("MNIST_DIGITS_FUZZ_EXAMPLES")
settings.register_profile("mnist-digits", max_examples=int(_FUZZ_EXAMPLES or 300), deadline=2000,
                          derandomize=_FUZZ_EXAMPLES is None, database=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("mnist-digits")


@pytest.fixture(scope="session", autouse=True)
def litert_cache(tmp_path_factory):
    """Keras models converted for LiteRT (serve's default engine) are cached in a folder of
    the session's, not the user's ~/.cache: commands the tests spawn inherit the variable."""
    folder = tmp_path_factory.mktemp("cache")
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(folder)
    yield folder
    if previous is None:
        del os.environ["XDG_CACHE_HOME"]
    else:
        os.environ["XDG_CACHE_HOME"] = previous


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


class Child:
    """A child process whose output is read with a deadline: a line that never comes fails
    the test instead of stalling it (a thread reads; the test waits on a queue)."""

    def __init__(self, command: list[str], env: dict | None = None):
        import queue
        import subprocess
        import threading

        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        self.lines: list[str] = []
        self._queue: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self._queue.put(line)
        self._queue.put(None)  # end of output

    def wait_for_line(self, wanted, timeout: float) -> str:
        """The first line for which `wanted(line)` is true, within `timeout` seconds."""
        import queue
        import time

        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                pytest.fail(f"no such line within {timeout} s; output so far:\n{self.output}")
            if line is None:
                pytest.fail(f"the child ended without such a line:\n{self.output}")
            self.lines.append(line)
            if wanted(line):
                return line

    def finish(self, timeout: float) -> int:
        """Its exit code, once its output is all read, within `timeout` seconds."""
        code = self.process.wait(timeout=timeout)
        while (line := self._queue.get(timeout=timeout)) is not None:
            self.lines.append(line)
        return code

    @property
    def output(self) -> str:
        return "".join(self.lines)


@pytest.fixture
def spawn():
    """Start child processes that are killed at the end of the test, whatever happened."""
    children: list[Child] = []

    def start(command: list[str], env: dict | None = None) -> Child:
        children.append(Child(command, env))
        return children[-1]

    yield start
    for child in children:
        if child.process.poll() is None:
            child.process.kill()
            child.process.wait(timeout=30)


class _Payload:
    """Unpickling this creates the file at `path`: proof that pickle ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


@pytest.fixture
def pickle_payload(tmp_path):
    """(an object array whose unpickling creates a marker file, the marker's path): for the
    tests that a file from outside is read without pickle."""
    import numpy as np

    marker = tmp_path / "pickle-ran"
    array = np.empty((2, 28, 28), dtype=object)
    array.fill(_Payload(marker))
    return array, marker


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
