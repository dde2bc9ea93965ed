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
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from .errors import ModelFileError, RunFolderError, first_line
from .tensorflow_import import import_tensorflow_quietly

MODEL_FILE = "model.keras"


def default_run_dir(model_name: str) -> Path:
    return Path("runs") / f"{model_name}-{datetime.now():%Y%m%d-%H%M%S}"


# Files that make a folder recognisably a run folder of this project; --force replaces
# nothing else.
RUN_MARKS = (MODEL_FILE, "config.json", "metrics.json")


def ordinary_mode(directory: bool = False) -> int:
    """The mode every file (0644) and folder (0755) of a run or export gets, less the umask:
    one deliberate mode, instead of the private 0600 of temporary files."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def refuse_working_folder(target: Path) -> None:
    """Raise if `target` is the working folder, a folder above it, home or the root: folders
    that no command replaces, whatever they hold (renaming the working folder away would
    also strand the shell in it)."""
    resolved = target.resolve()
    if resolved in (Path(resolved.anchor), Path.home().resolve()) or Path.cwd().resolve().is_relative_to(resolved):
        raise RunFolderError(f"{target} is the working folder, a folder above it, home or /: "
                             "never replaced; choose another --out")


def check_replaceable(target: Path, marks: tuple[str, ...], kind: str, protect=()) -> None:
    """Refuse to replace `target` (a non-empty folder, with --force) unless it is recognisably
    a `kind` folder of this project (holds one of `marks`), is not the working folder, a
    folder above it, home or the root, and holds none of the `protect` paths (the model being
    read). Resolved paths are compared, not spellings."""
    refuse_working_folder(target)
    resolved = target.resolve()
    for kept in protect:
        if Path(kept).resolve().is_relative_to(resolved):
            raise RunFolderError(f"{target} holds {kept}, the model being read: never replaced; "
                                 "choose another --out")
    if not any((resolved / mark).exists() for mark in marks):
        raise RunFolderError(f"{target} is not a {kind} folder (it holds none of {', '.join(marks)}); "
                             "--force replaces only those: choose another --out")


@dataclass
class StagedRun:
    """A run folder being written: files go into `path`, a hidden folder beside `target`,
    renamed onto `target` only once complete (see `new_run_dir`)."""

    path: Path
    target: Path
    replaces: bool  # an existing non-empty folder will be replaced


def _refuse_unless_replaceable(target: Path, force: bool, protect) -> bool:
    """Whether writing a run into `target` replaces a non-empty folder; raises if it may not."""
    if target.exists() and not target.is_dir():
        raise RunFolderError(f"{target} exists and is not a folder; choose another --out")
    if not target.is_dir():
        return False
    refuse_working_folder(target)
    if not any(target.iterdir()):
        return False
    if not force:
        raise RunFolderError(f"{target} already exists and is not empty; choose another --out or add --force")
    check_replaceable(target, RUN_MARKS, "run", protect)
    return True


@contextlib.contextmanager
def new_run_dir(path: str | Path, force: bool = False, protect=(), stage: bool = True):
    """Yield a StagedRun to write a run folder into; `path` gets it only when the block ends
    without an exception. An existing non-empty folder is refused unless `force` (and then
    only a run folder that is not `protect`-ed, see check_replaceable); it stays intact
    until the new one is complete, so Ctrl-C, SIGTERM, a full disk or a crash leave it, and
    no staging folder. With `stage=False` a NEW folder is written in place (an ensemble
    keeps its finished members after a crash that way); replacing one always stages."""
    target = Path(path)
    replaces = _refuse_unless_replaceable(target, force, protect)
    real = target.resolve()  # through a symlinked --out: replace the folder, not the link
    try:
        real.parent.mkdir(parents=True, exist_ok=True)
        if stage or replaces:
            staging = Path(tempfile.mkdtemp(prefix=f".{real.name}.staging-", dir=real.parent))
        else:
            staging = real
            staging.mkdir(exist_ok=True)
        staging.chmod(ordinary_mode(directory=True))
        (staging / "figures").mkdir(exist_ok=True)
    except OSError as error:
        raise RunFolderError(f"cannot create {target}: {error.strerror or error}") from None
    try:
        yield StagedRun(staging, target, replaces)
        if staging != real:
            swap_in(staging, real)
    except OSError as error:
        raise RunFolderError(f"cannot write {target}: {error.strerror or error}; "
                             "free some space or choose another folder") from None
    finally:
        if staging != real:
            shutil.rmtree(staging, ignore_errors=True)


def swap_in(staging: Path, target: Path) -> None:
    """Rename the complete `staging` onto `target`; an old `target` is moved aside first and
    deleted only after, or put back if the rename fails."""
    if not target.exists():
        os.replace(staging, target)
        return
    if not any(target.iterdir()):
        target.rmdir()
        os.replace(staging, target)
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.previous-", dir=target.parent))
    os.replace(target, aside / "run")
    try:
        os.replace(staging, target)
    except OSError:
        os.replace(aside / "run", target)
        raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)


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
        os.chmod(temporary, ordinary_mode())
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
