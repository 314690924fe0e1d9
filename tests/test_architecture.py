"""The shape of the house: one installed name, rooms with one job each, imports that flow one way.

These read the source (not the installed modules), so an import hidden inside a function counts
as much as one at the top of a file; imports under ``if TYPE_CHECKING:`` do not (they never run).
"""
from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"tradeloop": "tradeloop", "engine": "tradeloop.engine", "data": "tradeloop.data",
           "models": "tradeloop.models", "risk": "tradeloop.risk", "brokers": "tradeloop.brokers",
           "strategies": "tradeloop.strategies"}

# Floors, lowest first: a module may import its own floor and the floors below it, never one above.
FLOORS = [
    ["tradeloop.errors"],
    ["tradeloop.data"],
    ["tradeloop.brokers"],
    ["tradeloop.risk"],
    ["tradeloop.models"],
    ["tradeloop.engine.config"],
    ["tradeloop.engine.telemetry"],
    ["tradeloop.engine.loop"],
    ["tradeloop.engine.metrics"],
    ["tradeloop.engine.runs"],
    ["tradeloop.engine.drivers"],
    ["tradeloop.engine.report"],
    ["tradeloop.engine.assembly"],
    ["tradeloop.engine.research"],
    ["tradeloop.engine.console"],       # the operator console: reads and writes the state file, served by live runs
    ["tradeloop.engine.live"],
    ["tradeloop.engine.cli"],
    ["tradeloop", "tradeloop.engine"],   # the public names (Strategy, Param, ...), re-exported lazily
    ["tradeloop.strategies"],            # examples, written as a user writes a strategy
]
# tradeloop.brokers.exchange is a program of its own (the exchange simulator): it runs the venue
# over FIX and reads MQTT market data, so it sits on the brokers floor but may use data.mqtt.


def modules() -> dict[str, Path]:
    out = {}
    for folder, pkg in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join((pkg, *parts))] = path
    return out


MODULES = modules()


def imports_of(name: str, path: Path) -> set[str]:
    """The project modules ``name`` imports anywhere in its source (functions included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    hidden = {id(n) for node in ast.walk(tree)
              if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in hidden:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in MODULES}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                parts = parts[:len(parts) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                if full in MODULES:
                    found.add(full)
                elif base in MODULES:
                    found.add(base)
    found.discard(name)
    return found


GRAPH = {name: imports_of(name, path) for name, path in MODULES.items()}


def floor_of(name: str) -> int:
    best, level = -1, -1
    for i, floor in enumerate(FLOORS):
        for prefix in floor:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best:
                best, level = len(prefix), i
    assert level >= 0, f"{name} is on no floor: add its package to FLOORS"
    return level


def test_no_import_cycles():
    """Tarjan's strongly connected components over every import in the source: none larger than one."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert cycles == []


def test_imports_never_reach_a_higher_floor():
    """Data flows one way; the only upward step is the CLI loading a strategy by name (importlib, not an import)."""
    upward = [f"{a} -> {b}" for a, targets in GRAPH.items() for b in sorted(targets) if floor_of(b) > floor_of(a)]
    assert upward == []


def test_every_package_says_its_job():
    missing = [name for name, path in MODULES.items()
               if path.name == "__init__.py" and len((ast.get_docstring(ast.parse(path.read_text())) or "")) < 40]
    assert missing == []


def test_engine_rooms_are_small():
    """No engine/ subpackage holds more than ~12 modules; engine/ itself holds only rooms."""
    engine = ROOT / "engine"
    assert sorted(p.name for p in engine.glob("*.py")) == ["__init__.py"]
    sizes = {room.name: len([p for p in room.glob("*.py") if p.name != "__init__.py"])
             for room in engine.iterdir() if (room / "__init__.py").exists()}
    assert sizes and max(sizes.values()) <= 12, sizes


def test_the_wheel_lists_every_package_under_one_name():
    """pyproject's package list is every folder with an __init__.py, each under ``tradeloop.``."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    on_disk = {name for name, path in MODULES.items() if path.name == "__init__.py"}
    assert listed == on_disk
    assert all(name == "tradeloop" or name.startswith("tradeloop.") for name in listed)
    assert config["package-dir"] == {pkg: folder for folder, pkg in FOLDERS.items()}


@pytest.mark.parametrize("old", ["engine", "data", "models", "risk", "brokers", "strategies"])
def test_no_source_imports_the_old_top_level_names(old):
    """``import data`` in our code would pick up a user's data.py: every import names tradeloop.*"""
    bad = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                bad += [f"{name}: import {a.name}" for a in node.names if a.name.split(".")[0] == old]
            elif isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0] == old:
                bad.append(f"{name}: from {node.module}")
    assert bad == []
