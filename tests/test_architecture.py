"""The tree is the architecture: layers import inward only, no import circle,
small modules, and sync/async written once outside the stores.

Imports are read from the source (``ast``), all of them: module level,
inside functions and under ``TYPE_CHECKING``, so a lazy import cannot hide a
dependency that points the wrong way.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "budgetguard"
MAX_LINES = 500

# Longest prefix wins. A module may import modules of its own layer or of a lower one.
LAYERS: dict[str, int] = {
    "budgetguard._core": 0,
    "budgetguard.pricing": 1,
    "budgetguard.providers": 2,  # adapters: pure reading of requests, responses, streams
    "budgetguard.stores": 3,
    "budgetguard._engine": 4,
    "budgetguard.providers.calls": 5,  # the shell that puts the engine around SDK methods
    "budgetguard.providers.prepared": 5,
    "budgetguard.providers.meter": 5,
    "budgetguard.providers.streams": 5,
    "budgetguard.providers.raw": 5,
    "budgetguard.providers.manager": 5,
    "budgetguard.providers.instrument": 5,
    "budgetguard.observe": 5,
    "budgetguard.integrations": 6,
    "budgetguard.testing": 6,
    "budgetguard.trial": 6,  # a budgeted model trial over instrumented clients
    "budgetguard.cli": 7,
    "budgetguard": 8,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int:
    best = max(
        (prefix for prefix in LAYERS if module == prefix or module.startswith(prefix + ".")),
        key=len,
    )
    return LAYERS[best]


def imports_of(module: str) -> Iterator[tuple[str, int]]:
    """(imported budgetguard module, line) for every import statement in ``module``."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("budgetguard"):
                    yield _known(alias.name), node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if not target.startswith("budgetguard"):
                continue
            for alias in node.names:
                child = f"{target}.{alias.name}"
                yield (child if child in MODULES else _known(target)), node.lineno


def _known(name: str) -> str:
    while name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def graph() -> dict[str, set[str]]:
    return {module: {target for target, _ in imports_of(module)} - {module} for module in MODULES}


def test_every_module_is_mapped_to_a_layer() -> None:
    assert "budgetguard._core.money" in MODULES and "budgetguard.cli" in MODULES
    for module in MODULES:
        layer_of(module)  # raises if no prefix matches


def test_layers_import_inward_only() -> None:
    wrong = [
        f"{module}:{line} imports {target} (layer {layer_of(module)} -> {layer_of(target)})"
        for module in MODULES
        for target, line in imports_of(module)
        if layer_of(target) > layer_of(module)
    ]
    assert not wrong, "\n".join(wrong)


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every set of modules that import each other, directly or not (Tarjan's SCC)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in edges:
        if node not in index:
            visit(node)
    return found


def test_no_import_circle() -> None:
    assert circles(graph()) == []


def test_the_circle_check_finds_a_planted_circle() -> None:
    edges = graph()
    edges["budgetguard._core.money"] = {*edges["budgetguard._core.money"], "budgetguard.cli"}
    assert any("budgetguard._core.money" in circle for circle in circles(edges))
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_over_500_lines(module: str) -> None:
    lines = MODULES[module].read_text().count("\n")
    assert lines <= MAX_LINES, f"{MODULES[module]} has {lines} lines"


# -- sync and async, written once -----------------------------------------------------

_ASYNC_NAMES = {"__aenter__": "__enter__", "__aexit__": "__exit__", "__anext__": "__next__"}
_ASYNC_NAMES |= {"__aiter__": "__iter__", "AsyncGuardedStream": "GuardedStream"}
SHELL_STATEMENTS = 3
"""A sync/async pair of at most this many statements is a shell: it only drives a flow."""


class _Unasync(ast.NodeTransformer):
    """An async function as its sync twin would read: no ``await``, no ``a``/``async_`` names."""

    def __init__(self, sync_names: set[str]) -> None:
        self.sync_names = sync_names

    def _name(self, name: str) -> str:
        if name in _ASYNC_NAMES:
            return _ASYNC_NAMES[name]
        for prefix in ("async_", "Async", "a"):
            if name.startswith(prefix) and name[len(prefix) :] in self.sync_names:
                return name[len(prefix) :]
        return name

    def visit_Await(self, node: ast.Await) -> ast.AST:
        return self.visit(node.value)

    def visit_Name(self, node: ast.Name) -> ast.AST:
        return ast.Name(id=self._name(node.id), ctx=node.ctx)

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        value = self.visit(node.value)
        return ast.Attribute(value=value, attr=self._name(node.attr), ctx=node.ctx)


def _body(function: ast.FunctionDef | ast.AsyncFunctionDef) -> list[ast.stmt]:
    body = list(function.body)
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring
    return body


def _statements(body: list[ast.stmt]) -> int:
    return sum(isinstance(node, ast.stmt) for stmt in body for node in ast.walk(stmt))


def twin_pairs(source: str) -> list[tuple[str, str, int]]:
    """(sync, async, statements) of every function pair that differs only by ``await``."""
    tree = ast.parse(source)
    functions = [
        node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    ]
    names = {
        node.id if isinstance(node, ast.Name) else node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Name | ast.Attribute)
    } | {f.name for f in functions}
    sync = [f for f in functions if isinstance(f, ast.FunctionDef)]
    pairs = []
    for twin in (f for f in functions if isinstance(f, ast.AsyncFunctionDef)):
        unasynced = [_Unasync(names).visit(stmt) for stmt in _body(twin)]
        shape = ast.dump(ast.Module(body=unasynced, type_ignores=[]))
        for candidate in sync:
            if ast.dump(ast.Module(body=_body(candidate), type_ignores=[])) == shape:
                pairs.append((candidate.name, twin.name, _statements(_body(candidate))))
    return pairs


def test_the_twin_finder_finds_twins() -> None:
    source = """
def settle(self, x):
    a = self.store.settle(x)
    self.count += 1
    log(a)
    return a

async def asettle(self, x):
    a = await self.store.asettle(x)
    self.count += 1
    log(a)
    return a
"""
    assert twin_pairs(source) == [("settle", "asettle", 4)]


def outside_stores() -> list[Path]:
    return [
        path for path in PACKAGE.rglob("*.py") if "stores" not in path.relative_to(PACKAGE).parts
    ]


def test_sync_and_async_are_written_once_outside_the_stores() -> None:
    """No sync/async pair outside stores/ repeats logic: the pairs left are shells of at
    most ``SHELL_STATEMENTS`` statements, which only drive a flow on one store or the other."""
    repeated = [
        f"{path.relative_to(PACKAGE)}: {sync} / {twin} ({count} statements)"
        for path in outside_stores()
        for sync, twin, count in twin_pairs(path.read_text())
        if count > SHELL_STATEMENTS
    ]
    assert not repeated, "\n".join(repeated)
