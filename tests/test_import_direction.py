"""Imports run one way: configs → features → models → serving → pipelines → benchmarks.

A lower package never imports a higher one (DESIGN.md, Conventions). The test parses every
module, function-level imports included, so a lazy ``import`` inside a function counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

LAYERS = ("configs", "features", "models", "serving", "pipelines", "benchmarks")
RANK = {name: i for i, name in enumerate(LAYERS)}


def imported_packages(path: Path) -> list[tuple[int, str]]:
    """(line, top-level package) for every absolute import in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def upward_imports(package: str) -> list[str]:
    own = RANK[package]
    bad = []
    for path in sorted((REPO / package).rglob("*.py")):
        for line, top in imported_packages(path):
            if top in RANK and RANK[top] > own:
                bad.append(f"{path.relative_to(REPO)}:{line} imports {top} (layer {RANK[top]} > "
                           f"{package} layer {own})")
    return bad


@pytest.mark.parametrize("package", LAYERS)
def test_no_module_imports_a_higher_layer(package):
    assert upward_imports(package) == []


def test_the_walker_sees_function_level_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import os\n\ndef f():\n    from pipelines.cli import app\n    return app\n")
    assert (4, "pipelines") in imported_packages(module)
