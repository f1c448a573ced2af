"""Dependencies point one way: no import cycle between p2pinfer's modules, and no
import from a lower layer to a higher one (docs/architecture.md, "The parts").

Every `import` / `from ... import` of every module counts, also those under
`if TYPE_CHECKING:` and inside functions: a type-only or late import is still a
dependency, and the cycles it hides are the ones that grow.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "p2pinfer"

#: Bottom up. A module belongs to the layer of the longest prefix that names it;
#: it may import its own layer and those below, never one above. A layer's modules
#: may import each other (but not in a cycle).
LAYERS: tuple[tuple[str, ...], ...] = (
    # the base: no part of p2pinfer's own ("p2pinfer" is the package's __init__ alone)
    ("p2pinfer", "p2pinfer.addresses", "p2pinfer.errors", "p2pinfer.config", "p2pinfer.json_depth",
     "p2pinfer.identity", "p2pinfer.bounded", "p2pinfer.tasks", "p2pinfer.store",
     "p2pinfer.metrics", "p2pinfer.http",
     "p2pinfer.node.status"),  # node.json: the testnet and the CLI read it
    ("p2pinfer.protocol",),  # sans-IO messages and state machines
    ("p2pinfer.net",),  # transport: the libp2p host, adverts, DHT, relay, AutoNAT
    ("p2pinfer.backends",),  # engines and engine clients
    ("p2pinfer.testing",),  # faults, the fake stream backend, the tiny model
    # builds any backend by name, the fake one (`--backend fake`) too: above testing
    ("p2pinfer.backends.factory",),
    ("p2pinfer.hardware",),
    ("p2pinfer.market",),  # ledger, pricing, split, KPIs
    ("p2pinfer.gov",),
    ("p2pinfer.settle",),  # the chain; reads gov's messages for chain stake weight
    ("p2pinfer.verify",),  # reputation, breaker, re-check (judge, compare), reports
    ("p2pinfer.jobs",),  # JobClient, NetJob, JobServer, NetworkBackend
    ("p2pinfer.validator",),  # check jobs: a JobClient of its own
    ("p2pinfer.api",),  # the Ollama / OpenAI HTTP API over any Backend
    ("p2pinfer.gateway",),
    ("p2pinfer.testnet",),  # starts `p2pinfer node` processes; imports no node code
    ("p2pinfer.node",),  # one running peer: the wiring
    ("p2pinfer.sim",),
    ("p2pinfer.cli", "p2pinfer.__main__"),
)


def modules(package: Path) -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    out: dict[str, Path] = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(name: str, path: Path, known: dict[str, Path]) -> Iterator[tuple[str, int]]:
    """(module imported, line) for each p2pinfer import in the module, wherever it is."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text("utf-8"), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*up, *([node.module] if node.module else [])])
            # `from pkg import mod` imports the module pkg.mod; `from mod import name`, mod
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]
        for target in targets:
            if target == "p2pinfer" or target.startswith("p2pinfer."):
                found = _resolve(target, known)
                if found is not None and found != name:
                    yield found, node.lineno


def graph(package: Path) -> dict[str, dict[str, int]]:
    """module -> {module it imports: first line that does}."""
    known = modules(package)
    out: dict[str, dict[str, int]] = {}
    for name, path in known.items():
        edges = out.setdefault(name, {})
        for target, line in imports_of(name, path, known):
            edges[target] = min(line, edges.get(target, line))
    return out


def layer_of(module: str) -> int:
    best, best_len = -1, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            # the root package's own name is its __init__ only, not every module under it
            below = prefix != "p2pinfer" and module.startswith(prefix + ".")
            if (module == prefix or below) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    return best


def upward_edges(edges: dict[str, dict[str, int]]) -> list[str]:
    bad = []
    for source, targets in sorted(edges.items()):
        for target, line in sorted(targets.items()):
            if layer_of(target) > layer_of(source):
                bad.append(f"{source}:{line} imports {target} (layer "
                           f"{LAYERS[layer_of(source)][0]} below {LAYERS[layer_of(target)][0]})")
    return bad


def cycles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


@pytest.fixture(scope="module")
def edges() -> dict[str, dict[str, int]]:
    return graph(PACKAGE)


def test_every_module_has_a_layer(edges: dict[str, dict[str, int]]) -> None:
    assert [m for m in edges if layer_of(m) < 0] == []


def test_no_module_imports_a_higher_layer(edges: dict[str, dict[str, int]]) -> None:
    assert upward_edges(edges) == []


def test_no_import_cycle(edges: dict[str, dict[str, int]]) -> None:
    assert cycles(edges) == []


def test_the_walk_sees_type_checking_and_function_local_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "p2pinfer"
    (pkg / "net").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "net" / "__init__.py").write_text("")
    (pkg / "node").mkdir()
    (pkg / "node" / "__init__.py").write_text("")
    (pkg / "node" / "run.py").write_text("")
    (pkg / "net" / "a.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from p2pinfer.net.b import B\n"
    )
    (pkg / "net" / "b.py").write_text(
        "def f():\n    from p2pinfer.net import a\n    from p2pinfer.node import run\n"
    )
    found = graph(pkg)
    assert cycles(found) == [["p2pinfer.net.a", "p2pinfer.net.b"]]
    assert upward_edges(found) == [
        "p2pinfer.net.b:3 imports p2pinfer.node.run (layer p2pinfer.net below p2pinfer.node)"
    ]
