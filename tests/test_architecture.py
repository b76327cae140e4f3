"""The shape of the package: no import cycles, no private names across modules, declared layers.

Read from the source with ast (nothing is imported), like tests/test_dependencies.py:
- every `import` and `from ... import` of an mnistlab module counts, inside functions too; an
  import under `if TYPE_CHECKING:` does not (it never runs). `from pkg import sub` is an edge to the
  submodule `pkg.sub` when that is a module, else to `pkg`.
- a `_name` (not a dunder) imported from another module is a private name used across modules.
- each top-level package (or top-level module) sits in a layer; it may import its own package and
  the layers below, never a layer above and never another package of its own layer.
The `test_the_check_*` tests build small packages that break each rule, so each check is shown to fail.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).parents[1] / "src"
PACKAGE = "mnistlab"

# Lowest first. A package may import its own modules and those of lower layers only.
# `errors` sits below `util` because util's modules raise the one exception type.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors",),  # the one exception type and did-you-mean
    ("util",),  # atomic writes, safe text, strict parsing, YAML, the machine and its provenance
    ("spec", "data"),  # model specifications and Keras vocabulary; datasets and the IDX format
    ("nn", "zoo"),  # spec -> torch modules; the 35 seed models (specs as data)
    ("training",),  # the engine, its config, history and metric names, resume, optimizers, limits, cost
    ("experiments", "analysis"),  # experiment definitions and factor grids; diagnoses and statistics
    ("trained",),  # the model folder, inference, export
    ("runs",),  # the store, the runner, the backends (local, Ray), events
    ("interop", "report"),  # Keras code and weights, TensorBoard/MLflow; reports and progress displays
    ("api",),  # the Python entry points
    ("cli",),  # the command line: Typer commands and terminal views
    ("__main__",),  # `python -m mnistlab`
)
# The package root holds only the version and environment defaults set before torch loads.
ROOT_MODULE = PACKAGE

MAX_LINES = 600
# Modules allowed to be longer, each with its reason.
LONG_MODULES: dict[str, str] = {}


@dataclass(frozen=True)
class Edge:
    source: str  # importing module
    target: str  # imported module
    line: int
    names: tuple[str, ...]  # names taken by `from target import ...`


def module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules_of(src: Path, package: str = PACKAGE) -> dict[str, Path]:
    return {module_name(path, src): path for path in sorted((src / package).rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def edges_of(src: Path, package: str = PACKAGE) -> list[Edge]:
    """Every import of a package module by a package module, with its line."""
    modules = modules_of(src, package)
    found: list[Edge] = []
    for name, path in modules.items():
        is_package = path.name == "__init__.py"

        def visit(node: ast.AST, name: str = name, is_package: bool = is_package) -> None:
            if isinstance(node, ast.If) and _is_type_checking(node):
                for child in node.orelse:
                    visit(child)
                return
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in modules:
                        found.append(Edge(name, alias.name, node.lineno, ()))
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target in modules or target.split(".")[0] == package:
                    plain = []
                    for alias in node.names:
                        if f"{target}.{alias.name}" in modules:
                            found.append(Edge(name, f"{target}.{alias.name}", node.lineno, ()))
                        else:
                            plain.append(alias.name)
                    if plain and target in modules:
                        found.append(Edge(name, target, node.lineno, tuple(plain)))
            for child in ast.iter_child_nodes(node):
                visit(child)

        visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
    return [edge for edge in found if edge.source != edge.target]


def import_cycles(edges: list[Edge]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each sorted."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        graph.setdefault(edge.source, set()).add(edge.target)
        graph.setdefault(edge.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = 0

    def connect(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph) + 100))
    try:
        for node in sorted(graph):
            if node not in index:
                connect(node)
    finally:
        sys.setrecursionlimit(limit)
    return cycles


def private_imports(edges: list[Edge]) -> list[str]:
    return [f"{edge.source} line {edge.line}: imports {name} from {edge.target}"
            for edge in edges for name in edge.names
            if name.startswith("_") and not (name.startswith("__") and name.endswith("__"))]


def layer_of(module: str, layers: tuple[tuple[str, ...], ...] = LAYERS, package: str = PACKAGE) -> tuple[int, str]:
    """(layer number, top-level part) of a module; the package root is below every layer."""
    parts = module.split(".")
    if len(parts) == 1:
        return -1, module
    top = parts[1]
    for number, members in enumerate(layers):
        if top in members:
            return number, top
    raise AssertionError(f"{module}: its package '{top}' is in no layer of LAYERS; add it")


def layering_violations(edges: list[Edge], layers: tuple[tuple[str, ...], ...] = LAYERS,
                        package: str = PACKAGE) -> list[str]:
    problems = []
    for edge in edges:
        (source_layer, source_top), (target_layer, target_top) = (layer_of(edge.source, layers, package),
                                                                  layer_of(edge.target, layers, package))
        if source_top == target_top or target_layer == -1:
            continue
        if target_layer > source_layer:
            problems.append(f"{edge.source} line {edge.line}: imports {edge.target}, a higher layer")
        elif target_layer == source_layer:
            problems.append(f"{edge.source} line {edge.line}: imports {edge.target}, of the same layer")
    return problems


# --- the package as it is ------------------------------------------------------------------------


def test_no_import_cycles():
    assert import_cycles(edges_of(SRC)) == []


def test_no_private_name_is_imported_from_another_module():
    assert private_imports(edges_of(SRC)) == []


def test_every_import_follows_the_layers():
    assert layering_violations(edges_of(SRC)) == []


def test_every_package_is_in_a_layer():
    for module in modules_of(SRC):
        layer_of(module)


def test_no_module_is_longer_than_the_limit_unless_listed_with_a_reason():
    long = {module: len(path.read_text(encoding="utf-8").splitlines()) for module, path in modules_of(SRC).items()}
    over = {module: lines for module, lines in long.items() if lines > MAX_LINES and module not in LONG_MODULES}
    assert over == {}
    assert all(reason.strip() for reason in LONG_MODULES.values())
    assert set(LONG_MODULES) <= set(long), "a listed module no longer exists"


HEAVY = ("torch", "matplotlib", "scipy", "statsmodels", "pandas")


def test_package_inits_import_nothing_heavy():
    """Importing a package (to reach one of its light modules) pulls in none of the heavy libraries,
    so the store never loads torch and `ls` never loads matplotlib."""
    packages = [module for module, path in modules_of(SRC).items() if path.name == "__init__.py"]
    probe = ("import importlib, sys\n"
             "for name in sys.argv[1:]:\n"
             "    before = set(sys.modules)\n"
             "    importlib.import_module(name)\n"
             f"    heavy = sorted(m for m in set(sys.modules) - before if m.split('.')[0] in {HEAVY!r})\n"
             "    if heavy: print(name, sorted({m.split('.')[0] for m in heavy}))\n")
    for package in packages:  # one interpreter each: what one package loads must not hide another's
        result = subprocess.run([sys.executable, "-c", probe, package], capture_output=True, text=True,
                                env={**os.environ, "PYTHONPATH": str(SRC)}, timeout=120)
        assert result.returncode == 0, result.stderr
        assert result.stdout == "", result.stdout


def test_the_light_modules_stay_light():
    """The store and the training history (what `ls` and `show` read) import no torch."""
    probe = ("import sys, mnistlab.runs.store, mnistlab.training.history\n"
             f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(SRC)}, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# --- proof that each check can fail ----------------------------------------------------------------


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = tmp_path / "pkg" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for folder in {p.parent for p in (tmp_path / "pkg").rglob("*.py")}:
        (folder / "__init__.py").touch()
    return tmp_path


def test_the_check_finds_a_cycle_through_an_import_inside_a_function(tmp_path):
    src = _package(tmp_path, {"a/one.py": "from pkg.b import two\n",
                              "b/two.py": "def f():\n    from pkg.a.one import g\n"})
    assert import_cycles(edges_of(src, "pkg")) == [["pkg.a.one", "pkg.b.two"]]


def test_the_check_counts_from_package_import_submodule_as_an_edge_to_the_submodule(tmp_path):
    src = _package(tmp_path, {"a/one.py": "from pkg.b import two\n", "b/two.py": "from pkg.a import one\n"})
    assert import_cycles(edges_of(src, "pkg")) == [["pkg.a.one", "pkg.b.two"]]


def test_the_check_ignores_imports_for_type_checking_only(tmp_path):
    src = _package(tmp_path, {"a/one.py": "from pkg.b import two\n",
                              "b/two.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                          "    from pkg.a.one import g\n"})
    assert import_cycles(edges_of(src, "pkg")) == []


def test_the_check_finds_a_private_name_imported_from_another_module(tmp_path):
    src = _package(tmp_path, {"a/one.py": "from pkg.b.two import _secret, __version__, public\n",
                              "b/two.py": "_secret = public = __version__ = 1\n"})
    assert private_imports(edges_of(src, "pkg")) == ["pkg.a.one line 1: imports _secret from pkg.b.two"]


def test_the_check_finds_imports_upward_and_across_a_layer(tmp_path):
    layers = (("low",), ("mid", "side"), ("high",))
    src = _package(tmp_path, {"low/base.py": "from pkg.high import top\n",  # upward
                              "mid/m.py": "from pkg.side.s import x\nfrom pkg.low import base\n",  # across; down
                              "side/s.py": "x = 1\n", "high/top.py": "from pkg.mid import m\n"})
    assert layering_violations(edges_of(src, "pkg"), layers, "pkg") == [
        "pkg.low.base line 1: imports pkg.high.top, a higher layer",
        "pkg.mid.m line 1: imports pkg.side.s, of the same layer",
    ]


def test_the_check_refuses_a_package_in_no_layer():
    with pytest.raises(AssertionError, match="in no layer"):
        layer_of(f"{PACKAGE}.nowhere.module")


def test_every_name_the_api_offers_resolves_and_importing_it_stays_light():
    """`mnistlab.api` is the stable surface (CHANGELOG.md): each name in its __all__ resolves, and
    importing the module itself loads none of the heavy libraries (each function loads what it needs)."""
    probe = ("import sys, mnistlab.api as api\n"
             f"heavy = sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))\n"
             "missing = [name for name in api.__all__ if getattr(api, name, None) is None]\n"
             "print(heavy, missing)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(SRC)}, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[] []"
