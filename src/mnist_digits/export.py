"""Writing exports of a trained model (classifiers.py reads them back).

    savedmodel      <out>/<version>/saved_model.pb + variables/   (TensorFlow Serving layout)
    tflite          <out>/model.tflite   float32, or --quantize float16 / int8 (full integer)

Every export folder also holds model_info.json (the source run's metrics and config, the
export's own measurements and the SHA-256 of its files) and MODEL_CARD.md. An export is
built in a hidden folder beside its target, measured on the full test set, and renamed
into place only if it passed: a failed, interrupted or too-inaccurate export leaves
nothing under the requested name.

classifiers.load_classifier loads an export as it loads a Keras model, so evaluate, predict
and serve take exports as they take Keras models.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from . import runs
from .classifiers import (INFO_FILE, INPUT_NAME, OUTPUT_NAME, SIGNATURE, TFLITE_FILE, KerasClassifier,
                          load_classifier, load_export)
from .data import Mnist, sha256_of, to_model_input
from .evaluation import per_class_metrics
from .errors import MnistDigitsError, ModelFileError, RunFolderError, UsageError, first_line
from .model_card import render_model_card
from .tensorflow_import import quiet_stderr

FORMATS = ("savedmodel", "tflite")
QUANTIZATIONS = ("float32", "float16", "int8")  # TFLite only

CARD_FILE = "MODEL_CARD.md"
SIDE_FILES = (INFO_FILE, CARD_FILE)
# Files that make a folder recognisably an export; --force replaces nothing else.
EXPORT_MARKS = (INFO_FILE, CARD_FILE, "saved_model.pb", TFLITE_FILE)

DEFAULT_MAX_ACCURACY_DROP = 0.5  # percentage points of test accuracy an export may lose
REPRESENTATIVE_IMAGES = 500  # training images that calibrate int8 ranges


class AccuracyDropError(MnistDigitsError):
    """The export ran but lost more test accuracy than allowed; nothing was written."""

    exit_code = 1


@dataclass
class ExportResult:
    path: Path  # what to load or serve: <out>/<version> or <out>/model.tflite
    form: str  # savedmodel, tflite-float32, tflite-float16, tflite-int8
    size_bytes: int
    test_accuracy: float
    source_test_accuracy: float
    source_size_bytes: int
    max_abs_difference: float  # largest |p_export - p_keras| over the test set
    card: Path


def form_name(format: str, quantize: str | None = None) -> str:
    return "savedmodel" if format == "savedmodel" else f"tflite-{quantize or 'float32'}"


def check_options(format: str, quantize: str | None, version: int | None) -> None:
    if format not in FORMATS:
        raise UsageError(f"unknown export format {format!r}; choose one of: {', '.join(FORMATS)}")
    if quantize is not None and format != "tflite":
        raise UsageError(f"--quantize applies to --format tflite only (got --format {format})")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise UsageError(f"unknown quantization {quantize!r}; choose one of: {', '.join(QUANTIZATIONS)}")
    if version is not None and format != "savedmodel":
        raise UsageError(f"--version applies to --format savedmodel only (got --format {format})")
    if version is not None and version < 1:
        raise UsageError(f"--version must be a positive integer (got {version}); TF Serving counts from 1")


def default_out(model_path: str | Path, form: str) -> Path:
    """<run folder>/export/<form>, or <folder of a .keras file>/<stem>-export/<form>."""
    model_path = Path(model_path)
    if model_path.is_dir():
        return model_path / "export" / form
    return model_path.parent / f"{model_path.stem}-export" / form


# --- exporting ---------------------------------------------------------------------------

def export_model(model_path: str | Path, data: Mnist, format: str = "savedmodel",
                 quantize: str | None = None, out: str | Path | None = None, version: int | None = None,
                 force: bool = False,
                 max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP) -> ExportResult:
    """Export a run folder or .keras file; measure the export on the full test set.

    Raises AccuracyDropError (and writes nothing) if the export's test accuracy is more
    than `max_accuracy_drop` points below the Keras model's.
    """
    check_options(format, quantize, version)
    form = form_name(format, quantize)
    if format == "savedmodel":
        version = version or 1
    source = load_classifier(model_path)
    if not isinstance(source, KerasClassifier):
        raise ModelFileError(f"{model_path} is already an export; export from the run folder "
                             "or .keras file it came from")
    out = Path(out) if out else default_out(model_path, form)
    target = out / str(version) if format == "savedmodel" else out
    _check_target(out, target, format, force, model_path)

    created = _make_parents(target.parent)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        if format == "savedmodel":
            write_savedmodel(source.model, staging)
        else:
            tflite = convert_to_tflite(source.model, quantize or "float32", data)
            (staging / TFLITE_FILE).write_bytes(tflite)
        info = _export_info(source, model_path, form, version, staging)
        runs.write_json(staging / INFO_FILE, info)

        exported = load_export(staging)
        images, labels = to_model_input(data.x_test), data.y_test.astype(np.int64)
        source_probabilities = source.predict_proba(images)
        export_probabilities = exported.predict_proba(images)
        source_accuracy = float(np.mean(source_probabilities.argmax(axis=1) == labels))
        export_accuracy = float(np.mean(export_probabilities.argmax(axis=1) == labels))
        difference = float(np.abs(export_probabilities - source_probabilities).max())
        drop = 100 * (source_accuracy - export_accuracy)
        if drop > max_accuracy_drop:
            raise AccuracyDropError(
                f"{form} export reaches {export_accuracy:.2%} test accuracy, {drop:.2f} points below "
                f"the Keras model's {source_accuracy:.2%} (allowed: {max_accuracy_drop:g}); "
                "nothing was written: use another --quantize, or --max-accuracy-drop to accept it")

        source_size = _source_size(model_path)
        info["export"].update({
            "test_accuracy": export_accuracy, "test_count": int(len(labels)),
            "source_test_accuracy": source_accuracy, "source_size_bytes": source_size,
            "max_abs_difference": difference,
            "per_class": per_class_metrics(labels, export_probabilities.argmax(axis=1)),
        })
        runs.write_json(staging / INFO_FILE, info)
        runs.write_text(staging / CARD_FILE, render_model_card(info))
        _make_readable(staging)
        runs.swap_in(staging, target)
    except BaseException as error:  # Ctrl-C included: no half-written export stays behind
        shutil.rmtree(staging, ignore_errors=True)
        for folder in created:  # folders this export made, if they stayed empty
            with contextlib.suppress(OSError):
                folder.rmdir()
        if isinstance(error, OSError):
            raise RunFolderError(f"cannot write {target}: {error.strerror or error}; "
                                 "free some space or choose another --out") from None
        raise
    return ExportResult(
        path=target / TFLITE_FILE if format == "tflite" else target, form=form,
        size_bytes=info["export"]["size_bytes"], test_accuracy=export_accuracy,
        source_test_accuracy=source_accuracy, source_size_bytes=source_size,
        max_abs_difference=difference, card=target / CARD_FILE,
    )


def write_savedmodel(model, folder: Path) -> None:
    """A SavedModel whose `serving_default` maps images [n, 28, 28] -> probabilities [n, 10]."""
    import keras
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name=SIGNATURE,
        fn=lambda images: {OUTPUT_NAME: model(images, training=False)},
        input_signature=[tf.TensorSpec([None, 28, 28], tf.float32, name=INPUT_NAME)],
    )
    archive.write_out(str(folder), verbose=False)


def convert_to_tflite(model, quantize: str, data: Mnist) -> bytes:
    """TFLite flatbuffer: float32; float16 weights; or int8 everywhere, input and output
    included, with activation ranges calibrated on training images."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="mnist-digits-export-") as saved:
        # Converting the SavedModel (not the Keras object) gives the TFLite file the
        # same signature, names and dynamic batch as the SavedModel export.
        write_savedmodel(model, Path(saved))
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        if quantize == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif quantize == "int8":
            calibration = representative_images(data)
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: ([image[None]] for image in calibration)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        try:
            with quiet_stderr():
                return converter.convert()
        except Exception as error:  # the converter raises several types; one line is enough
            raise ModelFileError(f"TFLite conversion ({quantize}) failed: {first_line(error)}") from None


