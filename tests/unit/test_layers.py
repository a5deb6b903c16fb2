"""The layers of ../DESIGN.md, held by a test: a module imports only from its own layer or the ones below, the
backends (store, state) import nothing of the gateway's but the base, and no two packages import each other, even
through others. Every import counts — at load time, inside a function, under TYPE_CHECKING — since each is a
dependency the next reader has to follow. The README's layout section says the same in prose."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "gateway"

# Bottom up. A unit is a package under gateway/ (its subpackages included) or a top-level module.
LAYERS: list[tuple[str, frozenset[str]]] = [
    ("base", frozenset({"config", "errors", "memory", "refusals", "types", "ids", "tasks", "tracecontext"})),
    ("backends", frozenset({"store", "state"})),
    ("request", frozenset({"context", "reply", "decision"})),
    (
        "components",
        frozenset(
            {
                "identity",
                "routing",
                "providers",
                "policy",
                "guardrails",
                "telemetry",
                "sinks",
                "similarity",
                "flags",
                "conversations",
                "cache",
            }
        ),
    ),
    ("filters", frozenset({"filters", "components"})),
    ("pipeline", frozenset({"pipeline", "load"})),
    (
        "face",
        frozenset(
            {
                "api",
                "console",
                "server",
                "readiness",
                "runtime",
                "app",
                "cli",
                "cli_keys",
                "cli_policy",
                "cli_store",
                "__main__",
            }
        ),
    ),
]
LAYER_OF = {unit: rank for rank, (_, units) in enumerate(LAYERS) for unit in units}
BACKENDS = LAYERS[1][1]
BASE = LAYERS[0][1]
# Edges that still cross a line, each with the reason it is allowed for now. Empty is the goal; an entry that no
# longer occurs fails the test too, so that the list only shrinks.
KNOWN: dict[tuple[str, str], str] = {}


def unit_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports() -> Iterator[tuple[str, str]]:
    """(importing module, imported module) for every import of a gateway module by another."""
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                # `from gateway.x import y` may name a module y: count it as gateway.x.y when that file exists.
                names = [node.module]
                for alias in node.names:
                    candidate = f"{node.module}.{alias.name}"
                    if (PACKAGE.parent / Path(*candidate.split("."))).with_suffix(".py").exists():
                        names.append(candidate)
            else:
                continue
            for name in names:
                if name.startswith("gateway.") or name == "gateway":
                    yield module, name


def unit_edges() -> dict[tuple[str, str], set[str]]:
    edges: dict[tuple[str, str], set[str]] = {}
    for source, target in imports():
        a, b = unit_of(source), unit_of(target)
        if a != b and a != "__init__" and b != "__init__":
            edges.setdefault((a, b), set()).add(f"{source} -> {target}")
    return edges


def test_every_unit_has_a_layer():
    units = {unit_of(m) for m, _ in imports()} | {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    units |= {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert not units - set(LAYER_OF), f"give these a layer in LAYERS (and the README): {sorted(units - set(LAYER_OF))}"


def crossings(edges: dict[tuple[str, str], set[str]]) -> dict[tuple[str, str], list[str]]:
    """The edges that go up a layer, or out of a backend to anything but the base, with a few examples each."""
    out = {}
    for (a, b), examples in edges.items():
        upward = LAYER_OF[b] > LAYER_OF[a]
        backend_reaching_out = a in BACKENDS and b not in BASE
        if (upward or backend_reaching_out) and (a, b) not in KNOWN:
            out[(a, b)] = sorted(examples)[:3]
    return out


def test_no_import_crosses_a_layer_upwards_and_backends_are_leaves():
    crossing = crossings(unit_edges())
    assert not crossing, f"imports across the layers: {crossing}"


def test_the_known_crossings_still_occur():
    edges = unit_edges()
    gone = [edge for edge in KNOWN if edge not in edges]
    assert not gone, f"remove these from KNOWN, they are fixed: {gone}"


def test_no_two_packages_import_each_other_even_through_others():
    graph: dict[str, set[str]] = {}
    for a, b in unit_edges():
        if (a, b) not in KNOWN:
            graph.setdefault(a, set()).add(b)
    cycles = [c for c in _strongly_connected(graph) if len(c) > 1]
    assert not cycles, f"packages in an import cycle: {cycles}"


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative enough for a graph of a few dozen nodes."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            out.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return out


def test_the_checks_catch_what_they_are_for():
    """The test's own test: a cycle and an upward edge are found."""
    assert [c for c in _strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}}) if len(c) > 1] == [["a", "b", "c"]]
    assert set(crossings({("store", "routing"): {"x"}, ("store", "state"): {"y"}, ("routing", "store"): {"z"}})) == {
        ("store", "routing"),  # up a layer
        ("store", "state"),  # a backend reaching beside itself
    }
