"""The main jobs end to end: train a model into a run folder, and evaluate any model
into metrics.json, figures and report.md. The command and the Python API both call these."""

from __future__ import annotations

import platform
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from . import figures, report, runs
from .classifiers import KerasClassifier, load_classifier
from .data import Mnist, to_model_input
from .errors import RunInterruptedError, UsageError
from .evaluation import Evaluation, evaluate
from .feedback import (FINETUNE_EPOCHS, FINETUNE_LEARNING_RATE_FACTOR, MAX_MNIST_DROP_POINTS,
                       join_training)
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


def held_out_accuracy(classifier, extra) -> float | None:
    """Accuracy on the collected drawings held out from training (feedback.ExtraData)."""
    if not len(extra.y_held_out):
        return None
    predicted = classifier.predict_proba(to_model_input(extra.x_held_out)).argmax(axis=1)
    return float(np.mean(predicted == extra.y_held_out))


def collected_metrics(classifier, extra, test_accuracy: float, before: dict | None) -> dict:
    """metrics.json's "collected": accuracy on the held-out drawings next to MNIST test
    accuracy, and with `before` (the base model's), how both moved."""
    metrics = {"source": extra.source, "train": len(extra.y_train), "held_out": len(extra.y_held_out),
               "held_out_accuracy": held_out_accuracy(classifier, extra),
               "mnist_test_accuracy": test_accuracy}
    if before:
        drop = 100 * (before["mnist_test_accuracy"] - test_accuracy)
        metrics.update(before=before, mnist_test_drop_points=round(drop, 3),
                       mnist_test_fell=drop > MAX_MNIST_DROP_POINTS)
    return metrics


def write_evaluation(classifier, data: Mnist, out: Path, config: dict,
                     history: dict | None = None, timings: Timings | None = None, extra=None,
                     before: dict | None = None) -> Evaluation:
    """metrics.json, the figures and report.md for `classifier` in folder `out`; with `extra`
    (feedback.ExtraData), also its accuracy on the held-out collected drawings.
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
            if extra is not None:
                metrics["collected"] = collected_metrics(classifier, extra, metrics["test"]["accuracy"],
                                                         before)
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
              extra=None, timings: Timings | None = None) -> tuple[Path, dict, bool]:
    """Train `model_name` and write its whole run folder. Returns (folder, metrics, interrupted).
    With `extra` (feedback.ExtraData), its training drawings join the training split.
    config.json's "timings" say where the seconds went (`timings` may bring earlier phases)."""
    from .models import build_model
    from .training import recipe_for, seed_everything

    timings = timings or Timings()
    seed_everything(seed)
    with timings.phase("build"):
        model = build_model(model_name)
    return _fit_run(model, model_name, recipe_for(model_name, epochs, batch_size),
                    data, out or runs.default_run_dir(model_name), force, seed, verbose,
                    arguments, timings, extra)


def finetune_run(run: str | Path, data: Mnist, extra, out: str | Path | None = None,
                 force: bool = False, epochs: int = FINETUNE_EPOCHS, seed: int = 0,
                 verbose: int | str = "auto", arguments: dict | None = None) -> tuple[Path, dict, bool]:
    """A few epochs more for a trained run, at a low learning rate, on MNIST with the
    collected drawings joined; metrics before (the run's) and after. Returns as train_run."""
    from dataclasses import replace

    from .training import Recipe, seed_everything

    base = load_classifier(run)
    base_config = base.info.get("config", {})
    if not isinstance(base, KerasClassifier) or "recipe" not in base_config:
        raise UsageError(f"{run}: fine-tuning needs a run folder written by mnist-digits train")
    recipe = Recipe(**base_config["recipe"])
    recipe = replace(recipe, epochs=epochs, warmup_epochs=0.0,
                     learning_rate=recipe.learning_rate * FINETUNE_LEARNING_RATE_FACTOR)
    before = {"run": str(run), "mnist_test_accuracy": base.info["test"]["accuracy"],
              "held_out_accuracy": held_out_accuracy(base, extra)}
    seed_everything(seed)
    model_name = base_config.get("model", base.name)
    return _fit_run(base.model, model_name, recipe, data,
                    out or runs.default_run_dir(f"{model_name}-finetuned"), force, seed, verbose,
                    arguments, Timings(), extra, before)


def _fit_run(model, model_name: str, recipe, data: Mnist, out, force: bool, seed: int, verbose,
             arguments: dict | None, timings: Timings, extra=None, before: dict | None = None):
    import keras

    from .training import Timed, fit, recipe_dict

    with runs.new_run_dir(out, force) as run:
        training_data, repeats = join_training(data, extra) if extra is not None else (data, 0)
        tensorboard = Timed(keras.callbacks.TensorBoard(log_dir=str(run.path / runs.TENSORBOARD_DIR)),
                            timings, "tensorboard")
        result = fit(model, training_data, recipe, seed, [tensorboard], verbose)
        if result.interrupted and run.replaces:  # an interrupted run never replaces a finished one
            raise RunInterruptedError(f"interrupted; {run.target} still holds the previous run "
                                      "(the new one was not kept)")
        tracing = result.first_epoch_extra() or 0.0
        timings.add("first-epoch extra (graph tracing)", tracing)
        timings.add("fit", result.seconds - tracing - timings.seconds.get("tensorboard", 0.0))
        with timings.phase("save"):
            runs.save_keras_model(result.model, run.path / runs.MODEL_FILE)
            runs.write_history_csv(result.history, run.path / runs.HISTORY_FILE)
        config = run_config(model_name, training_data, result.model, seed=seed,
                            recipe=recipe_dict(result.recipe), arguments=arguments or {},
                            train_seconds=round(result.seconds, 2), best_epoch=result.best_epoch,
                            interrupted=result.interrupted)
        if extra is not None:
            config["extra_data"] = {"source": extra.source, "train": len(extra.y_train),
                                    "held_out": len(extra.y_held_out), "repeats": repeats}
        if before is not None:
            config["finetuned_from"] = before["run"]
        runs.write_json(run.path / runs.CONFIG_FILE, config)
        classifier = KerasClassifier(result.model, model_name)
        evaluation = write_evaluation(classifier, data, run.path, config, result.history, timings,
                                      extra, before)
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
