"""A Keras model run by LiteRT (the TFLite interpreter) instead of TensorFlow.

The same float32 network answers the same probabilities (checked at conversion, to 1e-4)
at a fraction of the cost: a one-image call takes ~0.02 ms instead of TensorFlow's
~0.4 ms, and a process that never imports TensorFlow holds ~150 MiB instead of ~700.
So the conversion runs in a child process -- TensorFlow loads there and dies with it --
and its result is cached by the content hash of model.keras, so the next start (and
every `serve --workers` process) reads the cached file:

    classifier = load_classifier("runs/mlp-...", "litert")   # converts once, then cached

The cache is $XDG_CACHE_HOME/mnist-digits/litert (~/.cache/...); files are only added
there, never removed (delete the folder to reclaim the space).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from . import runs
from .classifiers import Classifier, TFLiteClassifier, keras_file_of, keras_info, load_classifier as load_as_is
from .data import sha256_of
from .errors import ModelFileError, RunFolderError, UsageError, first_line

# What can run a Keras model (run folders, .keras files); exports run as they are.
ENGINES = ("tensorflow", "litert")

# A child that has not converted a model in this long is stuck; ~8 s is usual.
CONVERSION_SECONDS = 300
# The converted model must give the same probabilities as Keras, to this much, on the check images.
TOLERANCE = 1e-4


class ConversionError(ModelFileError):
    """The model cannot run through LiteRT (an operation it lacks, or a different answer)."""


def load_classifier(path: str | Path, engine: str = "tensorflow") -> Classifier:
    """classifiers.load_classifier, with a Keras model run by `engine`: "tensorflow", or
    "litert" (raises ConversionError if the model cannot be converted)."""
    if engine not in ENGINES:
        raise UsageError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    keras_file = keras_file_of(Path(path))
    if engine == "tensorflow" or keras_file is None:
        return load_as_is(path)
    info = keras_info(keras_file)
    name = info.get("config", {}).get("model") or keras_file.stem
    cached = converted_model(keras_file)
    try:
        return TFLiteClassifier(cached, info, name=name)
    except ModelFileError:  # a cached file damaged since it was written: convert it again
        return TFLiteClassifier(converted_model(keras_file, again=True), info, name=name)


def cache_folder() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mnist-digits" / "litert"


def converted_model(keras_file: Path, again: bool = False) -> Path:
    """The cached LiteRT file for `keras_file`, converted first if there is none (or `again`)."""
    target = cache_folder() / f"{sha256_of(keras_file)}.tflite"
    if target.is_file() and not again:
        return target
    # Seconds of silence otherwise, before a command's first answer or a server's first line.
    print(f"Converting {keras_file} for LiteRT (once; cached in {target.parent}) ...", file=sys.stderr, flush=True)
    try:
        with runs.atomic_path(target) as staging:  # a half-converted file is never in the cache
            _convert_in_child(keras_file, staging)
    except (OSError, RunFolderError) as error:
        raise ConversionError(f"cannot write the LiteRT cache {target.parent} ({first_line(error)}); "
                              "set XDG_CACHE_HOME to a writable folder") from None
    return target


def _convert_in_child(keras_file: Path, out: Path) -> None:
    try:
        child = subprocess.run([sys.executable, "-m", __name__, str(keras_file), str(out)],
                               capture_output=True, text=True, timeout=CONVERSION_SECONDS)
    except subprocess.TimeoutExpired:
        raise ConversionError(f"{keras_file}: converting to LiteRT took over {CONVERSION_SECONDS} s") from None
    if child.returncode != 0:
        reason = (child.stderr.strip().splitlines() or [f"exit code {child.returncode}"])[-1]
        raise ConversionError(f"{keras_file}: cannot run through LiteRT ({reason})")


def check_images() -> np.ndarray:
    """Inputs on which Keras and LiteRT must agree: a blank, a full and sparse random images."""
    random = np.random.default_rng(0).random((30, 28, 28), dtype=np.float32) ** 4
    return np.concatenate([np.zeros((1, 28, 28), np.float32), np.ones((1, 28, 28), np.float32), random])


def convert(keras_file: Path, out: Path) -> None:
    """Convert `keras_file` to a float32 TFLite file at `out` and check that both give the
    same probabilities (runs in the child: it imports TensorFlow; the parent keeps `out` only
    if this succeeds)."""
    from .classifiers import load_keras_model
    from .export import convert_to_tflite

    model = load_keras_model(keras_file)
    out.write_bytes(convert_to_tflite(model, "float32", data=None))
    images = check_images()
    expected = np.asarray(model(images, training=False))
    got = TFLiteClassifier(out, info={}).predict_proba(images)
    difference = float(np.max(np.abs(got - expected)))
    if difference > TOLERANCE:
        raise ConversionError(f"LiteRT answers differ from Keras by {difference:.2g} (allowed {TOLERANCE})")


def main(argv: list[str]) -> int:
    keras_file, out = map(Path, argv)
    try:
        convert(keras_file, out)
    except Exception as error:  # the converter raises many types; the parent shows one line
        print(first_line(error), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
