"""Training end to end: the command on the full data, the run folder, determinism, Ctrl-C."""

import json
import signal
import subprocess
import sys

import numpy as np
import pytest

RUN_FILES = ["model.keras", "config.json", "history.csv", "metrics.json", "report.md",
             "figures/training_history.png", "figures/confusion_matrix.png",
             "figures/misclassified.png"]


def command(*args):
    return [sys.executable, "-m", "mnist_digits.cli", *args]


@pytest.fixture(scope="module")
def two_epoch_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "run"
    result = subprocess.run(command("train", "--model", "mlp", "--epochs", "3", "--out", str(out), "--verbose"),
                            capture_output=True, text=True, timeout=300)
    return out, result


def test_train_command_writes_the_whole_run_folder(two_epoch_run):
    out, result = two_epoch_run
    assert result.returncode == 0, result.stderr
    for name in RUN_FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert any((out / "tensorboard").rglob("events.out.tfevents.*"))
    assert not list(out.rglob(".*.tmp*")) and not [p for p in out.rglob(".*") if p.is_file()]
    last_line = result.stdout.strip().splitlines()[-1]
    assert "test accuracy" in last_line and str(out) in last_line


def test_three_epochs_on_the_full_data_reach_96_percent(two_epoch_run):
    out, _ = two_epoch_run
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] >= 0.96  # measured 96.96% (2026-11-28): 96 images to spare
    assert metrics["test"]["count"] == 10_000 and metrics["validation"]["count"] == 5_000
    assert set(metrics["per_class"]) == {str(d) for d in range(10)}
    assert set(metrics["per_class"]["5"]) == {"precision", "recall", "f1", "support"}
    matrix = metrics["confusion_matrix"]
    assert len(matrix) == 10 and sum(map(sum, matrix)) == 10_000
    assert sum(matrix[d][d] for d in range(10)) == round(metrics["test"]["accuracy"] * 10_000)
    recalls = {int(d): row["recall"] for d, row in metrics["per_class"].items()}
    assert metrics["hardest_digit"] == min(recalls, key=recalls.get)
    assert metrics["easiest_digit"] == max(recalls, key=recalls.get)
    # The training split is measured too, all of it, and is not far from the test set's.
    assert metrics["train"]["count"] == 55_000 and metrics["test"]["loss"] > 0
    assert abs(metrics["train"]["accuracy"] - metrics["test"]["accuracy"]) < 0.015
    # The Wilson 95% interval of 10,000 images at ~97%: about +-0.35 points around the value.
    low, high = metrics["test"]["accuracy_95_interval"]
    assert low < metrics["test"]["accuracy"] < high and 0.004 < high - low < 0.01


def test_accuracy_interval_matches_the_wilson_formula():
    from mnist_digits.evaluation import accuracy_interval

    # 9,970 of 10,000 right: p +- z sqrt(p(1-p)/n + z^2/4n^2) / (1 + z^2/n), z = 1.96.
    low, high = accuracy_interval(9970, 10_000)
    assert low == pytest.approx(0.99572, abs=2e-5) and high == pytest.approx(0.99790, abs=2e-5)


def test_config_holds_what_repeats_the_run(two_epoch_run):
    out, _ = two_epoch_run
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "mlp" and config["seed"] == 0 and config["recipe"]["epochs"] == 3
    assert config["parameters"] == 101_770  # 784*128+128 + 128*10+10: the seed network exactly
    assert len(config["data"]["sha256"]) == 4 and "tensorflow" in config["versions"]
    history = (out / "history.csv").read_text().splitlines()
    assert history[0].startswith("epoch,") and len(history) == 4


def test_config_and_verbose_say_where_the_seconds_went(two_epoch_run):
    out, result = two_epoch_run
    timings = json.loads((out / "config.json").read_text())["timings"]
    for phase in ("startup", "data", "build", "fit", "tensorboard", "evaluation", "figures (after evaluation)"):
        assert timings[phase] >= 0, phase
    assert timings["fit"] > 0 and timings["evaluation"] > 0
    # The phases follow one another: together they fit in the whole process.
    phases = sum(value for name, value in timings.items() if name != "total")
    assert phases <= timings["total"] + 0.1 and phases >= 0.8 * timings["total"]
    assert "Where the seconds went:" in result.stdout and "evaluation" in result.stdout


def test_report_puts_the_write_up_beside_the_measurements(two_epoch_run):
    out, _ = two_epoch_run
    report = (out / "report.md").read_text()
    assert "Hardest digit" in report and "write-up" in report
    low, high = json.loads((out / "metrics.json").read_text())["test"]["accuracy_95_interval"]
    assert f"| {100 * low:.2f}%–{100 * high:.2f}% |" in report
    assert "![confusion_matrix](figures/confusion_matrix.png)" in report


