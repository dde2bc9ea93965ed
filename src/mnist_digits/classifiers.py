"""What "a model" is to the rest of the package: a Classifier, and `load_classifier`, which
turns a run folder, a .keras file or an export into one.

    classifier = load_classifier("runs/mlp-...")      # or model.keras, model.tflite, a SavedModel
    classifier.predict_proba(images)                  # float (n, 28, 28) in [0, 1] -> (n, 10)

Three kinds share one base (batching, the empty batch, the calibration temperature):
KerasClassifier (a run's model.keras), SavedModelClassifier and TFLiteClassifier (what
export.py writes). Evaluate, predict and serve take any of them the same way.

TensorFlow, Keras and LiteRT take seconds to import, so they are imported inside the
functions that need them: importing this module (as predict and serve do) stays cheap.
"""

from __future__ import annotations

import threading
import zipfile
from pathlib import Path
from typing import Protocol

import numpy as np

from . import runs
from .data import sha256_of
from .errors import ModelFileError, first_line
from .tensorflow_import import import_tensorflow_quietly, quiet_stderr

# The layout of an export (written by export.py, read back here).
SIGNATURE = "serving_default"
INPUT_NAME = "images"  # float32 [batch, 28, 28], 0-1, white digit on black
OUTPUT_NAME = "probabilities"  # float32 [batch, 10], softmax
TFLITE_FILE = "model.tflite"
INFO_FILE = "model_info.json"


class Classifier(Protocol):
    """Images in, probabilities out, with what is known about the model."""

    name: str
    info: dict  # the run's metrics, plus "config" (and "export" for an export)

    @property
    def temperature(self) -> float: ...

    @property
    def parameter_count(self) -> int | None: ...

    def predict_proba(self, images) -> np.ndarray: ...


