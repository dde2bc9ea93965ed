"""Keras models run by LiteRT (litert.py): the same answers, converted once, cached, and a
clear fallback or error when conversion is impossible."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from mnist_digits import litert
from mnist_digits.classifiers import KerasClassifier, TFLiteClassifier, load_classifier
from mnist_digits.data import to_model_input
from mnist_digits.errors import ModelFileError, UsageError
from mnist_digits.predict import load_predictor


def test_litert_gives_the_keras_answers_on_the_test_set(mlp_run, mnist):
    images = to_model_input(mnist.x_test[:3000])
    keras = load_classifier(mlp_run)
    lite = litert.load_classifier(mlp_run, "litert")
    assert isinstance(lite, TFLiteClassifier) and lite.name == keras.name == "mlp"
    assert lite.temperature == keras.temperature  # the run's calibration comes along
    expected, got = keras.predict_proba(images), lite.predict_proba(images)
    assert np.max(np.abs(got - expected)) < 1e-4
    assert np.array_equal(got.argmax(axis=1), expected.argmax(axis=1))


def test_a_model_is_converted_once_then_read_from_the_cache(mlp_run, litert_cache, capsys):
    first = litert.converted_model(mlp_run / "model.keras")
    capsys.readouterr()
    assert first.parent == litert_cache / "mnist-digits" / "litert"
    stamp = first.stat().st_mtime_ns
    assert litert.converted_model(mlp_run / "model.keras") == first
    assert first.stat().st_mtime_ns == stamp  # not converted again
    assert "Converting" not in capsys.readouterr().err
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".")]  # no staging left


def test_a_damaged_cache_file_is_converted_again(mlp_run, mnist):
    cached = litert.converted_model(mlp_run / "model.keras")
    cached.write_bytes(b"TFL3 damaged on disk")
    images = to_model_input(mnist.x_test[:50])
    answers = litert.load_classifier(mlp_run, "litert").predict_proba(images)
    assert cached.read_bytes() != b"TFL3 damaged on disk"  # converted and written again
    assert np.max(np.abs(answers - load_classifier(mlp_run).predict_proba(images))) < 1e-4


def test_a_model_that_cannot_be_converted_gives_one_line_and_no_cache_file(tmp_path, litert_cache):
    damaged = tmp_path / "model.keras"
    damaged.write_bytes(b"PK\x03\x04 not really a zip archive")
    with pytest.raises(litert.ConversionError, match="cannot run through LiteRT") as error:
        litert.converted_model(damaged)
    assert "\n" not in str(error.value) and "Traceback" not in str(error.value)
    assert not list((litert_cache / "mnist-digits" / "litert").glob("*.tflite.*"))


def test_an_unwritable_cache_is_a_conversion_error_naming_the_variable(mlp_run, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    with pytest.raises(litert.ConversionError, match="XDG_CACHE_HOME"):
        litert.converted_model(mlp_run / "model.keras")


def test_a_model_litert_cannot_run_falls_back_to_tensorflow_with_a_note(
        mlp_run, monkeypatch, capsys):
    def refuse(keras_file):
        raise litert.ConversionError(f"{keras_file}: cannot run through LiteRT (an operation it lacks)")

    monkeypatch.setattr(litert, "converted_model", refuse)
    predictor, engine = load_predictor(mlp_run, "litert")
    assert engine == "tensorflow" and isinstance(predictor.classifier, KerasClassifier)
    assert "running it through TensorFlow instead" in capsys.readouterr().err


def test_exports_and_unknown_engines(mlp_run, tmp_path):
    with pytest.raises(UsageError, match="unknown engine"):
        litert.load_classifier(mlp_run, "onnx")
    with pytest.raises(ModelFileError, match="does not exist"):
        litert.load_classifier(tmp_path / "missing", "litert")


def test_a_server_process_on_litert_never_loads_tensorflow(mlp_run):
    """What makes the server small (~160 MiB instead of ~700): TensorFlow stays out of it."""
    litert.converted_model(mlp_run / "model.keras")  # converted (TensorFlow in a child) beforehand
    probe = ("import sys\n"
             "from mnist_digits.predict import load_predictor\n"
             f"predictor, engine = load_predictor({str(mlp_run)!r}, 'litert')\n"
             "predictor.probabilities(__import__('numpy').zeros((3, 28, 28)))\n"
             "print(engine, sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "litert []"