def test_an_existing_run_folder_is_not_overwritten(two_epoch_run):
    out, _ = two_epoch_run
    before = (out / "metrics.json").read_text()
    result = subprocess.run(command("train", "--epochs", "1", "--out", str(out)),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "--force" in result.stderr
    assert "Traceback" not in result.stderr
    assert (out / "metrics.json").read_text() == before


def test_evaluate_command_reproduces_the_metrics(two_epoch_run, tmp_path):
    out, _ = two_epoch_run
    result = subprocess.run(command("evaluate", str(out / "model.keras"), "--out", str(tmp_path / "eval")),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    again = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    original = json.loads((out / "metrics.json").read_text())
    assert again["test"] == original["test"]
    assert again["confusion_matrix"] == original["confusion_matrix"]
    assert (tmp_path / "eval" / "figures" / "confusion_matrix.png").is_file()


def test_evaluate_refuses_what_is_not_a_model(tmp_path):
    fake = tmp_path / "model.keras"
    fake.write_text("not a zip")
    result = subprocess.run(command("evaluate", str(fake)), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "not a Keras model file" in result.stderr
    assert "Traceback" not in result.stderr


def test_same_seed_gives_identical_metrics(small_mnist, tmp_path):
    from mnist_digits.pipeline import train_run

    _, first, _ = train_run("mlp", small_mnist, out=tmp_path / "a", epochs=2, seed=7, verbose=0)
    _, second, _ = train_run("mlp", small_mnist, out=tmp_path / "b", epochs=2, seed=7, verbose=0)
    _, other, _ = train_run("mlp", small_mnist, out=tmp_path / "c", epochs=2, seed=8, verbose=0)
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)
    assert first["test"]["loss"] != other["test"]["loss"]


def test_same_seed_gives_identical_metrics_in_another_process(tmp_path):
    """Two processes, the second one --force over the first one's run folder: the same
    metrics.json numbers to the last digit, in a freshly written file."""
    out = tmp_path / "run"
    first = subprocess.run(command("train", "--epochs", "1", "--seed", "5", "--out", str(out)),
                           capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    before, inode = (out / "metrics.json").read_text(), (out / "metrics.json").stat().st_ino
    second = subprocess.run(command("train", "--epochs", "1", "--seed", "5", "--out", str(out), "--force"),
                            capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert (out / "metrics.json").stat().st_ino != inode  # written again, not left over
    assert json.loads((out / "metrics.json").read_text()) == json.loads(before)


def test_ctrl_c_keeps_the_best_epochs_model(tmp_path, spawn):
    """Ctrl-C right after an epoch whose validation accuracy fell below the best so far:
    the saved model must be the best epoch's, not the last one's."""
    import re

    out = tmp_path / "run"
    child = spawn(command("train", "--epochs", "50", "--out", str(out)))  # high rates: ups and downs
    best = 0.0
    for _ in range(30):
        line = child.wait_for_line(lambda line: "val_accuracy:" in line, timeout=240)
        accuracy = float(re.search(r"val_accuracy: ([0-9.]+)", line).group(1))
        if accuracy < best:
            break
        best = accuracy
    else:
        pytest.fail(f"validation accuracy never fell in 30 epochs:\n{child.output}")
    child.process.send_signal(signal.SIGINT)
    assert child.finish(timeout=120) == 130, child.output
    assert "Traceback" not in child.output and "Interrupted" in child.output
    config = json.loads((out / "config.json").read_text())
    history = np.genfromtxt(out / "history.csv", delimiter=",", names=True)
    assert config["interrupted"] is True
    assert config["best_epoch"] == int(np.argmax(history["val_accuracy"])) + 1 < len(history)
    # metrics.json is measured on the saved model: its validation accuracy is the best epoch's.
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["validation"]["accuracy"] == pytest.approx(history["val_accuracy"].max(), abs=1e-4)
    assert metrics["validation"]["accuracy"] > history["val_accuracy"][-1]
    assert (out / "model.keras").is_file() and (out / "report.md").is_file()


def test_evaluation_shows_progress_on_a_terminal_only(small_mnist, monkeypatch):
    import io

    from mnist_digits.evaluation import evaluate

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    def uniform(images):
        return np.full((len(images), 10), 0.1, np.float32)

    for stream, shown in ((Terminal(), True), (io.StringIO(), False)):
        monkeypatch.setattr(sys, "stderr", stream)
        metrics = evaluate(uniform, small_mnist).metrics
        assert metrics["test"]["count"] == len(small_mnist.y_test)
        total = len(small_mnist.y_train) + len(small_mnist.y_val) + len(small_mnist.y_test)
        assert ("evaluating:" in stream.getvalue() and f"/{total} " in stream.getvalue()) == shown
