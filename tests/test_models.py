"""Every registered model builds, trains, saves, reloads and predicts the same; recipes
repeat exactly from a seed; augmentation moves digits the way it says; an ensemble is one
loadable model that predicts its members' mean.

Short runs on a few hundred images only: the accuracy of the default recipes is measured
by benchmarks/model_table.py, not here.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from mnist_digits import runs
from mnist_digits.classifiers import KerasClassifier, load_classifier, load_keras_model
from mnist_digits.cli import main
from mnist_digits.data import to_model_input
from mnist_digits.models import MODELS, build_model


@pytest.fixture(scope="module")
def tiny_mnist(small_mnist):
    """512 training, 51 validation and 256 test images: a few steps per epoch."""
    return small_mnist.subset(train=512, test=256)


def _weights_equal(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights()))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_each_model_trains_saves_reloads_and_predicts_identically(name, tiny_mnist, tmp_path):
    from mnist_digits.training import train

    result = train(name, tiny_mnist, epochs=1, verbose=0)
    assert result.history["accuracy"] and np.isfinite(result.history["loss"][0])
    runs.save_keras_model(result.model, tmp_path / "model.keras")
    reloaded = load_keras_model(tmp_path / "model.keras")  # safe_mode: no code in the file

    images = to_model_input(tiny_mnist.x_test)
    before = KerasClassifier(result.model, name).predict_proba(images)
    after = KerasClassifier(reloaded, name).predict_proba(images)
    assert before.shape == (len(images), 10)
    np.testing.assert_allclose(before.sum(axis=1), 1.0, atol=1e-5)
    assert np.abs(before - after).max() < 1e-6


def test_augmented_recipe_repeats_exactly_from_its_seed(tiny_mnist):
    """cnn's recipe uses every moving part (augmentation, label smoothing, warm-up, batch
    norm, dropout): the same seed must still give the same weights and metrics."""
    from mnist_digits.training import train

    first = train("cnn", tiny_mnist, epochs=2, seed=3, verbose=0)
    second = train("cnn", tiny_mnist, epochs=2, seed=3, verbose=0)
    other = train("cnn", tiny_mnist, epochs=1, seed=4, verbose=0)
    assert first.history == second.history
    assert _weights_equal(first.model, second.model)
    assert not _weights_equal(first.model, other.model)


def test_augmentation_shifts_rotates_and_repeats(tiny_mnist):
    import tensorflow as tf

    from mnist_digits.training import Recipe, augment

    images = tf.constant(to_model_input(tiny_mnist.x_train[:16]))
    seed = tf.constant([0, 7], tf.int64)
    plain = Recipe(epochs=1, batch_size=16, learning_rate=1e-3)
    np.testing.assert_array_equal(augment(images, seed, plain).numpy(), images.numpy())

    # Shifts of exactly +-2 pixels (the random amount is a uniform draw times the range,
    # so compare against the whole-pixel roll only where the draw rounds to +-2).
    distort = Recipe(epochs=1, batch_size=16, learning_rate=1e-3, rotation_degrees=15, zoom=0.1,
                     shift_pixels=2)
    once, again = augment(images, seed, distort).numpy(), augment(images, seed, distort).numpy()
    np.testing.assert_array_equal(once, again)
    assert not np.array_equal(once, augment(images, tf.constant([0, 8], tf.int64), distort).numpy())
    assert not np.array_equal(once, images.numpy())
    # Ink is kept: a small affine change scales the total ink by about zoom^2 at most.
    ratio = once.sum(axis=(1, 2)) / images.numpy().sum(axis=(1, 2))
    assert np.all((ratio > 0.75) & (ratio < 1.3))


def test_augmentation_shift_moves_the_digit_by_whole_pixels(tiny_mnist):
    """A pure shift must move the picture, not blur or flip it: compare with np.roll."""
    import tensorflow as tf

    from mnist_digits.training import Recipe, augment

    images = to_model_input(tiny_mnist.x_train[:64])
    shift_only = Recipe(epochs=1, batch_size=64, learning_rate=1e-3, shift_pixels=3)
    # Seed chosen so that two of the 64 draws land within 0.02 px of whole pixels, neither
    # of them (0, 0): (2, -1) and (3, -2).
    seed = tf.constant([232, 232], tf.int64)
    moved = augment(tf.constant(images), seed, shift_only).numpy()
    uniform = tf.random.stateless_uniform([64, 4], seed, minval=-1.0, maxval=1.0).numpy()
    dx, dy = uniform[:, 2] * 3, uniform[:, 3] * 3
    # The digits sit inside a 4-pixel black border, so np.roll loses nothing.
    whole = np.flatnonzero((np.abs(dx - np.round(dx)) < 0.02) & (np.abs(dy - np.round(dy)) < 0.02))
    assert len(whole) >= 2, "no draw landed on whole pixels: the comparison below would not run"
    for k in whole:
        expected = np.roll(images[k], (int(round(dy[k])), int(round(dx[k]))), axis=(0, 1))
        assert np.abs(moved[k] - expected).max() < 0.05
    # Whatever the amounts, the centre of ink moves by (dx, dy).
    rows, cols = np.mgrid[0:28, 0:28]
    for k in range(8):
        before = np.array([(images[k] * cols).sum(), (images[k] * rows).sum()]) / images[k].sum()
        after = np.array([(moved[k] * cols).sum(), (moved[k] * rows).sum()]) / moved[k].sum()
        np.testing.assert_allclose(after - before, [dx[k], dy[k]], atol=0.15)


def _warped(images: np.ndarray, degrees: float, scale: float) -> np.ndarray:
    """Images rotated and scaled about their centre by the warp training.augment uses."""
    from mnist_digits.training import affine_warp

    def each(value):
        return np.full(len(images), value, np.float32)

    return affine_warp(images, angle=each(np.deg2rad(degrees)), scale=each(scale),
                       shift_x=each(0), shift_y=each(0)).numpy()


def _two_members():
    import keras

    keras.utils.set_random_seed(1)
    first = build_model("cnn-small")
    keras.utils.set_random_seed(2)
    second = build_model("mlp")
    return first, second


def test_ensemble_is_one_model_predicting_its_members_mean(tiny_mnist, tmp_path):
    from mnist_digits.ensemble import combine

    images = to_model_input(tiny_mnist.x_test[:64])
    first, second = _two_members()
    expected = (np.asarray(first(images, training=False)) + np.asarray(second(images, training=False))) / 2
    model = combine([first, second])
    runs.save_keras_model(model, tmp_path / "ensemble.keras")
    reloaded = load_keras_model(tmp_path / "ensemble.keras")
    predicted = KerasClassifier(reloaded, "ensemble").predict_proba(images)
    np.testing.assert_allclose(predicted, expected, atol=1e-6)


def test_ensemble_test_time_augmentation_averages_rotated_and_scaled_views(tiny_mnist, tmp_path):
    from mnist_digits.ensemble import TTA_VIEWS, combine

    images = to_model_input(tiny_mnist.x_test[:32])
    first, second = _two_members()
    views = [_warped(images, degrees, scale) for degrees, scale in TTA_VIEWS]
    expected = np.mean([np.asarray(m(v, training=False)) for m in (first, second) for v in views], axis=0)
    model = combine([first, second], test_time_augmentation=True)
    runs.save_keras_model(model, tmp_path / "tta.keras")
    predicted = KerasClassifier(load_keras_model(tmp_path / "tta.keras"), "tta").predict_proba(images)
    np.testing.assert_allclose(predicted, expected, atol=1e-5)
    # The views really differ from the image: the test would pass trivially otherwise.
    assert all(np.abs(view - images).max() > 0.5 for view in views[1:])


def test_train_ensemble_writes_a_run_folder_others_can_load(tiny_mnist, tmp_path, capsys):
    from mnist_digits.ensemble import train_ensemble

    run_dir, metrics, interrupted = train_ensemble("mlp", tiny_mnist, members=2, out=tmp_path / "ens",
                                                   epochs=1, verbose=0)
    assert not interrupted
    for name in ("model.keras", "config.json", "metrics.json", "report.md", "figures/confusion_matrix.png"):
        assert (run_dir / name).is_file(), name
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model"] == "mlp-ensemble2" and [m["seed"] for m in config["members"]] == [0, 1]

    images = to_model_input(tiny_mnist.x_test)
    ensemble = load_classifier(run_dir)
    members = [load_classifier(run_dir / "members" / f"seed-{s}") for s in (0, 1)]
    mean = np.mean([m.predict_proba(images) for m in members], axis=0)
    np.testing.assert_allclose(ensemble.predict_proba(images), mean, atol=1e-6)
    assert ensemble.name == "mlp-ensemble2"
    assert metrics["test"]["accuracy"] == np.mean(ensemble.predict_proba(images).argmax(1) == tiny_mnist.y_test)

    # The same from run folders trained before, with the command.
    again = tmp_path / "again"
    assert main(["ensemble", str(run_dir / "members" / "seed-0"), str(run_dir / "members" / "seed-1"),
                 "--out", str(again)]) == 0
    assert "ensemble of 2: test accuracy" in capsys.readouterr().out
    np.testing.assert_allclose(load_classifier(again).predict_proba(images), mean, atol=1e-6)
    assert json.loads((again / "metrics.json").read_text())["test"]["count"] == 10000


def test_an_ensemble_resumes_with_the_members_already_trained(tiny_mnist, tmp_path, capsys):
    from mnist_digits.ensemble import train_ensemble
    from mnist_digits.errors import UsageError

    out = tmp_path / "ens"
    train_ensemble("mlp", tiny_mnist, members=2, out=out, epochs=1, verbose=0)
    first = (out / "members" / "seed-0" / "model.keras").read_bytes()
    # As after Ctrl-C in the second member: its run folder says it was interrupted.
    second_config = out / "members" / "seed-1" / "config.json"
    second_config.write_text(second_config.read_text().replace('"interrupted": false', '"interrupted": true'))

    run_dir, _, _ = train_ensemble("mlp", tiny_mnist, members=3, out=out, epochs=1, verbose=0, resume=True)
    printed = capsys.readouterr().out
    # Only members trained to the end are kept.
    assert "Member 1 of 3 (seed 0): kept" in printed and "Member 2 of 3 (seed 1): training" in printed
    assert (out / "members" / "seed-0" / "model.keras").read_bytes() == first
    assert json.loads(second_config.read_text())["interrupted"] is False
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model"] == "mlp-ensemble3" and [m["seed"] for m in config["members"]] == [0, 1, 2]
    assert len(load_keras_model(run_dir / "model.keras").layers) == 5  # input, 3 members, mean

    for other in ({"model_name": "mlp", "epochs": 2}, {"model_name": "mlp", "epochs": 1, "batch_size": 64},
                  {"model_name": "cnn-small", "epochs": 1}):
        with pytest.raises(UsageError, match="another model or recipe"):
            train_ensemble(data=tiny_mnist, members=3, out=out, verbose=0, resume=True, **other)
    assert (out / "members" / "seed-0" / "model.keras").read_bytes() == first  # and nothing replaced
    with pytest.raises(UsageError, match="no ensemble members to resume"):
        train_ensemble("mlp", tiny_mnist, members=2, out=tmp_path / "new", epochs=1, verbose=0, resume=True)


def test_tta_ensembles_from_the_command_line(tmp_path, mnist, capsys):
    """`train --ensemble 2 --tta` and `ensemble --tta` over its members (one epoch each, on
    the full data as the command loads it): both models average the members over the views."""
    from mnist_digits.ensemble import TTA_VIEWS

    trained = tmp_path / "trained"
    assert main(["train", "--model", "mlp", "--ensemble", "2", "--tta", "--epochs", "1", "--quiet",
                 "--out", str(trained)]) == 0
    members = [trained / "members" / f"seed-{seed}" for seed in (0, 1)]
    combined = tmp_path / "combined"
    assert main(["ensemble", *map(str, members), "--tta", "--out", str(combined)]) == 0
    assert "ensemble of 2 with test-time views: test accuracy" in capsys.readouterr().out

    images = to_model_input(mnist.x_test[:64])
    views = [_warped(images, degrees, scale) for degrees, scale in TTA_VIEWS]
    member_models = [load_keras_model(member / "model.keras") for member in members]
    expected = np.mean([np.asarray(m(v, training=False)) for m in member_models for v in views], axis=0)
    for run_dir in (trained, combined):
        assert json.loads((run_dir / "config.json").read_text())["test_time_augmentation"]
        predicted = load_classifier(run_dir).predict_proba(images)
        np.testing.assert_allclose(predicted, expected, atol=1e-5)


def test_ensemble_command_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    (tmp_path / "notes").mkdir()
    code = main(["ensemble", str(tmp_path / "notes"), "--out", str(tmp_path / "ens")])
    error = capsys.readouterr().err.strip()
    assert code == 2 and "is not a run folder (no model.keras)" in error and "\n" not in error
    assert not (tmp_path / "ens").exists()
    code = main(["ensemble", str(tmp_path / "typo"), "--out", str(tmp_path / "ens")])
    assert code == 2 and f"{tmp_path / 'typo'} does not exist" in capsys.readouterr().err


def test_train_command_refuses_an_empty_ensemble(tmp_path, capsys):
    code = main(["train", "--model", "mlp", "--ensemble", "0", "--out", str(tmp_path / "x")])
    error = capsys.readouterr().err.strip()
    assert code == 2 and error.startswith("mnist-digits: error: --ensemble must be at least 1")
    assert "\n" not in error and not (tmp_path / "x").exists()
    code = main(["train", "--model", "mlp", "--resume", "--out", str(tmp_path / "x")])
    assert code == 2 and "--resume is for ensembles: add --ensemble N" in capsys.readouterr().err
