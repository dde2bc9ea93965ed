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
from dataclasses import dataclass
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


# Files that make a folder recognisably a run folder of this project; --force replaces
# nothing else.
RUN_MARKS = (MODEL_FILE, CONFIG_FILE, METRICS_FILE)


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
        (staging / FIGURES_DIR).mkdir(exist_ok=True)
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
