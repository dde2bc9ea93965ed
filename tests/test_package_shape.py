"""The package's shape: its modules import each other one way only, and the quick paths
(preparing images, the command's --help) never pay for importing TensorFlow."""

from __future__ import annotations

import ast
import subprocess
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

import mnist_digits

PACKAGE_DIR = Path(mnist_digits.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    relative = Path(*name.split("."))
    return (PACKAGE_DIR.parent / relative).with_suffix(".py").is_file() or \
        (PACKAGE_DIR.parent / relative / "__init__.py").is_file()


def _imported(node: ast.Import | ast.ImportFrom, importer: str, is_package: bool) -> set[str]:
    """The package's modules whose code an import statement needs: `from .runs import X`
    needs runs, `from . import runs` needs runs (not the package's __init__), `from . import
    __version__` needs the __init__."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            anchor = importer.split(".")
            anchor = anchor[:len(anchor) - node.level + (1 if is_package else 0)]
            base = ".".join(anchor + ([node.module] if node.module else []))
        names = [f"{base}.{alias.name}" if _is_module(f"{base}.{alias.name}") else base
                 for alias in node.names]
    return {name for name in names if name.split(".")[0] == "mnist_digits" and _is_module(name)}


def import_graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """module -> the modules it imports at module level, and -> those it imports inside functions."""
    at_top: dict[str, set[str]] = {}
    in_functions: dict[str, set[str]] = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        name = _module_name(path)
        tree = ast.parse(path.read_text(), str(path))
        at_top[name], in_functions[name] = set(), set()
        functions = [node for node in ast.walk(tree)
                     if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
        inside = {id(node) for function in functions for node in ast.walk(function)}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                found = _imported(node, name, path.name == "__init__.py") - {name}
                (in_functions if id(node) in inside else at_top)[name] |= found
    return at_top, in_functions


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as error:
        return error.args[1]
    return None


def test_the_walk_sees_the_imports_it_checks():
    at_top, in_functions = import_graph()
    assert "mnist_digits.runs" in at_top["mnist_digits.classifiers"]
    assert "mnist_digits.preprocess" in at_top["mnist_digits.serve.app"]  # `from .. import preprocess`
    assert "mnist_digits.training" in in_functions["mnist_digits.pipeline"]
    assert _cycle({"a": {"b"}, "b": {"a"}}) is not None


def test_no_import_circle_among_module_level_imports():
    at_top, _ = import_graph()
    assert _cycle(at_top) is None, " -> ".join(_cycle(at_top))


def test_imports_inside_functions_hide_no_circle():
    # Imports inside functions are there to keep TensorFlow out of start-up, never to
    # break a circle: with them counted, the graph still goes one way.
    at_top, in_functions = import_graph()
    both = {name: at_top[name] | in_functions[name] for name in at_top}
    assert _cycle(both) is None, " -> ".join(_cycle(both))


@pytest.mark.parametrize("code", [
    "import mnist_digits.preprocess; mnist_digits.preprocess.prepare(__import__('numpy').eye(28) * 255)",
    "from mnist_digits.cli import main; main(['--help'])",
    "from mnist_digits.cli import main; main(['predict', '--help'])",
], ids=["preprocess", "help", "predict-help"])
def test_the_quick_paths_do_not_import_tensorflow(code):
    """TensorFlow takes seconds to import: preparing images (also in predict's worker
    processes) and asking for help must not load it. This is why the package imports
    TensorFlow, Keras and LiteRT inside the functions that use them."""
    probe = ("import sys\ntry:\n" + "".join(f"    {line}\n" for line in code.split("; "))
             + "except SystemExit:\n    pass\n"
             + "print(sorted(m for m in ('tensorflow', 'keras', 'ai_edge_litert') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
