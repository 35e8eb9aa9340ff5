"""The layout rules of the three packages (docs/architecture.md), checked on the source: rooms of
at most 500 lines, functions of at most 80, no import cycle, and imports that flow one way
(tuning -> mlflow_tracking -> lungsrad; only tuning imports Ray; the library imports neither Ray
nor MLflow)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("lungsrad", "tuning", "mlflow_tracking")
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 80
# Who may not import whom (top-level names of imported modules).
FORBIDDEN = {
    "lungsrad": {"ray", "mlflow", "tuning", "mlflow_tracking"},
    "mlflow_tracking": {"ray", "tuning"},
}


def _modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every module `name` imports, anywhere in the file (function-local imports included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _local_graph() -> dict[str, set[str]]:
    return {
        name: {target for target in _imports(name, path) if target in MODULES and target != name}
        for name, path in MODULES.items()
    }


def test_every_module_is_at_most_500_lines():
    long = {
        name: lines
        for name, path in MODULES.items()
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_FILE_LINES
    }
    assert not long, f"modules over {MAX_FILE_LINES} lines: {long}"


def test_every_function_is_at_most_80_lines():
    long = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name} ({lines})")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of the graph (a package importing its own submodules through its
    __init__ is not a cycle), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            if target.startswith(f"{node}.") or node.startswith(f"{target}."):
                continue  # a package and its own modules
            if state.get(target) == 1:
                return stack[stack.index(target) :] + [target]
            if target not in state and (found := visit(target)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_there_is_no_import_cycle():
    cycle = _cycle(_local_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_check_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"a.b"}, "a.b": {"a"}}) is None


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_flow_one_way(package):
    wrong = {
        name: sorted(
            target for target in _imports(name, path) if target.split(".")[0] in FORBIDDEN[package]
        )
        for name, path in MODULES.items()
        if name.split(".")[0] == package
    }
    wrong = {name: targets for name, targets in wrong.items() if targets}
    assert not wrong, f"{package} imports what it may not: {wrong}"