class BatchedClassifier:
    """The shared part: images in fixed-size batches through `_predict_batch`."""

    batch_size = 1024
    name: str
    info: dict

    @property
    def temperature(self) -> float:
        """The calibration temperature fitted on the validation split (1.0 if none)."""
        return float(self.info.get("calibration", {}).get("temperature", 1.0))

    @property
    def parameter_count(self) -> int | None:
        parameters = self.info.get("config", {}).get("parameters")
        return None if parameters is None else int(parameters)

    def predict_proba(self, images) -> np.ndarray:
        images = np.asarray(images, dtype=np.float32).reshape(-1, 28, 28)
        if len(images) == 0:
            return np.zeros((0, 10), dtype=np.float32)
        return np.concatenate([self._predict_batch(images[start:start + self.batch_size])
                               for start in range(0, len(images), self.batch_size)])

    def _predict_batch(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class KerasClassifier(BatchedClassifier):
    """A Keras model. Inference goes through one traced tf.function (not `model.predict`,
    which rebuilds its machinery on every call)."""

    def __init__(self, model, name: str, info: dict | None = None):
        import tensorflow as tf  # only once a Keras model exists, so TensorFlow is loaded

        self.model = model
        self.name = name
        self.info = info or {}
        # Traced once for every batch size: without the signature, a run's evaluation traced
        # it twice (the batches of 1,024, then the smaller last one) and serve again for batches.
        self._call = tf.function(lambda x: model(x, training=False),
                                 input_signature=[tf.TensorSpec([None, 28, 28], tf.float32)])

    @property
    def parameter_count(self) -> int:
        return int(self.model.count_params())

    def _predict_batch(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self._call(batch))


class SavedModelClassifier(BatchedClassifier):
    """A SavedModel's serving_default signature. Concrete functions are thread-safe."""

    def __init__(self, folder: Path, info: dict):
        import_tensorflow_quietly()
        import tensorflow as tf  # not at start-up: seconds to import

        try:
            self._loaded = tf.saved_model.load(str(folder))  # kept: it owns the variables
        except Exception as error:  # TF raises many types for a damaged SavedModel
            raise ModelFileError(f"{folder}: cannot load the SavedModel ({first_line(error)}); "
                                 "the export is damaged: export it again") from None
        signature = self._loaded.signatures.get(SIGNATURE)
        if signature is None:
            raise ModelFileError(f"{folder}: the SavedModel has no {SIGNATURE!r} signature; "
                                 "export it with mnist-digits export")
        inputs = list(signature.structured_input_signature[1])
        outputs = list(signature.structured_outputs)
        if len(inputs) != 1:
            raise ModelFileError(f"{folder}: {SIGNATURE} takes {len(inputs)} inputs; expected one "
                                 "batch of 28x28 images")
        self._signature, self._input = signature, inputs[0]
        self._output = OUTPUT_NAME if OUTPUT_NAME in outputs else outputs[0]
        self._constant = tf.constant
        self.path, self.info = folder, info
        self.name = _display_name(info, folder.name, "savedmodel")

    def _predict_batch(self, batch: np.ndarray) -> np.ndarray:
        return self._signature(**{self._input: self._constant(batch)})[self._output].numpy()


class TFLiteClassifier(BatchedClassifier):
    """A .tflite file run by the LiteRT interpreter.

    One interpreter behind a lock (an interpreter is not thread-safe); its input is
    resized to the batch when the batch size changes. Integer models get their input
    quantised and their output dequantised with the tensors' own scale and zero point.
    """

    def __init__(self, path: Path, info: dict, name: str | None = None):
        from ai_edge_litert.interpreter import Interpreter  # not at start-up: it loads native code

        try:
            with quiet_stderr():
                self._interpreter = Interpreter(model_path=str(path))
                self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as error:
            raise ModelFileError(f"{path}: not a usable TFLite model ({first_line(error)}); "
                                 "the file is damaged or not a .tflite flatbuffer") from None
        input_detail = self._interpreter.get_input_details()
        output_detail = self._interpreter.get_output_details()
        if len(input_detail) != 1 or int(np.prod(input_detail[0]["shape"][1:])) != 28 * 28 \
                or len(output_detail) != 1 or int(output_detail[0]["shape"][-1]) != 10:
            raise ModelFileError(f"{path}: not a digit classifier (expected one input of 28x28 "
                                 "images and one output of 10 probabilities)")
        self._input, self._output = input_detail[0], output_detail[0]
        self._image_shape = tuple(int(d) for d in self._input["shape"][1:])
        self._batch = int(self._input["shape"][0])
        self._lock = threading.Lock()
        self.path, self.info = path, info
        form = info.get("export", {}).get("form") or f"tflite-{np.dtype(self._input['dtype']).name}"
        self.name = name or _display_name(info, path.stem, form)

    def _predict_batch(self, batch: np.ndarray) -> np.ndarray:
        with self._lock:
            return self._invoke(batch)

    def _invoke(self, batch: np.ndarray) -> np.ndarray:
        interpreter = self._interpreter
        if len(batch) != self._batch:
            interpreter.resize_tensor_input(self._input["index"], [len(batch), *self._image_shape])
            interpreter.allocate_tensors()
            self._batch = len(batch)
        interpreter.set_tensor(self._input["index"],
                               _quantize(batch.reshape(len(batch), *self._image_shape), self._input))
        interpreter.invoke()
        probabilities = _dequantize(interpreter.get_tensor(self._output["index"]), self._output)
        if np.issubdtype(self._output["dtype"], np.integer):
            # Integer outputs come in steps of 1/256 and need not sum to 1; renormalise so
            # temperature scaling and the displayed confidences see a distribution.
            probabilities /= np.maximum(probabilities.sum(axis=1, keepdims=True), 1e-12)
        return probabilities.reshape(len(batch), 10)


def _quantize(values: np.ndarray, detail: dict) -> np.ndarray:
    dtype = detail["dtype"]
    if not np.issubdtype(dtype, np.integer):
        return values.astype(dtype)
    scale, zero_point = detail["quantization"]
    limits = np.iinfo(dtype)
    return np.clip(np.round(values / scale + zero_point), limits.min, limits.max).astype(dtype)


def _dequantize(values: np.ndarray, detail: dict) -> np.ndarray:
    if not np.issubdtype(detail["dtype"], np.integer):
        return values.astype(np.float32)
    scale, zero_point = detail["quantization"]
    return (values.astype(np.float32) - zero_point) * np.float32(scale)


def _display_name(info: dict, fallback: str, form: str) -> str:
    model = info.get("export", {}).get("model") or info.get("config", {}).get("model") or fallback
    return f"{model} ({form.replace('-', ' ')})"


# --- loading -----------------------------------------------------------------------------

def load_keras_model(path: Path):
    import_tensorflow_quietly()  # a no-op once TensorFlow is loaded
    import keras  # not at start-up: it loads TensorFlow

    if not zipfile.is_zipfile(path):
        raise ModelFileError(f"{path}: not a Keras model file (.keras files are zip archives); "
                             "pass a run folder or a .keras file written by mnist-digits train")
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as error:  # Keras raises many types for a damaged archive
        raise ModelFileError(f"{path}: cannot load the model ({first_line(error)}); "
                             "the file is damaged or not from a compatible Keras") from None


def find_export(path: str | Path) -> tuple[str, Path] | None:
    """("tflite" | "savedmodel", the file or folder to load), or None if `path` is no export.

    Accepts a .tflite file, a folder holding model.tflite, a SavedModel folder, and a TF
    Serving base folder (its highest numbered version, as TF Serving serves by default).
    """
    path = Path(path)
    if path.is_file():
        return ("tflite", path) if path.suffix == ".tflite" else None
    if not path.is_dir():
        return None
    if (path / "saved_model.pb").is_file():
        return "savedmodel", path
    if (path / TFLITE_FILE).is_file():
        return "tflite", path / TFLITE_FILE
    versions = sorted((int(entry.name), entry) for entry in path.iterdir()
                      if entry.is_dir() and entry.name.isdigit() and (entry / "saved_model.pb").is_file())
    return ("savedmodel", versions[-1][1]) if versions else None


def load_export(path: str | Path) -> SavedModelClassifier | TFLiteClassifier | None:
    """The export at `path` as a classifier, or None if `path` is not an export."""
    found = find_export(path)
    if found is None:
        return None
    kind, location = found
    folder = location if kind == "savedmodel" else location.parent
    info = _read_info(folder)
    files = info.get("export", {}).get("files", {})
    if kind == "tflite":  # only the file being loaded, which may have been renamed
        files = {location.name: files[location.name]} if location.name in files else {}
    _verify_files(folder, files)
    if kind == "savedmodel":
        return SavedModelClassifier(location, info)
    return TFLiteClassifier(location, info)


def _read_info(folder: Path) -> dict:
    """classifier.info: the source run's metrics, plus "config" and "export"."""
    stored = runs.read_json(folder / INFO_FILE)
    if not stored:
        return {}
    return {**stored.get("metrics", {}), "config": stored.get("config", {}),
            "export": stored.get("export", {})}


def _verify_files(folder: Path, files: dict[str, str]) -> None:
    for name, expected in files.items():
        path = folder / name
        if not path.is_file():
            raise ModelFileError(f"{path} is missing; the export is incomplete: export it again")
        if sha256_of(path) != expected:
            raise ModelFileError(f"{path}: checksum differs from {INFO_FILE}; the file is damaged: "
                                 "export it again")


def load_classifier(path: str | Path) -> Classifier:
    """A run folder, a .keras file -- or an export (.tflite, SavedModel) -- as a classifier."""
    path = Path(path)
    keras_file = keras_file_of(path)
    if keras_file is not None:
        model = load_keras_model(keras_file)
        info = keras_info(keras_file)
        return KerasClassifier(model, info.get("config", {}).get("model") or model.name, info)
    exported = load_export(path)  # .tflite, SavedModel folder, TF Serving base folder
    if exported is not None:
        return exported
    raise ModelFileError(
        f"{path} is not a model: pass a run folder (with {runs.MODEL_FILE}), a .keras or .tflite file, "
        "or a SavedModel folder"
    )


def keras_file_of(path: Path) -> Path | None:
    """The Keras model file of a run folder or .keras path; None for anything else."""
    if not path.exists():
        raise ModelFileError(f"{path} does not exist; pass a run folder or a model file")
    if path.is_dir() and (path / runs.MODEL_FILE).is_file():
        return path / runs.MODEL_FILE
    return path if path.is_file() and path.suffix == ".keras" else None


def keras_info(keras_file: Path) -> dict:
    """classifier.info of a Keras model: in a run folder, its metrics plus "config"."""
    if keras_file.name != runs.MODEL_FILE:
        return {}
    info = runs.read_json(keras_file.parent / runs.METRICS_FILE)
    info["config"] = runs.read_json(keras_file.parent / runs.CONFIG_FILE)
    return info
