"""Ensembles: several trained models as ONE Keras model that averages their probabilities.

The result is a plain functional model (members nested inside, a Keras `Average` on top,
optionally test-time augmentation made of frozen built-in Dense layers), saved
as model.keras in a normal run folder. So evaluate, predict, serve and export load and
use it like any other model, with safe_mode and without code of ours.

    train_ensemble("cnn", data, members=5)   # train 5 seeds, then combine
    ensemble_runs([run_a, run_b, run_c], data) # combine run folders trained before
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from . import runs
from .classifiers import KerasClassifier, load_keras_model
from .data import Mnist
from .errors import RunInterruptedError, UsageError
from .pipeline import run_config, train_run, write_evaluation

MEMBERS_DIR = "members"  # each member's own run folder, under the ensemble's

# Test-time augmentation: the image itself, rotated 6 degrees each way, and scaled 7% down
# and up -- inside the distortions the cnn recipe trains on (10 degrees, 10%). One-pixel
# shifts were tried first and changed nothing measurable.
TTA_VIEWS = ((0.0, 1.0), (6.0, 1.0), (-6.0, 1.0), (0.0, 0.93), (0.0, 1.07))


def affine_matrix(degrees: float, scale: float, size: int = 28) -> np.ndarray:
    """The (size*size, size*size) matrix M with warped.flat = image.flat @ M: rotation by
    `degrees` and scaling by `scale` about the image centre, bilinear, black outside -- the
    warp training.affine_warp applies, here as a fixed matrix a plain Dense layer can hold."""
    centre = (size - 1) / 2.0
    angle = np.deg2rad(degrees)
    cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
    rows, columns = np.mgrid[0:size, 0:size].reshape(2, -1).astype(np.float64)
    # Where each output pixel reads from (the map training.affine_warp gives the TensorFlow op).
    x = cos * (columns - centre) + sin * (rows - centre) + centre
    y = -sin * (columns - centre) + cos * (rows - centre) + centre
    x0, y0 = np.floor(x), np.floor(y)
    matrix = np.zeros((size * size, size * size), np.float32)
    target = np.arange(size * size)
    for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1)):
        xs, ys = x0 + dx, y0 + dy
        weight = (1 - np.abs(x - xs)) * (1 - np.abs(y - ys))
        inside = (xs >= 0) & (xs < size) & (ys >= 0) & (ys < size)
        source = (ys * size + xs)[inside].astype(int)
        np.add.at(matrix, (source, target[inside]), weight[inside])
    return matrix


def augmented_views(image, views=TTA_VIEWS):
    """The image batch (n, 28, 28) under each (degrees, scale) of `views`. Each warp is a fixed
    linear map, so a frozen built-in Dense layer holds it: the model stays loadable with
    safe_mode and exportable, and costs 784 x 784 multiply-adds per view, little beside a member."""
    import keras

    flat = keras.layers.Flatten()(image)
    outputs = []
    for index, (degrees, scale) in enumerate(views):
        if (degrees, scale) == (0.0, 1.0):
            outputs.append(image)
            continue
        warp = keras.layers.Dense(28 * 28, use_bias=False, trainable=False, name=f"view_{index}")
        warped = warp(flat)
        warp.set_weights([affine_matrix(degrees, scale)])
        outputs.append(keras.layers.Reshape((28, 28))(warped))
    return outputs


def combine(models: list, name: str = "ensemble", test_time_augmentation: bool = False):
    """One model whose output is the mean of `models`' softmax outputs (over rotated and
    scaled views of the input too, if `test_time_augmentation`)."""
    import keras

    if not models:
        raise UsageError("an ensemble needs at least one model")
    image = keras.Input(shape=(28, 28), name="image")
    views = augmented_views(image) if test_time_augmentation else [image]
    outputs = []
    for index, model in enumerate(models):
        model.name = f"member_{index}"  # nested models need distinct names to be saved
        outputs += [model(view) for view in views]
    probabilities = keras.layers.Average(name="mean_probability")(outputs) if len(outputs) > 1 else outputs[0]
    return keras.Model(image, probabilities, name=name)


def _member_summary(run_dir: Path, ensemble_dir: Path) -> dict:
    classifier_info = runs.read_json(run_dir / runs.METRICS_FILE)
    config = runs.read_json(run_dir / runs.CONFIG_FILE)
    # Members trained into the ensemble's folder by their place in it (it may be staged elsewhere).
    where = run_dir.relative_to(ensemble_dir) if run_dir.is_relative_to(ensemble_dir) else run_dir
    return {"run": str(where), "model": config.get("model"), "seed": config.get("seed"),
            "test_accuracy": classifier_info.get("test", {}).get("accuracy"),
            "train_seconds": config.get("train_seconds")}


def _write_ensemble_run(member_dirs: list[Path], data: Mnist, run_dir: Path, name: str,
                        test_time_augmentation: bool, extra_config: dict) -> tuple[Path, dict]:
    members = [load_keras_model(Path(d) / runs.MODEL_FILE) for d in member_dirs]
    model = combine(members, name=name.replace("-", "_"), test_time_augmentation=test_time_augmentation)
    runs.save_keras_model(model, run_dir / runs.MODEL_FILE)
    summaries = [_member_summary(Path(d), run_dir) for d in member_dirs]
    config = run_config(
        name, data, model, members=summaries,
        test_time_augmentation=([{"degrees": d, "scale": z} for d, z in TTA_VIEWS]
                                if test_time_augmentation else None),
        train_seconds=round(sum(s["train_seconds"] or 0 for s in summaries), 2), **extra_config)
    runs.write_json(run_dir / runs.CONFIG_FILE, config)
    evaluation = write_evaluation(KerasClassifier(model, name), data, run_dir, config)
    return run_dir, evaluation.metrics


def _finished_member(member_dir: Path, model_name: str, recipe: dict) -> bool:
    """Whether `member_dir` holds a member trained to the end with this model and recipe;
    one trained differently is refused rather than silently mixed in."""
    if not (member_dir / runs.MODEL_FILE).is_file() or not (member_dir / runs.METRICS_FILE).is_file():
        return False
    config = runs.read_json(member_dir / runs.CONFIG_FILE)
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
    from .training import recipe_dict, recipe_for  # not at start-up: it loads TensorFlow

    if members < 1:
        raise UsageError(f"--ensemble must be at least 1 (got {members})")
    if resume and (force or out is None):
        raise UsageError("--resume needs the --out folder of the ensemble to continue, and no --force")
    name = f"{model_name}-ensemble{members}"
    out = Path(out) if out else runs.default_run_dir(name)
    if resume:
        if not (out / MEMBERS_DIR).is_dir():
            raise UsageError(f"{out} holds no ensemble members to resume; leave out --resume to start one")
        folder = contextlib.nullcontext(runs.StagedRun(out, out, replaces=False))
    else:  # a new folder is written in place, so --resume can keep its members after a crash
        folder = runs.new_run_dir(out, force, stage=False)
    recipe = recipe_dict(recipe_for(model_name, epochs, batch_size))
    with folder as run:
        member_dirs, interrupted = [], False
        for index in range(members):
            member = Path(MEMBERS_DIR) / f"seed-{seed + index}"
            member_dir = run.path / member
            member_dirs.append(member_dir)
            which = f"Member {index + 1} of {members} (seed {seed + index})"
            if resume and _finished_member(member_dir, model_name, recipe):
                print(f"{which}: kept, trained earlier in {run.target / member}", flush=True)
                continue
            print(f"{which}: training into {run.target / member}", flush=True)
            _, _, interrupted = train_run(model_name, data, out=member_dir, epochs=epochs,
                                          batch_size=batch_size, seed=seed + index, verbose=verbose,
                                          arguments=arguments, force=resume)
            if interrupted:
                break
        if interrupted and run.replaces:  # an interrupted ensemble never replaces a finished run
            raise RunInterruptedError(f"interrupted; {run.target} still holds the previous run "
                                      "(the new one was not kept)")
        _, metrics = _write_ensemble_run(
            member_dirs, data, run.path, name, test_time_augmentation,
            {"seed": seed, "arguments": arguments or {}, "interrupted": interrupted},
        )
    return run.target, metrics, interrupted


def ensemble_runs(run_dirs: list[str | Path], data: Mnist, out: str | Path | None = None,
                  force: bool = False, name: str = "ensemble",
                  test_time_augmentation: bool = False) -> tuple[Path, dict]:
    """Combine run folders trained before (any registered models) into one ensemble run folder."""
    run_dirs = [Path(d) for d in run_dirs]
    for run_dir in run_dirs:
        if not (run_dir / runs.MODEL_FILE).is_file():
            problem = "is not a run folder (no model.keras)" if run_dir.exists() else "does not exist"
            raise UsageError(f"{run_dir} {problem}; pass folders written by mnist-digits train")
    with runs.new_run_dir(out or runs.default_run_dir(name), force, protect=run_dirs) as run:
        _, metrics = _write_ensemble_run(run_dirs, data, run.path, name, test_time_augmentation, {})
    return run.target, metrics
