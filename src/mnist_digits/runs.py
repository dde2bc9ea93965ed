"""The run folder: its layout (the file names below), atomic writes, and reading it back.

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
from datetime import datetime
from pathlib import Path

from .errors import ModelFileError, RunFolderError

MODEL_FILE = "model.keras"
CONFIG_FILE = "config.json"
HISTORY_FILE = "history.csv"
METRICS_FILE = "metrics.json"
FIGURES_DIR = "figures"
REPORT_FILE = "report.md"
TENSORBOARD_DIR = "tensorboard"


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
        (path / FIGURES_DIR).mkdir(parents=True, exist_ok=True)
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
