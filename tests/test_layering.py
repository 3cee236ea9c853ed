"""The packages import in layers, as the architecture page draws them, and no modules import in a circle.

Bottom to top: ``common`` (process-wide plumbing), ``recognizer``, ``data`` (which may use the
recognizer), ``inference``, ``train`` (which validates through inference), ``serve`` (over inference,
beside train) and ``bench`` on top. Every ``import`` is read from the source with ``ast``, those inside
functions too, since a deferred import still ties the packages together. Imports under
``if TYPE_CHECKING:`` never run, so they may close a circle, but they may not point up a layer.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# What each package may import (besides itself). A package not listed here may not be imported by them.
ALLOWED: dict[str, frozenset[str]] = {
    "common": frozenset(),
    "recognizer": frozenset({"common"}),
    "data": frozenset({"common", "recognizer"}),
    "inference": frozenset({"common", "recognizer", "data"}),
    "train": frozenset({"common", "recognizer", "data", "inference"}),
    "serve": frozenset({"common", "recognizer", "data", "inference"}),
    "bench": frozenset({"common", "recognizer", "data", "inference", "train", "serve"}),
}


@dataclass(frozen=True)
class Import:
    """One imported project module, where it is imported."""

    importer: str
    target: str
    path: Path
    line: int
    type_only: bool

    def where(self, root: Path) -> str:
        return f"{self.path.relative_to(root)}:{self.line}"


def project_modules(root: Path, packages: list[str]) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the packages (a package is its __init__.py)."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _type_checking_lines(tree: ast.Module) -> set[int]:
    """Lines inside ``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``) blocks."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = (
                test.id
                if isinstance(test, ast.Name)
                else test.attr
                if isinstance(test, ast.Attribute)
                else ""
            )
            if name == "TYPE_CHECKING":
                for child in node.body:
                    lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def _owner(name: str, modules: dict[str, Path]) -> str | None:
    """The project module that `name` (a module, or a name inside one) comes from, or None."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> Iterator[Import]:
    """The project modules `module` imports, at any depth of its code."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    type_only = _type_checking_lines(tree)
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            # `from pkg import sub` imports the submodule `pkg.sub`; `from mod import name`, `mod`.
            names = [f"{source}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in {owner for name in names if (owner := _owner(name, modules)) and owner != module}:
            yield Import(module, target, path, node.lineno, node.lineno in type_only)


def layer_violations(root: Path, allowed: dict[str, frozenset[str]]) -> list[str]:
    """Each import of a package that its importer's layer may not import, as ``file:line: ...``."""
    modules = project_modules(root, list(allowed))
    problems = []
    for module, path in modules.items():
        package = module.split(".")[0]
        for imp in imports_of(module, path, modules):
            target_package = imp.target.split(".")[0]
            if target_package != package and target_package not in allowed[package]:
                problems.append(
                    f"{imp.where(root)}: {module} imports {imp.target}, but {package}/ may import only "
                    f"{', '.join(sorted(allowed[package])) or 'no other package'}"
                )
    return problems


def import_cycles(root: Path, packages: list[str]) -> list[str]:
    """Each circle of modules importing each other (run-time imports only), one import per step."""
    modules = project_modules(root, packages)
    edges: dict[str, dict[str, Import]] = {module: {} for module in modules}
    for module, path in modules.items():
        for imp in imports_of(module, path, modules):
            if not imp.type_only:
                edges[module].setdefault(imp.target, imp)
    cycles = []
    for component in _strongly_connected(edges):
        if len(component) > 1:
            steps = _cycle_through(component, edges)
            cycles.append(
                " -> ".join(f"{s.importer} ({s.where(root)})" for s in steps) + f" -> {steps[0].importer}"
            )
    return sorted(cycles)


def _strongly_connected(edges: dict[str, dict[str, Import]]) -> list[list[str]]:
    """Tarjan's strongly connected components, iteratively (no recursion limit on long chains)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def _cycle_through(component: list[str], edges: dict[str, dict[str, Import]]) -> list[Import]:
    """One circle inside a strongly connected component, from its first module back to it (BFS)."""
    members = set(component)
    start = component[0]
    came_from: dict[str, Import] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target, imp in sorted(edges[node].items()):
                if target not in members:
                    continue
                if target == start:
                    steps = [imp]
                    while steps[0].importer != start:
                        steps.insert(0, came_from[steps[0].importer])
                    return steps
                if target not in came_from:
                    came_from[target] = imp
                    following.append(target)
        frontier = following
    raise AssertionError(f"no circle through {start} in {component}")


def test_every_package_has_a_layer():
    packages = {path.parent.name for path in REPO.glob("*/__init__.py")}
    assert packages <= set(ALLOWED), f"packages without a layer in ALLOWED: {sorted(packages - set(ALLOWED))}"


def test_no_import_points_up_a_layer():
    problems = layer_violations(REPO, ALLOWED)
    assert not problems, "imports that point up a layer:\n" + "\n".join(problems)


def test_no_modules_import_each_other_in_a_circle():
    cycles = import_cycles(REPO, list(ALLOWED))
    assert not cycles, "modules that import each other in a circle:\n" + "\n".join(cycles)


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")


def test_the_checks_name_an_upward_import_and_a_circle(tmp_path):
    """The checks themselves, on a small tree: a deferred upward import and a three-module circle through
    a relative import are named with file and line; a TYPE_CHECKING import closes no circle."""
    _write(
        tmp_path,
        {
            "low/__init__.py": "",
            "low/a.py": "import os\n\n\ndef f():\n    from high.b import g\n    return g\n",
            "low/c.py": "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from low.a import f\n",
            "high/__init__.py": "",
            "high/b.py": "from low import c\n\n\ndef g():\n    pass\n",
            "high/x.py": "from .y import z\n",
            "high/y.py": "import high.w\nz = 1\n",
            "high/w.py": "from high import x\n",
        },
    )
    allowed = {"low": frozenset(), "high": frozenset({"low"})}
    assert layer_violations(tmp_path, allowed) == [
        "low/a.py:5: low.a imports high.b, but low/ may import only no other package"
    ]
    assert import_cycles(tmp_path, list(allowed)) == [
        "high.w (high/w.py:1) -> high.x (high/x.py:1) -> high.y (high/y.py:1) -> high.w"
    ]
    # Closing the circle high.b -> low.c -> low.a -> high.b at run time makes it one.
    _write(tmp_path, {"low/c.py": "from low.a import f\n"})
    assert import_cycles(tmp_path, list(allowed)) == [
        "high.b (high/b.py:1) -> low.c (low/c.py:1) -> low.a (low/a.py:5) -> high.b",
        "high.w (high/w.py:1) -> high.x (high/x.py:1) -> high.y (high/y.py:1) -> high.w",
    ]