def representative_images(data: Mnist, count: int = REPRESENTATIVE_IMAGES) -> np.ndarray:
    """A fixed random sample of the training split (never the test set) as float input."""
    if len(data.x_train) == 0:
        raise UsageError("int8 quantization needs training images to calibrate on; the data has none")
    picked = np.random.default_rng(0).choice(len(data.x_train), min(count, len(data.x_train)),
                                             replace=False)
    return to_model_input(data.x_train[np.sort(picked)])


def _check_target(out: Path, target: Path, format: str, force: bool, model_path) -> None:
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"{out} exists and is not a folder; choose another --out")
    if target.exists() and not target.is_dir():
        raise RunFolderError(f"{target} exists and is not a folder; choose another --out or --version")
    if target.is_dir():
        runs.refuse_working_folder(target)
    if force:
        if target.is_dir() and any(target.iterdir()):
            runs.check_replaceable(target, EXPORT_MARKS, "export", protect=[model_path])
        return
    if target.is_dir() and any(target.iterdir()):
        hint = "another --version, " if format == "savedmodel" else ""
        raise RunFolderError(f"{target} already exists and is not empty; choose {hint}another --out, "
                             "or add --force to replace it")
    if format == "savedmodel" and out.is_dir():
        # A TF Serving base folder may gain a new version; any other folder is refused.
        others = [entry.name for entry in out.iterdir()
                  if not entry.name.startswith(".") and not (entry.is_dir() and entry.name.isdigit())]
        if others:
            raise RunFolderError(f"{out} already exists and is not a TF Serving model folder (it holds "
                                 f"{others[0]}); choose another --out, or add --force")


