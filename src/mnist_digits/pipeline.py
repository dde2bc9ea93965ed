"""The main jobs end to end: train a model into a run folder, and evaluate any model
into metrics.json, figures and report.md. The command and the Python API both call these."""

from __future__ import annotations

import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

from . import figures, report, runs
from .classifiers import KerasClassifier, load_classifier
from .data import Mnist
from .evaluation import Evaluation, evaluate

def library_versions() -> dict:
    import keras
    import numpy
    import tensorflow

    return {"python": platform.python_version(), "tensorflow": tensorflow.__version__,
            "keras": keras.__version__, "numpy": numpy.__version__,
            "platform": platform.platform()}


def run_config(model_name: str, data: Mnist, model, **details) -> dict:
    """config.json of a run: the model and `details` (seed, recipe, members...), then what
    every run records: the command, when, the data it saw, library versions, parameters."""
    return {
        "model": model_name,
        **details,
        "command": " ".join(sys.argv),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "data": {"source": str(data.source), "sha256": data.checksums,
                 "train": len(data.x_train), "validation": len(data.x_val), "test": len(data.x_test)},
        "versions": library_versions(),
        "parameters": int(model.count_params()),
    }


def write_evaluation(classifier, data: Mnist, out: Path, config: dict,
                     history: dict | None = None) -> Evaluation:
    """metrics.json, the figures and report.md for `classifier` in folder `out`."""
    result = evaluate(classifier.predict_proba, data)
    result.metrics = metrics = {"model": config.get("model", classifier.name), **result.metrics}
    runs.write_json(out / runs.METRICS_FILE, metrics)
    drawn = []
    if history:
        figures.training_history(history, out / runs.FIGURES_DIR / "training_history.png",
                                 title=f"{metrics['model']}: training history")
        drawn.append("training_history")
    figures.confusion_matrix(metrics["confusion_matrix"], out / runs.FIGURES_DIR / "confusion_matrix.png",
                             title=f"{metrics['model']}: confusion matrix (test set)")
    figures.misclassified(data.x_test, data.y_test, result.test_probabilities,
                          out / runs.FIGURES_DIR / "misclassified.png")
    drawn += ["confusion_matrix", "misclassified"]
    report.write_report(out / runs.REPORT_FILE, metrics, config, history, drawn)
    return result


def train_run(model_name: str, data: Mnist, out: str | Path | None = None, force: bool = False,
              epochs: int | None = None, batch_size: int | None = None, seed: int = 0,
              verbose: int | str = "auto", arguments: dict | None = None) -> tuple[Path, dict, bool]:
    """Train `model_name` and write its whole run folder. Returns (folder, metrics, interrupted)."""
    import keras

    from .training import recipe_dict, train

    run_dir = runs.prepare_run_dir(out or runs.default_run_dir(model_name), force)
    tensorboard = keras.callbacks.TensorBoard(log_dir=str(run_dir / runs.TENSORBOARD_DIR))
    result = train(model_name, data, epochs, batch_size, seed, [tensorboard], verbose)
    runs.save_keras_model(result.model, run_dir / runs.MODEL_FILE)
    runs.write_history_csv(result.history, run_dir / runs.HISTORY_FILE)
    config = run_config(model_name, data, result.model, seed=seed, recipe=recipe_dict(result.recipe),
                        arguments=arguments or {}, train_seconds=round(result.seconds, 2),
                        best_epoch=result.best_epoch, interrupted=result.interrupted)
    runs.write_json(run_dir / runs.CONFIG_FILE, config)
    classifier = KerasClassifier(result.model, model_name)
    evaluation = write_evaluation(classifier, data, run_dir, config, result.history)
    return run_dir, evaluation.metrics, result.interrupted


def evaluate_model(path: str | Path, data: Mnist, out: str | Path | None = None,
                   force: bool = False) -> tuple[Path, dict]:
    """Evaluate a saved model (run folder, .keras, or export) into `out`."""
    classifier = load_classifier(path)
    path = Path(path)
    in_place = path.is_dir() and (path / runs.MODEL_FILE).is_file()  # a run folder
    out_dir = Path(out) if out else path if in_place else path.parent / f"{path.stem}-evaluation"
    if out_dir != path:
        out_dir = runs.prepare_run_dir(out_dir, force)
    else:
        (out_dir / runs.FIGURES_DIR).mkdir(exist_ok=True)
    # The classifier's own name: an export says which form it is ("mlp (tflite int8)").
    config = {**classifier.info.get("config", {}), "model": classifier.name}
    history_file = path / runs.HISTORY_FILE
    history = runs.read_history_csv(history_file) if history_file.is_file() else None
    evaluation = write_evaluation(classifier, data, out_dir, config, history)
    return out_dir, evaluation.metrics

