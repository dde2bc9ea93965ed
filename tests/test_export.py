"""Exports: SavedModel (TF Serving layout) and TFLite float32/float16/int8 match the Keras
model, load back through load_classifier, and refuse bad input cleanly."""

from __future__ import annotations

import io
import json
import os
import threading
import zipfile

import numpy as np
import pytest

from mnist_digits import cli, runs
from mnist_digits.classifiers import TFLiteClassifier, load_classifier
from mnist_digits.data import to_model_input
from mnist_digits.export import AccuracyDropError, export_model

FORMS = {
    "savedmodel": ("savedmodel", None),
    "tflite-float32": ("tflite", None),
    "tflite-float16": ("tflite", "float16"),
    "tflite-int8": ("tflite", "int8"),
}


@pytest.fixture(scope="module")
def exports(mlp_run, mnist, tmp_path_factory):
    """Every form exported once from the session's trained mlp: form -> ExportResult."""
    root = tmp_path_factory.mktemp("exports")
    return {form: export_model(mlp_run, mnist, format=format, quantize=quantize, out=root / form)
            for form, (format, quantize) in FORMS.items()}


@pytest.fixture(scope="module")
def keras_model(mlp_run):
    return load_classifier(mlp_run)


@pytest.fixture(scope="module")
def test_images(mnist):
    return to_model_input(mnist.x_test[:1000])


def run_cli(*argv: str) -> int:
    return cli.main([str(arg) for arg in argv])


def one_error_line(capsys) -> str:
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1, error
    assert error.startswith("mnist-digits: error:")
    assert "Traceback" not in error
    return error


def test_savedmodel_has_tf_serving_layout_and_keras_outputs(exports, keras_model, test_images):
    import tensorflow as tf

    version_dir = exports["savedmodel"].path
    assert version_dir.name == "1"
    assert (version_dir / "saved_model.pb").is_file() and (version_dir / "variables").is_dir()
    serving = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    (spec,) = serving.structured_input_signature[1].values()
    assert spec.name == "images" and spec.dtype == tf.float32 and spec.shape.as_list() == [None, 28, 28]
    probabilities = serving(images=tf.constant(test_images))["probabilities"].numpy()
    assert np.abs(probabilities - keras_model.predict_proba(test_images)).max() <= 1e-5


def test_tflite_float32_matches_keras_through_litert(exports, keras_model, test_images):
    exported = load_classifier(exports["tflite-float32"].path)
    assert isinstance(exported, TFLiteClassifier)
    assert np.abs(exported.predict_proba(test_images) - keras_model.predict_proba(test_images)).max() <= 1e-4


def test_float16_and_int8_are_smaller_and_keep_accuracy(exports, mnist):
    float32, float16, int8 = (exports[f"tflite-{q}"] for q in ("float32", "float16", "int8"))
    assert float16.size_bytes < 0.6 * float32.size_bytes
    assert int8.size_bytes < 0.35 * float32.size_bytes
    # Measured at export time on the full test set; check it again independently.
    classifier = load_classifier(int8.path)
    accuracy = np.mean(classifier.predict_proba(to_model_input(mnist.x_test)).argmax(1) == mnist.y_test)
    assert accuracy == pytest.approx(int8.test_accuracy)
    for result in (float16, int8):
        assert 100 * (result.source_test_accuracy - result.test_accuracy) <= 0.5


def test_int8_model_is_fully_integer(exports):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(exports["tflite-int8"].path))
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    assert interpreter.get_output_details()[0]["dtype"] == np.int8