def _make_parents(folder: Path) -> list[Path]:
    """mkdir -p, returning the folders it created (deepest first) so a failure can undo it."""
    created = []
    while not folder.exists():
        created.append(folder)
        folder = folder.parent
    for new in reversed(created):
        try:
            new.mkdir()
        except OSError as error:
            raise RunFolderError(f"cannot create {new}: {error.strerror}") from None
    return created


def _make_readable(folder: Path) -> None:
    """Ordinary permissions (umask) instead of the private ones of temporary files, so a
    TF Serving container or another user can read the export."""
    folder.chmod(runs.ordinary_mode(directory=True))
    for path in folder.rglob("*"):
        path.chmod(runs.ordinary_mode(directory=path.is_dir()))


def _export_info(source, model_path, form: str, version: int | None, folder: Path) -> dict:
    import keras
    import tensorflow as tf

    files = _model_files(folder)
    info = {key: value for key, value in source.info.items() if key != "config"}
    return {
        "metrics": info,
        "config": source.info.get("config", {}),
        "export": {
            "form": form,
            "format": form.split("-")[0],
            "quantize": form.split("-")[1] if "-" in form else None,
            "version": version,
            "source": str(Path(model_path).resolve()),
            "model": source.info.get("config", {}).get("model", source.name),
            "signature": {"name": SIGNATURE, "input": INPUT_NAME, "output": OUTPUT_NAME},
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "versions": {"tensorflow": tf.__version__, "keras": keras.__version__,
                         "ai_edge_litert": _litert_version()},
            "size_bytes": sum((folder / name).stat().st_size for name in files),
            "files": files,
        },
    }


def _model_files(folder: Path) -> dict[str, str]:
    """relative path -> sha256 of every file of the model proper (not the card or info)."""
    return {path.relative_to(folder).as_posix(): sha256_of(path)
            for path in sorted(folder.rglob("*"))
            if path.is_file() and path.relative_to(folder).as_posix() not in SIDE_FILES}


def _source_size(model_path) -> int:
    path = Path(model_path)
    return (path / runs.MODEL_FILE if path.is_dir() else path).stat().st_size


def _litert_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ai-edge-litert")
    except PackageNotFoundError:
        return "not installed"
