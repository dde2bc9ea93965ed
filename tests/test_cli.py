"""The command itself: --version and the top-level --help."""

import subprocess
import sys
from importlib.metadata import version


def run(*args):
    return subprocess.run([sys.executable, "-m", "mnist_digits.cli", *args],
                          capture_output=True, text=True, timeout=60)


def test_version_is_the_installed_package_version():
    result = run("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"mnist-digits {version('mnist-digits')}"


def test_help_lists_every_command():
    result = run("--help")
    assert result.returncode == 0, result.stderr
    for name in ("data", "train", "evaluate", "ensemble", "predict", "serve", "export"):
        assert f"    {name} " in result.stdout, name


def test_a_reader_that_stops_early_ends_the_command_quietly():
    """`mnist-digits data | head -1`: the pipe closes before the command has printed; no traceback."""
    command = subprocess.Popen([sys.executable, "-m", "mnist_digits.cli", "data"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    command.stdout.close()  # before the command starts printing: every print finds the pipe closed
    try:
        errors = command.stderr.read()
        assert command.wait(timeout=120) == 0, errors
    finally:
        if command.poll() is None:
            command.kill()
    assert "Traceback" not in errors and "Broken pipe" not in errors, errors
