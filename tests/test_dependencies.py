"""Every third-party module imported under src/mnistlab is a declared dependency.

A module imported at top level (or anywhere unguarded) must come from a base dependency; one that
belongs to an optional extra must be imported inside a `try` that handles ImportError (the code
then says which extra to install). The `test` extra does not count: the package never needs it.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).parents[1]
TEST_EXTRA = "test"


@dataclass(frozen=True)
class Import:
    module: str  # top-level name, e.g. "yaml"
    file: Path
    line: int
    guarded: bool  # inside a try whose handlers catch ImportError


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    return _normalise(re.split(r"[\s<>=!~;\[(]", requirement.strip(), maxsplit=1)[0])


def declared(pyproject: Path) -> tuple[set[str], dict[str, set[str]]]:
    """(base dependency names, extra → names), normalised."""
    project = tomllib.loads(pyproject.read_text())["project"]
    base = {_requirement_name(r) for r in project.get("dependencies", [])}
    extras = {extra: {_requirement_name(r) for r in requirements if not _requirement_name(r).startswith("mnistlab")}
              for extra, requirements in project.get("optional-dependencies", {}).items()}
    return base, extras


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    names = [handler.type] if not isinstance(handler.type, ast.Tuple) else list(handler.type.elts)
    return handler.type is None or any(isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError")
                                       for n in names)


def imports_of(source: Path) -> list[Import]:
    """Every absolute import in a file, with whether an ImportError handler guards it."""
    found: list[Import] = []

    def visit(node: ast.AST, guarded: bool) -> None:
        if isinstance(node, ast.Try):
            inner = guarded or any(_catches_import_error(h) for h in node.handlers)
            for child in node.body:
                visit(child, inner)
            for child in [*node.handlers, *node.orelse, *node.finalbody]:
                visit(child, guarded)
            return
        if isinstance(node, ast.Import):
            found.extend(Import(alias.name.split(".")[0], source, node.lineno, guarded) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append(Import(node.module.split(".")[0], source, node.lineno, guarded))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.append(Import(node.args[0].value.split(".")[0], source, node.lineno, guarded))
        for child in ast.iter_child_nodes(node):
            visit(child, guarded)

    visit(ast.parse(source.read_text(encoding="utf-8"), str(source)), False)
    return found


def undeclared_imports(package_dir: Path, pyproject: Path, own: str = "mnistlab") -> list[str]:
    """One line per import that no declared dependency (or properly guarded extra) provides."""
    base, extras = declared(pyproject)
    optional = set().union(*(names for extra, names in extras.items() if extra != TEST_EXTRA))
    distributions = {module: {_normalise(d) for d in dists}
                     for module, dists in importlib.metadata.packages_distributions().items()}
    problems = []
    for source in sorted(package_dir.rglob("*.py")):
        for item in imports_of(source):
            if item.module in sys.stdlib_module_names or item.module in (own, "__future__"):
                continue
            where = f"{item.file.relative_to(package_dir.parent)}:{item.line}: import {item.module}"
            # A guarded optional package may be absent here (its extra not installed): then its
            # distribution is taken to share its name, as ray, onnx, h5py and mlflow do.
            provided_by = distributions.get(item.module) or ({_normalise(item.module)} if item.guarded else set())
            if not provided_by:
                problems.append(f"{where}: no installed distribution provides it (declare it, then install)")
            elif provided_by & base:
                continue
            elif provided_by & optional:
                if not item.guarded:
                    problems.append(f"{where}: from an optional extra but not guarded by `except ImportError`")
            else:
                problems.append(f"{where}: distribution {', '.join(sorted(provided_by))} is not declared in pyproject")
    return problems


def test_every_import_under_src_is_declared():
    assert undeclared_imports(ROOT / "src" / "mnistlab", ROOT / "pyproject.toml") == []


def _package(tmp_path: Path, code: str, dependencies: str = '"PyYAML>=6"', extras: str = "") -> tuple[Path, Path]:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "module.py").write_text(code)
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(f'[project]\nname = "pkg"\ndependencies = [{dependencies}]\n'
                         f'[project.optional-dependencies]\ntest = ["pytest"]\n{extras}')
    return package, pyproject


def test_the_check_fails_on_an_undeclared_import(tmp_path):
    # numpy and pytest are installed here but this synthetic package declares only PyYAML.
    package, pyproject = _package(tmp_path, "import os\nimport yaml\nimport numpy as np\nfrom pytest import raises\n")
    problems = undeclared_imports(package, pyproject, own="pkg")
    assert [p.split(": ", 1)[0] for p in problems] == ["pkg/module.py:3", "pkg/module.py:4"]
    assert "numpy is not declared" in problems[0] and "pytest is not declared" in problems[1]


def test_the_check_fails_on_an_unguarded_optional_import(tmp_path):
    code = "import numpy\ntry:\n    import numpy.linalg\nexcept ImportError:\n    raise SystemExit('needs pkg[num]')\n"
    package, pyproject = _package(tmp_path, code, extras='num = ["numpy"]\n')
    problems = undeclared_imports(package, pyproject, own="pkg")
    assert len(problems) == 1 and problems[0].startswith("pkg/module.py:1: import numpy: from an optional extra")


def test_the_check_fails_on_a_module_nothing_provides(tmp_path):
    package, pyproject = _package(tmp_path, "import surely_not_a_real_module_xyz\n")
    (problem,) = undeclared_imports(package, pyproject, own="pkg")
    assert "no installed distribution provides it" in problem
