"""The code's layout holds (README, "How the code is laid out"): data flows one way, conf -> cli -> commands
-> engines -> judge / tracking. Read from the source's import statements (lazy ones inside functions
included), not from a list kept by hand."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("studio", "generators")
ENGINES = ("studio.optvis", "studio.explain", "studio.concepts", "generators")
# What an engine never imports: the config and tracking libraries, and the layers above it.
ENGINE_FORBIDDEN = ("omegaconf", "hydra", "wandb", "studio.cli", "studio.config", "studio.commands",
                    "studio.tracking", "studio.report")
MAX_FUNCTION_LINES = 60


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module `name` imports: `from a import b` is a.b where that is a module, else a."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            out.update(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names)
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle among the project's modules, or None (depth-first search)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node] & graph.keys()):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_reader_finds_a_planted_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b", "torch"}, "b": set()}) is None


def test_no_import_cycles(graph):
    assert len(graph) > 40  # the reader found the project
    assert _cycle(graph) is None


def test_engines_import_no_config_tracking_or_command_code(graph):
    offending = [f"{module} imports {imported}" for module, imports in sorted(graph.items())
                 if module.startswith(ENGINES) for imported in sorted(imports)
                 if imported.startswith(ENGINE_FORBIDDEN)]
    assert offending == []


def test_only_the_entry_point_imports_the_cli(graph):
    assert [module for module, imports in graph.items() if "studio.cli" in imports] == []


def test_every_command_is_one_module_with_run():
    from studio.commands import COMMANDS

    for name, command in COMMANDS.items():
        path = ROOT / "studio" / "commands" / f"{command.module}.py"
        functions = {n.name for n in ast.parse(path.read_text()).body if isinstance(n, ast.FunctionDef)}
        assert "run" in functions, f"studio {name}: {path.name} has no run(cfg, tracker)"


def test_no_function_is_longer_than_60_lines():
    long = []
    for path in _modules().values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert long == []