@pytest.mark.parametrize("form", list(FORMS))
def test_exports_load_with_source_info_and_calibration(exports, keras_model, form):
    path = exports[form].path
    # The file or version folder, and the folder a user may pass instead: the TF Serving
    # base, the tflite export folder.
    for candidate in (path, path.parent):
        exported = load_classifier(candidate)
        assert form.replace("-", " ") in exported.name
        assert exported.info["test"]["accuracy"] == keras_model.info["test"]["accuracy"]
        assert exported.info["config"]["model"] == "mlp"
        assert exported.temperature == pytest.approx(keras_model.temperature)
        assert exported.parameter_count == keras_model.parameter_count
        probabilities = exported.predict_proba(np.zeros((3, 28, 28), np.float32))
        assert probabilities.shape == (3, 10)
        assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-3)
        assert exported.predict_proba(np.zeros((0, 28, 28), np.float32)).shape == (0, 10)


def test_tflite_is_safe_under_concurrent_calls(exports, test_images):
    exported = load_classifier(exports["tflite-int8"].path)
    batches = [test_images[i * 7:i * 7 + size] for i, size in enumerate([1, 5, 1, 64, 3, 1, 17, 2])]
    expected = [exported.predict_proba(batch) for batch in batches]
    results: dict[int, np.ndarray] = {}

    def work(index: int) -> None:
        for _ in range(20):
            results[index] = exported.predict_proba(batches[index])
            assert np.array_equal(results[index], expected[index])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(batches))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(np.array_equal(results[i], expected[i]) for i in range(len(batches)))


def test_model_card_says_what_a_user_needs(exports):
    card = exports["tflite-int8"].card.read_text()
    for needed in ("## Data", "## Training recipe", "## Metrics", "## Calibration",
                   "## Intended use and limits", "## How to call it", "440fcabf73cc546f",
                   "| 9 |", "Digits only", "One centred digit", "T = ", "ai_edge_litert"):
        assert needed in card, needed
    assert f"{exports['tflite-int8'].test_accuracy:.2%}" in card
    saved_card = exports["savedmodel"].card.read_text()
    assert "saved_model_cli show" in saved_card and "v1/models/mnist:predict" in saved_card
    info = json.loads((exports["savedmodel"].path / "model_info.json").read_text())
    assert info["export"]["signature"] == {"name": "serving_default", "input": "images",
                                           "output": "probabilities"}


def test_evaluate_an_export_writes_the_same_metrics(exports, mlp_run, tmp_path, capsys):
    assert run_cli("evaluate", exports["tflite-int8"].path, "--out", tmp_path / "eval") == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    source = json.loads((mlp_run / "metrics.json").read_text())
    assert metrics.keys() == source.keys()
    assert metrics["test"]["accuracy"] == pytest.approx(exports["tflite-int8"].test_accuracy)


def test_export_command_prints_size_and_accuracy(mlp_run, tmp_path, capsys):
    assert run_cli("export", mlp_run, "--format", "tflite", "--out", tmp_path / "f32") == 0
    output = capsys.readouterr().out
    assert "keras (source)" in output and "tflite-float32" in output and "%" in output
    assert "KB" in output and (tmp_path / "f32" / "model.tflite").is_file()


def test_savedmodel_versions_share_a_base_folder(mlp_run, tmp_path, capsys):
    base = tmp_path / "mnist"
    assert run_cli("export", mlp_run, "--format", "savedmodel", "--out", base) == 0
    assert run_cli("export", mlp_run, "--format", "savedmodel", "--out", base, "--version", "2") == 0
    assert sorted(p.name for p in base.iterdir()) == ["1", "2"]
    assert load_classifier(base).path == base / "2"  # TF Serving serves the highest


def test_existing_out_is_refused_without_force(exports, mlp_run, capsys):
    out = exports["tflite-float16"].path.parent
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert run_cli("export", mlp_run, "--format", "tflite", "--out", out) == 2
    assert "--force" in one_error_line(capsys)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    base = exports["savedmodel"].path.parent
    assert run_cli("export", mlp_run, "--format", "savedmodel", "--out", base) == 2
    assert "--version" in one_error_line(capsys)


