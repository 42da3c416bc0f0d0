"""The package's import graph: no cycles, and the walls the design states.

Every ``import`` counts, those inside functions too (a lazy import is still a dependency), and so
does the registry's table of built-in plugins (it imports them by name); only ``if TYPE_CHECKING:``
blocks, which never run, are left out.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "imgpack"


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = modules()


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for n in ast.walk(node)}
    return skipped


def _function_nodes(tree: ast.AST) -> set[int]:
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            inside |= {id(n) for n in ast.walk(node)} - {id(node)}
    return inside


def imports(name: str, lazy: bool = True) -> Iterator[str]:
    """Every module ``name`` imports: imgpack's by full name, others by their top-level name.

    ``lazy=False``: only what importing ``name`` itself loads (imports inside functions left out).
    """
    path = MODULES[name]
    tree = ast.parse(path.read_text())
    skipped = _type_checking_nodes(tree) | (set() if lazy else _function_nodes(tree))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            for alias in node.names:
                yield f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and lazy:
            target = node.value.partition(":")[0]  # the registry's "module:Class"
            if target in MODULES and target != name:
                yield target


def graph(lazy: bool = True) -> dict[str, set[str]]:
    return {name: {m for m in imports(name, lazy) if m in MODULES and m != name} for name in MODULES}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def reachable(start: str, edges: dict[str, set[str]]) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for m in edges[todo.pop()] - seen:
            seen.add(m)
            todo.append(m)
    return seen


def test_the_check_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_lazy_imports_and_the_registry_table() -> None:
    edges = graph()
    assert "imgpack.writers.tfrecord" in edges["imgpack.registry"]  # from the built-in table
    assert "imgpack.pipeline" in edges["imgpack.cli.convert"]  # imported inside the command function


def test_no_import_cycles() -> None:
    assert cycles(graph()) == []


def test_only_the_command_line_imports_click() -> None:
    users = sorted(m for m in MODULES if "click" in {i.split(".")[0] for i in imports(m)})
    assert users and all(m == "imgpack.cli" or m.startswith("imgpack.cli.") for m in users), users


def test_a_step_knows_no_format_and_no_plugin_knows_the_registry() -> None:
    edges, loaded = graph(), graph(lazy=False)
    for step in (m for m in MODULES if m.startswith("imgpack.preprocess")):
        assert not {m for m in edges[step] if m.startswith(("imgpack.writers", "imgpack.formats"))}, step
        known = reachable(step, loaded)  # what importing the step loads
        assert not {m for m in known if m.startswith(("imgpack.writers", "imgpack.formats", "imgpack.engines"))}, step
    plugins = [m for m in MODULES if m.startswith(("imgpack.preprocess.", "imgpack.readers.", "imgpack.writers.",
                                                   "imgpack.engines."))]
    assert plugins and not [m for m in plugins if "imgpack.registry" in edges[m]]


def test_importing_every_step_loads_no_format_in_a_real_interpreter() -> None:
    steps = [m for m in MODULES if m.startswith("imgpack.preprocess.")]
    code = ("import sys\n" + "".join(f"import {m}\n" for m in steps)
            + "bad = sorted(m for m in sys.modules if m.startswith(('imgpack.writers', 'imgpack.formats', "
              "'imgpack.registry', 'click')))\nassert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
