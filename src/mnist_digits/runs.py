"""The run folder: its layout, atomic writes, and loading a run or a model file.

    <run>/model.keras            the trained model (best validation accuracy)
    <run>/config.json            what is needed to repeat the run
    <run>/history.csv            per-epoch accuracy and loss, train and validation
    <run>/metrics.json           evaluation (see evaluation.py)
    <run>/figures/*.png          training history, confusion matrix, misclassified digits
    <run>/report.md              the numbers and figures in words
    <run>/tensorboard/           Keras TensorBoard logs

Every file is written to a temporary name in its folder and renamed into place, so a
crash, Ctrl-C or a full disk never leaves a half-written file under the real name.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import zipfile
from datetime import datetime
from pathlib import Path

import numpy as np

from .errors import ModelFileError, RunFolderError, first_line
from .tensorflow_import import import_tensorflow_quietly

MODEL_FILE = "model.keras"


def default_run_dir(model_name: str) -> Path:
    return Path("runs") / f"{model_name}-{datetime.now():%Y%m%d-%H%M%S}"


def prepare_run_dir(path: str | Path, force: bool = False) -> Path:
    """Create the run folder; refuse a non-empty one unless `force`, then empty it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunFolderError(f"{path} exists and is not a folder; choose another --out")
    if path.is_dir() and any(path.iterdir()):
        if not force:
            raise RunFolderError(
                f"{path} already exists and is not empty; choose another --out or add --force"
            )
        shutil.rmtree(path)
    try:
        (path / "figures").mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunFolderError(f"cannot create {path}: {error.strerror}") from None
    return path


@contextlib.contextmanager
def atomic_path(target: str | Path, suffix: str | None = None):
    """Yield a temporary path beside `target`; rename it onto `target` if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=suffix or target.suffix, dir=target.parent
    )
    os.close(handle)
    try:
        yield Path(temporary)
        os.replace(temporary, target)
    except OSError as error:
        raise RunFolderError(
            f"cannot write {target}: {error.strerror or error}; free some space or choose another folder"
        ) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def write_bytes(target: str | Path, content: bytes) -> None:
    with atomic_path(target) as temporary:
        temporary.write_bytes(content)


def write_text(target: str | Path, content: str) -> None:
    write_bytes(target, content.encode("utf-8"))


def write_json(target: str | Path, content) -> None:
    write_text(target, json.dumps(content, indent=2) + "\n")


def save_keras_model(model, target: str | Path) -> None:
    with atomic_path(target, suffix=".keras") as temporary:
        os.unlink(temporary)  # Keras refuses to overwrite without asking
        model.save(temporary)


def write_history_csv(history: dict[str, list[float]], target: str | Path) -> None:
    keys = list(history)
    epochs = len(history[keys[0]]) if keys else 0
    lines = [",".join(["epoch", *keys])]
    for epoch in range(epochs):
        lines.append(",".join([str(epoch + 1), *(f"{history[k][epoch]:.6g}" for k in keys)]))
    write_text(target, "\n".join(lines) + "\n")


def read_history_csv(path: Path) -> dict[str, list[float]]:
    rows = [line.split(",") for line in path.read_text().splitlines() if line]
    header, values = rows[0][1:], [row[1:] for row in rows[1:]]
    return {key: [float(row[i]) for row in values] for i, key in enumerate(header)}


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        raise ModelFileError(f"{path}: unreadable ({error}); the run folder is damaged") from None


class KerasClassifier:
    """A Keras model behind one interface: float images (n, 28, 28) -> probabilities (n, 10).

    Inference goes through one traced tf.function over fixed-size batches (not
    `model.predict`, which rebuilds its machinery on every call).
    """

    batch_size = 1024

    def __init__(self, model, name: str, info: dict | None = None):
        import tensorflow as tf

        self.model = model
        self.name = name
        self.info = info or {}
        self._call = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

    @property
    def temperature(self) -> float:
        return float(self.info.get("calibration", {}).get("temperature", 1.0))

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images, dtype=np.float32).reshape(-1, 28, 28)
        if len(images) == 0:
            return np.zeros((0, 10), dtype=np.float32)
        outputs = [np.asarray(self._call(images[start:start + self.batch_size]))
                   for start in range(0, len(images), self.batch_size)]
        return np.concatenate(outputs)

    @property
    def parameter_count(self) -> int:
        return int(self.model.count_params())


def load_keras_model(path: Path):
    import_tensorflow_quietly()  # a no-op once TensorFlow is loaded
    import keras

    if not zipfile.is_zipfile(path):
        raise ModelFileError(f"{path}: not a Keras model file (.keras files are zip archives); "
                             "pass a run folder or a .keras file written by mnist-digits train")
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as error:  # Keras raises many types for a damaged archive
        raise ModelFileError(f"{path}: cannot load the model ({first_line(error)}); "
                             "the file is damaged or not from a compatible Keras") from None


def load_classifier(path: str | Path):
    """A run folder, a .keras file -- or an export (.tflite, SavedModel) -- as a classifier."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"{path} does not exist; pass a run folder or a model file")
    if path.is_dir() and (path / MODEL_FILE).is_file():
        info = read_json(path / "metrics.json")
        info["config"] = read_json(path / "config.json")
        model = load_keras_model(path / MODEL_FILE)
        return KerasClassifier(model, info["config"].get("model", model.name), info)
    if path.is_file() and path.suffix == ".keras":
        model = load_keras_model(path)
        sidecar = path.parent / "metrics.json"
        info = read_json(sidecar) if path.name == MODEL_FILE else {}
        return KerasClassifier(model, model.name, info)
    from .export import load_export  # lazily: LiteRT and SavedModel loading

    exported = load_export(path)  # .tflite, SavedModel folder, TF Serving base folder
    if exported is not None:
        return exported
    raise ModelFileError(
        f"{path} is not a model: pass a run folder (with {MODEL_FILE}), a .keras or .tflite file, "
        "or a SavedModel folder"
    )
