"""The package's import graph: no cycles between files, and no import up the flow.

Every ``import`` and ``from ... import`` of ``split4ml`` (at module level, inside functions, and under
``TYPE_CHECKING``) is read from the source with :mod:`ast`, so a lazy import cannot hide a cycle.

Rooms (a top-level module, or a sub-package as a whole) stand on floors, from the ground up. A room
may import only rooms on lower floors, and files inside one room may import each other, without a
cycle. Adding a room means giving it a floor here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "split4ml"

#: Floors from the ground up: what each room holds, and so what it may use.
FLOORS: tuple[tuple[str, ...], ...] = (
    ("errors", "hashing"),  # the exception family, file digests
    ("fixed", "yamlio", "networks"),  # fixed-point types, YAML reading, example networks
    ("boards", "settings"),  # board catalogue, hls4ml layer settings
    ("ir",),  # the Graph
    ("frontends", "stages"),  # model files -> Graph; Graph + stage choice -> per-board stages
    ("hls",),  # hls4ml projects, C-simulation, the reference conversion
    ("estimate",),  # cost models (rule4ml builds Keras models through hls/)
    ("shard",),  # cutting one layer into shards
    ("lower",),  # a plan's stages -> the pipeline of boards
    ("plan",),  # the planner and the plan file
    ("build", "build_reports", "verify", "report", "runtime"),  # what is done with a plan
    ("demo",),
    ("cli",),
)
FLOOR_OF = {room: i for i, rooms in enumerate(FLOORS) for room in rooms}


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(source: str, me: str, is_package: bool = False) -> set[str]:
    """The ``split4ml`` modules (or packages) that module ``me`` (source text ``source``) imports."""
    package = me if is_package else me.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(source, me)):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "split4ml")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            else:
                target = node.module or ""
            if target.split(".")[0] != "split4ml":
                continue
            for a in node.names:  # `from . import x` may name a module
                sub = f"{target}.{a.name}"
                out.add(sub if _exists(sub) else target)
    return {m for m in out if m != me}


def _exists(module: str) -> bool:
    rel = Path(*module.split(".")[1:])
    return (SRC / rel).with_suffix(".py").is_file() or (SRC / rel / "__init__.py").is_file()


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps = set()
        for target in _imports(path.read_text(), name, path.name == "__init__.py"):
            while target not in modules and "." in target:  # `split4ml.plan.api.X` -> the module
                target = target.rsplit(".", 1)[0]
            if target in modules and target != name:
                deps.add(target)
        graph[name] = deps
    return graph


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one file (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_is_read() -> None:
    """The reader sees lazy and relative imports (a check that reads nothing would always pass)."""
    graph = _graph()
    assert len(graph) > 60
    assert "split4ml.plan.api" in graph["split4ml.cli"]
    assert "split4ml.plan.metrics" in graph["split4ml.runtime.pace"]  # imported inside a function
    assert "split4ml.estimate.calibrate" in graph["split4ml.plan.api"]


def test_no_import_cycles() -> None:
    cycles = _cycles(_graph())
    assert not cycles, "files that import each other in a loop: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_every_room_has_a_floor() -> None:
    rooms = {_room(m) for m in _graph()} - {""}
    assert not rooms - set(FLOOR_OF), f"rooms without a floor in FLOORS: {sorted(rooms - set(FLOOR_OF))}"


def _upward(graph: dict[str, set[str]]) -> list[str]:
    """Imports from a room to a room on the same or a higher floor."""
    upward = []
    for module, deps in graph.items():
        room = _room(module)
        if not room:  # the package's face: split4ml/__init__.py hands names on
            continue
        for dep in deps:
            other = _room(dep)
            if other and other != room and FLOOR_OF[other] >= FLOOR_OF[room]:
                upward.append(f"{module} -> {dep} ({room} on floor {FLOOR_OF[room]}, {other} on floor "
                              f"{FLOOR_OF[other]})")
    return sorted(upward)


def test_no_import_runs_up_the_flow() -> None:
    upward = _upward(_graph())
    assert not upward, "imports that run up (or across) the flow:\n" + "\n".join(upward)


@pytest.mark.parametrize(("source", "expected"), [
    ("from ..plan.api import load_plan\n", "split4ml.plan.api"),
    ("def f():\n    from ..cli import main\n", "split4ml.cli"),
    ("import split4ml.errors as e\n", "split4ml.errors"),
    ("from . import base\n", "split4ml.estimate.base"),
])
def test_the_reader_resolves_relative_and_lazy_imports(source: str, expected: str) -> None:
    assert expected in _imports(source, "split4ml.estimate.probe")


def test_a_cycle_and_an_upward_import_are_caught() -> None:
    graph = {"split4ml.plan.a": {"split4ml.plan.b"}, "split4ml.plan.b": {"split4ml.plan.a"},
             "split4ml.estimate.x": {"split4ml.plan.a"}, "split4ml.cli": {"split4ml.plan.a"}}
    assert _cycles(graph) == [["split4ml.plan.a", "split4ml.plan.b"]]
    assert _upward(graph) == ["split4ml.estimate.x -> split4ml.plan.a (estimate on floor 6, plan on floor 9)"]
