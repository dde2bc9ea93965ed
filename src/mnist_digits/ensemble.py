"""Ensembles: several trained models as ONE Keras model that averages their probabilities.

The result is a plain functional model (members nested inside, a Keras `Average` on top,
optionally test-time augmentation made of built-in padding and cropping layers), saved
as model.keras in a normal run folder. So evaluate, predict, serve and export load and
use it like any other model, with safe_mode and without code of ours.

    train_ensemble("cnn", data, members=5)   # train 5 seeds, then combine
    ensemble_runs([run_a, run_b, run_c], data) # combine run folders trained before
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path

from . import runs
from .data import Mnist
from .errors import UsageError

# Test-time augmentation: the image itself and the image shifted one pixel each way.
TTA_SHIFTS = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))


def shifted_views(image, shifts=TTA_SHIFTS):
    """The image batch (n, 28, 28) moved by each (rows, columns) in `shifts`, black filling in.
    Padding then cropping: built-in layers only, so the model stays loadable and exportable."""
    import keras

    grid = keras.layers.Reshape((28, 28, 1))(image)
    padded = keras.layers.ZeroPadding2D(1)(grid)
    views = []
    for rows, columns in shifts:
        # Cropping the padded 30x30 more on one side than the other moves the digit.
        cropped = keras.layers.Cropping2D(((1 - rows, 1 + rows), (1 - columns, 1 + columns)))(padded)
        views.append(keras.layers.Reshape((28, 28))(cropped))
    return views


def combine(models: list, name: str = "ensemble", test_time_augmentation: bool = False):
    """One model whose output is the mean of `models`' softmax outputs (over shifted
    views of the input too, if `test_time_augmentation`)."""
    import keras

    if not models:
        raise UsageError("an ensemble needs at least one model")
    image = keras.Input(shape=(28, 28), name="image")
    views = shifted_views(image) if test_time_augmentation else [image]
    outputs = []
    for index, model in enumerate(models):
        model.name = f"member_{index}"  # nested models need distinct names to be saved
        outputs += [model(view) for view in views]
    probabilities = keras.layers.Average(name="mean_probability")(outputs) if len(outputs) > 1 else outputs[0]
    return keras.Model(image, probabilities, name=name)


def _member_summary(run_dir: Path) -> dict:
    classifier_info = runs.read_json(run_dir / "metrics.json")
    config = runs.read_json(run_dir / "config.json")
    return {"run": str(run_dir), "model": config.get("model"), "seed": config.get("seed"),
            "test_accuracy": classifier_info.get("test", {}).get("accuracy"),
            "train_seconds": config.get("train_seconds")}


def _write_ensemble_run(member_dirs: list[Path], data: Mnist, run_dir: Path, name: str,
                        test_time_augmentation: bool, extra_config: dict) -> tuple[Path, dict]:
    from .pipeline import library_versions, write_evaluation

    members = [runs.load_keras_model(Path(d) / runs.MODEL_FILE) for d in member_dirs]
    model = combine(members, name=name.replace("-", "_"), test_time_augmentation=test_time_augmentation)
    runs.save_keras_model(model, run_dir / runs.MODEL_FILE)
    summaries = [_member_summary(Path(d)) for d in member_dirs]
    config = {
        "model": name,
        "members": summaries,
        "test_time_augmentation": list(map(list, TTA_SHIFTS)) if test_time_augmentation else None,
        "command": " ".join(sys.argv),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "data": {"source": str(data.source), "sha256": data.checksums,
                 "train": len(data.x_train), "validation": len(data.x_val), "test": len(data.x_test)},
        "versions": library_versions(),
        "parameters": int(model.count_params()),
        "train_seconds": round(sum(s["train_seconds"] or 0 for s in summaries), 2),
        **extra_config,
    }
    runs.write_json(run_dir / "config.json", config)
    evaluation = write_evaluation(runs.KerasClassifier(model, name), data, run_dir, config)
    return run_dir, evaluation.metrics


def _finished_member(member_dir: Path, model_name: str, recipe: dict) -> bool:
    """Whether `member_dir` holds a member trained to the end with this model and recipe;
    one trained differently is refused rather than silently mixed in."""
    if not (member_dir / runs.MODEL_FILE).is_file() or not (member_dir / "metrics.json").is_file():
        return False
    config = runs.read_json(member_dir / "config.json")
    if config.get("model") != model_name or config.get("recipe") != recipe:
        raise UsageError(f"{member_dir} was trained with another model or recipe; "
                         "resume with the same --model, --epochs and --batch-size, or use --force")
    return not config.get("interrupted")


def train_ensemble(model_name: str, data: Mnist, members: int, out: str | Path | None = None,
                   force: bool = False, epochs: int | None = None, batch_size: int | None = None,
                   seed: int = 0, verbose: int | str = "auto", arguments: dict | None = None,
                   test_time_augmentation: bool = False, resume: bool = False) -> tuple[Path, dict, bool]:
    """Train `members` copies of `model_name` with seeds seed, seed+1, ... and write one run
    folder: the ensemble's model.keras, metrics, figures and report, with each member's own
    run folder under members/. Returns (folder, metrics, interrupted); after Ctrl-C the
    ensemble holds the members finished so far. With `resume`, members already trained to
    the end in `out` (after Ctrl-C, a crash, or for a smaller ensemble) are kept, not retrained."""
    from .pipeline import train_run
    from .training import recipe_dict, recipe_for

    if members < 1:
        raise UsageError(f"--ensemble must be at least 1 (got {members})")
    if resume and (force or out is None):
        raise UsageError("--resume needs the --out folder of the ensemble to continue, and no --force")
    name = f"{model_name}-ensemble{members}"
    run_dir = Path(out) if resume else runs.prepare_run_dir(out or runs.default_run_dir(name), force)
    if resume and not (run_dir / "members").is_dir():
        raise UsageError(f"{run_dir} holds no ensemble members to resume; leave out --resume to start one")
    recipe = recipe_dict(recipe_for(model_name, epochs, batch_size))
    member_dirs, interrupted = [], False
    for index in range(members):
        member_dir = run_dir / "members" / f"seed-{seed + index}"
        member_dirs.append(member_dir)
        which = f"Member {index + 1} of {members} (seed {seed + index})"
        if resume and _finished_member(member_dir, model_name, recipe):
            print(f"{which}: kept, trained earlier in {member_dir}", flush=True)
            continue
        print(f"{which}: training into {member_dir}", flush=True)
        _, _, interrupted = train_run(model_name, data, out=member_dir, epochs=epochs,
                                      batch_size=batch_size, seed=seed + index, verbose=verbose,
                                      arguments=arguments, force=resume)
        if interrupted:
            break
    run_dir, metrics = _write_ensemble_run(
        member_dirs, data, run_dir, name, test_time_augmentation,
        {"seed": seed, "arguments": arguments or {}, "interrupted": interrupted},
    )
    return run_dir, metrics, interrupted


def ensemble_runs(run_dirs: list[str | Path], data: Mnist, out: str | Path | None = None,
                  force: bool = False, name: str = "ensemble",
                  test_time_augmentation: bool = False) -> tuple[Path, dict]:
    """Combine run folders trained before (any registered models) into one ensemble run folder."""
    run_dirs = [Path(d) for d in run_dirs]
    for run_dir in run_dirs:
        if not (run_dir / runs.MODEL_FILE).is_file():
            problem = "is not a run folder (no model.keras)" if run_dir.exists() else "does not exist"
            raise UsageError(f"{run_dir} {problem}; pass folders written by mnist-digits train")
    out_dir = runs.prepare_run_dir(out or runs.default_run_dir(name), force)
    return _write_ensemble_run(run_dirs, data, out_dir, name, test_time_augmentation, {})
