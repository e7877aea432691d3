"""Every module the shipped packages import is the standard library's, the project's own,
or a distribution pyproject declares: a dependency installed by hand on one machine and
missing from pyproject fails here, not in a clean clone's CI."""
from __future__ import annotations

import ast
import functools
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _own_packages() -> list[str]:
    return _pyproject()["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]


def _declared(extra: str | None = None) -> set[str]:
    project = _pyproject()["project"]
    specs = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    return {re.split(r"[<>=!~;\[ ]", spec, maxsplit=1)[0].lower().replace("_", "-") for spec in specs}


def _imports(folder: Path) -> dict[str, set[str]]:
    """Top-level module -> files importing it (absolute imports only)."""
    found: dict[str, set[str]] = {}
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(path.name)
    return found


@functools.cache
def _distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def _undeclared(folders: list[Path], declared: set[str], own: set[str]) -> dict[str, set[str]]:
    distributions = _distributions()
    missing: dict[str, set[str]] = {}
    for folder in folders:
        for module, files in _imports(folder).items():
            if module in sys.stdlib_module_names or module in own or module == "__future__":
                continue
            names = {d.lower().replace("_", "-") for d in distributions.get(module, [module])}
            if not names & declared:
                missing.setdefault(module, set()).update(files)
    return missing


def test_the_shipped_packages_import_only_declared_dependencies():
    own = set(_own_packages())
    missing = _undeclared([REPO / p for p in own], _declared(), own)
    assert not missing, f"imported but not in pyproject's dependencies: {missing}"


def test_the_tests_import_only_declared_dependencies():
    declared = _declared() | _declared("test")
    siblings = {path.stem for path in (REPO / "benchmarks").glob("*.py")}  # a benchmark imports its neighbours
    missing = _undeclared([REPO / "tests", REPO / "benchmarks"], declared, set(_own_packages()) | {"tests"} | siblings)
    assert not missing, f"imported by tests or benchmarks but not declared: {missing}"


def test_the_check_finds_a_module_nobody_declared(tmp_path):
    (tmp_path / "m.py").write_text("import os\nimport pycdlib\nfrom yaml import safe_load\n")
    missing = _undeclared([tmp_path], {"typer"}, set())
    assert set(missing) == {"pycdlib", "yaml"}