def test_force_replaces_an_export(mlp_run, tmp_path, capsys):
    out = tmp_path / "export"  # an old export, and a file of the old one only
    out.mkdir()
    for name in ("model.tflite", "model_info.json", "stale.txt"):
        (out / name).write_text("old")
    assert run_cli("export", mlp_run, "--format", "tflite", "--quantize", "float16",
                   "--out", out, "--force") == 0
    assert sorted(p.name for p in out.iterdir()) == ["MODEL_CARD.md", "model.tflite", "model_info.json"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


@pytest.mark.parametrize("argv, words", [
    (["--format", "savedmodel", "--quantize", "int8"], "--quantize applies to --format tflite only"),
    (["--format", "tflite", "--version", "2"], "--version applies to --format savedmodel only"),
    (["--format", "savedmodel", "--version", "0"], "positive"),
    (["--format", "tflite", "--max-accuracy-drop", "-1"], "--max-accuracy-drop"),
])
def test_bad_options_exit_2(mlp_run, tmp_path, capsys, argv, words):
    assert run_cli("export", mlp_run, *argv, "--out", tmp_path / "out") == 2
    assert words in one_error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_unknown_format_exits_2(mlp_run, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli("export", mlp_run, "--format", "onnx", "--out", tmp_path / "out")
    assert exit_info.value.code == 2
    assert "invalid choice: 'onnx'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _damaged_files(tmp_path, mlp_run, exports):
    keras_bytes = (mlp_run / runs.MODEL_FILE).read_bytes()
    tflite_bytes = exports["tflite-float32"].path.read_bytes()
    files = {
        "not_a_model.txt": b"hello",
        "random.keras": os.urandom(4096),
        "truncated.keras": keras_bytes[: len(keras_bytes) // 2],
        "random.tflite": os.urandom(4096),
        "truncated.tflite": tflite_bytes[: len(tflite_bytes) // 2],
        "empty.tflite": b"",
    }
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    assert not zipfile.is_zipfile(tmp_path / "truncated.keras")
    return list(files)


def test_damaged_models_are_one_line_errors(mlp_run, exports, tmp_path, capsys):
    for name in _damaged_files(tmp_path, mlp_run, exports):
        out = tmp_path / f"{name}-eval"
        assert run_cli("evaluate", tmp_path / name, "--out", out) == 2, name
        assert name in one_error_line(capsys)
        assert not out.exists()
        if name.endswith(".keras"):
            assert run_cli("export", tmp_path / name, "--format", "tflite", "--out", out) == 2
            one_error_line(capsys)
            assert not out.exists()


def test_damaged_file_inside_an_export_is_caught_by_its_checksum(exports, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(exports["tflite-float32"].path.parent, copy)
    model = bytearray((copy / "model.tflite").read_bytes())
    model[len(model) // 2] ^= 0xFF  # one flipped byte in the weights still loads without this check
    (copy / "model.tflite").write_bytes(bytes(model))
    assert run_cli("evaluate", copy / "model.tflite", "--out", tmp_path / "e") == 2
    assert "checksum" in one_error_line(capsys)


def test_damaged_savedmodel_is_a_one_line_error(exports, tmp_path, capsys):
    import shutil

    copy = tmp_path / "savedmodel"
    shutil.copytree(exports["savedmodel"].path, copy)
    (copy / "model_info.json").unlink()  # a bare SavedModel: no checksums to catch it early
    (copy / "saved_model.pb").write_bytes(os.urandom(2000))
    assert run_cli("evaluate", copy, "--out", tmp_path / "e") == 2
    assert "cannot load the SavedModel" in one_error_line(capsys)
    assert not (tmp_path / "e").exists()


def test_interrupted_export_leaves_nothing(mlp_run, mnist, tmp_path, monkeypatch):
    from mnist_digits import export

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "convert_to_tflite", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_model(mlp_run, mnist, format="tflite", out=tmp_path / "a" / "b")
    assert not list(tmp_path.iterdir())


def test_an_export_cannot_be_exported_again(exports, tmp_path, capsys):
    assert run_cli("export", exports["tflite-int8"].path, "--format", "savedmodel",
                   "--out", tmp_path / "again") == 2
    assert "already an export" in one_error_line(capsys)


def test_too_inaccurate_export_fails_and_writes_nothing(mlp_run, tmp_path, capsys, monkeypatch):
    # A conversion that silently broke the model: every prediction shifted by one digit.
    honest = TFLiteClassifier.predict_proba
    monkeypatch.setattr(TFLiteClassifier, "predict_proba",
                        lambda self, images: np.roll(honest(self, images), 1, axis=1))
    out = tmp_path / "int8"
    assert run_cli("export", mlp_run, "--format", "tflite", "--quantize", "int8", "--out", out) == 1
    assert "points below" in one_error_line(capsys)
    assert not out.exists() and not list(tmp_path.iterdir())


def test_library_raises_accuracy_drop_error(mlp_run, small_mnist, tmp_path):
    with pytest.raises(AccuracyDropError):
        export_model(mlp_run, small_mnist, format="tflite", out=tmp_path / "x", max_accuracy_drop=-100)
    assert not list(tmp_path.iterdir())


def _digit_pngs(mnist, folder, count: int = 20):
    """The first `count` test digits as dark-on-white PNGs, 3x their size."""
    from PIL import Image

    folder.mkdir()
    for index in range(count):
        Image.fromarray(255 - mnist.x_test[index]).resize((84, 84)).save(folder / f"{index:02d}.png")
    return folder


def test_predict_command_on_a_tflite_export_gives_the_same_answers_without_tensorflow(
        exports, mlp_run, mnist, tmp_path):
    """As the README says: the same answers from the run folder run by TensorFlow, by LiteRT
    (the default) and from its TFLite export, and TensorFlow imported only for the first."""
    import subprocess
    import sys

    digits = _digit_pngs(mnist, tmp_path / "digits")
    code = ("import json, sys; from mnist_digits import cli; code = cli.main(sys.argv[1:]); "
            "print(json.dumps({'tensorflow_imported': 'tensorflow' in sys.modules})); sys.exit(code)")
    answers = {}
    for name, model, options in (("tensorflow", mlp_run, ["--engine", "tensorflow"]), ("litert", mlp_run, []),
                                 ("tflite", exports["tflite-float32"].path.parent, [])):
        result = subprocess.run([sys.executable, "-c", code, "predict", str(model), str(digits), "--json",
                                 *options], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        *lines, imported = [json.loads(line) for line in result.stdout.splitlines()]
        assert imported["tensorflow_imported"] == (name == "tensorflow")
        answers[name] = lines
    for name in ("litert", "tflite"):
        assert len(answers[name]) == 20
        for keras_answer, answer in zip(answers["tensorflow"], answers[name]):
            assert answer["file"] == keras_answer["file"]
            assert answer["digit"] == keras_answer["digit"]
            np.testing.assert_allclose(answer["probabilities"], keras_answer["probabilities"], atol=1e-4)


def test_serve_on_an_int8_export_answers_like_the_keras_model(exports, mlp_run, mnist):
    from fastapi.testclient import TestClient
    from PIL import Image

    from mnist_digits.predict import Predictor
    from mnist_digits.serve import create_app

    def answers(model_path):
        with TestClient(create_app(Predictor.from_path(model_path)), base_url="http://localhost") as client:
            assert client.get("/api/health").json()["status"] == "ok"
            files = []
            for index in range(32):
                buffer = io.BytesIO()
                Image.fromarray(255 - mnist.x_test[index]).resize((140, 140)).save(buffer, "PNG")
                files.append(("files", (f"{index}.png", buffer.getvalue(), "image/png")))
            return client.post("/api/predict/batch", files=files).json()["results"]

    keras_digits = [a["digit"] for a in answers(mlp_run)]
    int8_digits = [a["digit"] for a in answers(exports["tflite-int8"].path)]
    # int8 rounding may flip a borderline digit, not more.
    assert sum(a != b for a, b in zip(keras_digits, int8_digits)) <= 1
    assert np.mean(np.array(int8_digits) == mnist.y_test[:32]) >= 0.9
