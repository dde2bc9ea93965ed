"""The main jobs end to end: train a model into a run folder, and evaluate any model
into metrics.json, figures and report.md. The command and the Python API both call these."""

from __future__ import annotations

import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

from . import figures, report, runs
from .classifiers import KerasClassifier, load_classifier
from .data import Mnist
from .errors import RunInterruptedError
from .evaluation import Evaluation, evaluate
from .timings import Timings

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
                     history: dict | None = None, timings: Timings | None = None) -> Evaluation:
    """metrics.json, the figures and report.md for `classifier` in folder `out`.
    The figures are drawn in threads: the training history beside the evaluation (the model's
    work releases the GIL), the other two beside each other."""
    timings = timings or Timings()
    model = config.get("model", classifier.name)
    figures_dir = out / runs.FIGURES_DIR
    with ThreadPoolExecutor(2) as pool:
        drawing = [pool.submit(figures.training_history, history, figures_dir / "training_history.png",
                               title=f"{model}: training history")] if history else []
        with timings.phase("evaluation"):
            result = evaluate(classifier.predict_proba, data)
            result.metrics = metrics = {"model": model, **result.metrics}
            runs.write_json(out / runs.METRICS_FILE, metrics)
        with timings.phase("figures (after evaluation)"):
            drawing += [pool.submit(figures.confusion_matrix, metrics["confusion_matrix"],
                                    figures_dir / "confusion_matrix.png",
                                    title=f"{model}: confusion matrix (test set)"),
                        pool.submit(figures.misclassified, data.x_test, data.y_test,
                                    result.test_probabilities, figures_dir / "misclassified.png")]
            for done in drawing:
                done.result()  # raises what a drawing raised
    drawn = (["training_history"] if history else []) + ["confusion_matrix", "misclassified"]
    with timings.phase("report"):
        report.write_report(out / runs.REPORT_FILE, metrics, config, history, drawn)
    return result


def train_run(model_name: str, data: Mnist, out: str | Path | None = None, force: bool = False,
              epochs: int | None = None, batch_size: int | None = None, seed: int = 0,
              verbose: int | str = "auto", arguments: dict | None = None,
              timings: Timings | None = None) -> tuple[Path, dict, bool]:
    """Train `model_name` and write its whole run folder. Returns (folder, metrics, interrupted).
    config.json's "timings" say where the seconds went (`timings` may bring earlier phases)."""
    import keras

    from .training import Timed, recipe_dict, train

    timings = timings or Timings()
    with runs.new_run_dir(out or runs.default_run_dir(model_name), force) as run:
        tensorboard = Timed(keras.callbacks.TensorBoard(log_dir=str(run.path / runs.TENSORBOARD_DIR)),
                            timings, "tensorboard")
        started = time.perf_counter()
        result = train(model_name, data, epochs, batch_size, seed, [tensorboard], verbose)
        if result.interrupted and run.replaces:  # an interrupted run never replaces a finished one
            raise RunInterruptedError(f"interrupted; {run.target} still holds the previous run "
                                      "(the new one was not kept)")
        tracing = result.first_epoch_extra() or 0.0
        timings.add("build", time.perf_counter() - started - result.seconds)
        timings.add("first-epoch extra (graph tracing)", tracing)
        timings.add("fit", result.seconds - tracing - timings.seconds.get("tensorboard", 0.0))
        with timings.phase("save"):
            runs.save_keras_model(result.model, run.path / runs.MODEL_FILE)
            runs.write_history_csv(result.history, run.path / runs.HISTORY_FILE)
        config = run_config(model_name, data, result.model, seed=seed, recipe=recipe_dict(result.recipe),
                            arguments=arguments or {}, train_seconds=round(result.seconds, 2),
                            best_epoch=result.best_epoch, interrupted=result.interrupted)
        runs.write_json(run.path / runs.CONFIG_FILE, config)
        classifier = KerasClassifier(result.model, model_name)
        evaluation = write_evaluation(classifier, data, run.path, config, result.history, timings)
        runs.write_json(run.path / runs.CONFIG_FILE, {**config, "timings": timings.rounded()})
    return run.target, evaluation.metrics, result.interrupted


def evaluate_model(path: str | Path, data: Mnist, out: str | Path | None = None,
                   force: bool = False) -> tuple[Path, dict]:
    """Evaluate a saved model (run folder, .keras, or export) into `out`."""
    classifier = load_classifier(path)
    path = Path(path)
    run_folder = path.is_dir() and (path / runs.MODEL_FILE).is_file()
    out_dir = Path(out) if out else path if run_folder else path.parent / f"{path.stem}-evaluation"
    # The classifier's own name: an export says which form it is ("mlp (tflite int8)").
    config = {**classifier.info.get("config", {}), "model": classifier.name}
    history_file = path / runs.HISTORY_FILE
    history = runs.read_history_csv(history_file) if history_file.is_file() else None
    if run_folder and out_dir.resolve() == path.resolve():  # in place: beside the model, never over it
        (out_dir / runs.FIGURES_DIR).mkdir(exist_ok=True)
        evaluation = write_evaluation(classifier, data, out_dir, config, history)
        return out_dir, evaluation.metrics
    with runs.new_run_dir(out_dir, force, protect=[path]) as run:
        evaluation = write_evaluation(classifier, data, run.path, config, history)
    return run.target, evaluation.metrics
