"""The run folder: a safe --force, staging, one file mode, and faults while writing
(a full disk, no permission, Ctrl-C, SIGTERM): the old run stays, nothing half-written."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mnist_digits import runs
from mnist_digits.cli import main
from mnist_digits.errors import RunFolderError


def fake_run(folder: Path) -> Path:
    """A folder that looks like a run: what --force may replace."""
    (folder / "figures").mkdir(parents=True)
    for name in ("model.keras", "config.json", "metrics.json"):
        (folder / name).write_text(f"old {name}")
    return folder


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(folder: Path) -> list[str]:
    """Staging folders, folders moved aside, temporary files: hidden names."""
    return [p.name for p in folder.rglob(".*")]


def one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


# --- what --force may replace -----------------------------------------------------------------

def test_force_replaces_only_a_run_folder(tmp_path):
    unrelated = tmp_path / "thesis"
    unrelated.mkdir()
    (unrelated / "chapter1.tex").write_text("months of work")
    with pytest.raises(RunFolderError, match="not a run folder"):
        with runs.new_run_dir(unrelated, force=True):
            pass
    assert snapshot(unrelated) == {"chapter1.tex": b"months of work"}


@pytest.mark.parametrize("where, out", [("run", "."), ("run/figures", ".."), ("run/figures", "../figures/.."),
                                        (".", "/"), (".", "~")])
def test_force_never_replaces_the_working_folder_above_it_home_or_root(tmp_path, monkeypatch, where, out):
    run = fake_run(tmp_path / "run")
    monkeypatch.setenv("HOME", str(run))  # home is a run folder here: still never replaced
    monkeypatch.chdir(tmp_path / where)
    before = snapshot(run)
    with pytest.raises(RunFolderError, match="working folder, a folder above it, home or /"):
        with runs.new_run_dir(Path(out).expanduser(), force=True):
            pass
    assert snapshot(run) == before and not leftovers(tmp_path)


def test_a_run_replaces_the_old_one_only_when_complete(tmp_path):
    old = fake_run(tmp_path / "run")
    before = snapshot(old)
    with pytest.raises(KeyboardInterrupt):
        with runs.new_run_dir(old, force=True) as run:
            runs.write_json(run.path / "metrics.json", {"new": True})
            assert snapshot(old) == before  # written beside it, not into it
            raise KeyboardInterrupt
    assert snapshot(old) == before and not leftovers(tmp_path)
    with runs.new_run_dir(old, force=True) as run:
        runs.write_json(run.path / "metrics.json", {"new": True})
    assert snapshot(old) == {"metrics.json": b'{\n  "new": true\n}\n'}
    assert not leftovers(tmp_path)


def test_a_symlinked_out_replaces_the_folder_it_points_to(tmp_path):
    old = fake_run(tmp_path / "real")
    (tmp_path / "link").symlink_to(old)
    with runs.new_run_dir(tmp_path / "link", force=True) as run:
        runs.write_text(run.path / "report.md", "new")
    assert (tmp_path / "link").is_symlink() and snapshot(old) == {"report.md": b"new"}


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES])
@pytest.mark.parametrize("failing", ["writing a file", "swapping the folder in"])
def test_a_full_disk_or_no_permission_leaves_the_old_run(tmp_path, monkeypatch, code, failing):
    old = fake_run(tmp_path / "run")
    before = snapshot(old)
    real_replace = os.replace

    def replace(source, target):
        swapping = Path(source).name.startswith(".run.staging-")
        if swapping == (failing == "swapping the folder in"):
            raise OSError(code, os.strerror(code))
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(RunFolderError) as error:
        with runs.new_run_dir(old, force=True) as run:
            runs.write_json(run.path / "metrics.json", {"new": True})
    assert os.strerror(code) in str(error.value) and "\n" not in str(error.value)
    monkeypatch.undo()
    assert snapshot(old) == before and not leftovers(tmp_path)


def test_run_files_and_folders_get_one_mode_from_the_umask(small_mnist, tmp_path):
    from mnist_digits.pipeline import train_run

    previous = os.umask(0o027)
    try:
        run_dir, _, _ = train_run("mlp", small_mnist.subset(train=500), out=tmp_path / "run",
                                  epochs=1, verbose=0)
    finally:
        os.umask(previous)
    modes = {str(p.relative_to(run_dir)): stat.S_IMODE(p.stat().st_mode)
             for p in [run_dir, *run_dir.rglob("*")]
             if p.is_dir() or p.suffix in (".keras", ".json", ".csv", ".md", ".png")}
    assert modes["model.keras"] == modes["config.json"] == modes["history.csv"] == 0o640, modes
    assert {mode for mode in modes.values()} == {0o640, 0o750}, modes


# --- the commands: evaluate, export, ensemble --------------------------------------------------

@pytest.fixture
def run_copy(mlp_run, tmp_path):
    copy = tmp_path / "runcopy"
    shutil.copytree(mlp_run, copy)
    return copy


def test_evaluate_in_place_under_another_spelling_keeps_the_model(run_copy, tmp_path, monkeypatch, capsys):
    model_files = {name: (run_copy / name).read_bytes() for name in ("model.keras", "config.json", "history.csv")}
    (run_copy / "metrics.json").unlink()
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", "runcopy", "--out", str(run_copy.resolve()), "--force"]) == 0
    assert {name: (run_copy / name).read_bytes() for name in model_files} == model_files
    assert (run_copy / "metrics.json").is_file() and (run_copy / "figures" / "training_history.png").is_file()
    assert not leftovers(tmp_path)


@pytest.mark.parametrize("command", [
    ["evaluate", "{run}", "--out", ".", "--force"],
    ["evaluate", "{run}/model.keras", "--out", "{run}", "--force"],
    ["evaluate", "{run}", "--out", "{work}", "--force"],
    ["ensemble", "{run}", "{run}", "--out", "{run}/..//runcopy", "--force"],
    ["export", "{run}", "--format", "tflite", "--out", "{work}", "--force"],
    ["export", "{run}", "--format", "tflite", "--out", "{run}", "--force"],
    ["export", "{run}/model.keras", "--format", "tflite", "--out", "{run}", "--force"],
])
def test_force_refuses_folders_that_are_not_its_own_to_replace(run_copy, tmp_path, monkeypatch, capsys, command):
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("keep me")
    (run_copy / "model_info.json").write_text("{}")  # an export's file: yet it holds the model read
    before = {folder: snapshot(folder) for folder in (run_copy, work)}
    monkeypatch.chdir(work)
    assert main([part.format(run=run_copy, work=work) for part in command]) == 2
    line = one_error_line(capsys)
    assert "never replaced" in line or "only those" in line
    assert {folder: snapshot(folder) for folder in before} == before
    assert not leftovers(tmp_path)


def test_a_full_disk_during_an_export_leaves_the_old_export(run_copy, tmp_path, monkeypatch, capsys):
    old = tmp_path / "export"
    old.mkdir()
    (old / "model.tflite").write_bytes(b"old model")
    (old / "model_info.json").write_text("{}")
    before = snapshot(old)

    def replace(source, target):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", replace)
    code = main(["export", str(run_copy), "--format", "tflite", "--out", str(old), "--force"])
    monkeypatch.undo()
    assert code == 2 and "No space left on device" in one_error_line(capsys)
    assert snapshot(old) == before and not leftovers(tmp_path)


# --- signals while training over an old run ---------------------------------------------------

@pytest.mark.parametrize("signal_number, exit_code, says", [
    (signal.SIGTERM, 128 + signal.SIGTERM, ""),
    (signal.SIGINT, 130, "still holds the previous run"),
])
def test_a_signal_while_training_over_an_old_run_keeps_it(tmp_path, signal_number, exit_code, says):
    old = fake_run(tmp_path / "run")
    before = snapshot(old)
    process = subprocess.Popen(
        [sys.executable, "-m", "mnist_digits.cli", "train", "--epochs", "50", "--out", str(old), "--force"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        lines = []
        for line in process.stdout:
            lines.append(line)
            if line.startswith("Epoch 2/"):  # one epoch done, files are being written beside the old run
                assert leftovers(tmp_path), "nothing staged"
                process.send_signal(signal_number)
                break
        output = "".join(lines) + process.stdout.read()
        assert process.wait(timeout=120) == exit_code, output
    finally:
        process.kill()
    assert "Traceback" not in output and says in output
    assert snapshot(old) == before and not leftovers(tmp_path)
