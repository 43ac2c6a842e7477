"""The package's shape, checked from its source: modules that import one way, ``__all__``
lists that say the truth, modules short enough to read, public signatures without
``Any``.

The import graph is read with ``ast``, not by importing, so a circle hidden in a
function body (a "lazy" import) counts like any other: it still means two modules each
need the other. Only imports under ``if TYPE_CHECKING:`` are left out, since they never
run. Importing a submodule also runs its package's ``__init__``; that edge is implied,
not written, and is not counted.
"""

from __future__ import annotations

import ast
import inspect
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import wan26_async
import wan26_async.redis
import wan26_async.testing
from wan26_async.testing import FakeWanServer
from wan26_async.testing._cli import ServerOptions

PACKAGE = Path(wan26_async.__file__).resolve().parent
MAX_LINES = 400


def modules(root: Path) -> dict[str, Path]:
    """Every module of the package at ``root``, by dotted name."""
    found: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = [root.name, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement at any depth (functions included), less those under
    ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                yield from _imports_in(child)
            continue
        yield from _imports_in(node)


def _imports_in(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node
    yield from _imports(node)


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports."""
    mods = modules(root)
    graph: dict[str, set[str]] = {name: set() for name in mods}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                # ``from .pkg import mod`` imports the submodule ``pkg.mod`` too
                targets = [module, *(f"{module}.{alias.name}" for alias in node.names)]
            graph[name].update(t for t in targets if t in mods and t != name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles of ``graph``: its strongly connected parts of two or more
    modules (Tarjan's algorithm), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            part: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                part.append(member)
                if member == node:
                    break
            if len(part) > 1:
                found.append(sorted(part))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


# -- imports flow one way ---------------------------------------------------------------


def test_no_module_imports_one_that_imports_it_back() -> None:
    graph = import_graph(PACKAGE)
    assert len(graph) > 40  # the walk found the package
    assert cycles(graph) == []


def reached(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module ``start`` imports, directly or through others."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        for other in graph[todo.pop()] - seen:
            seen.add(other)
            todo.append(other)
    return seen


def test_data_flows_request_encode_transport_decode_task() -> None:
    graph = import_graph(PACKAGE)
    wan = "wan26_async."
    assert graph[wan + "_errors"] == set()  # the exception tree needs nothing
    assert not reached(graph, wan + "_requests") & {
        wan + m for m in ("_encode", "_transport", "_decode", "_parse", "_models")}
    assert wan + "_requests" in graph[wan + "_encode"]
    assert wan + "_decode" in graph[wan + "_transport"]
    assert not reached(graph, wan + "_decode") & {
        wan + m for m in ("_encode", "_transport", "_parse", "_models", "_requests")}
    assert wan + "_decode" in graph[wan + "_parse"] and wan + "_models" in graph[wan + "_parse"]


def test_the_circle_check_finds_a_lazy_circle(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import g\n\ndef f():\n    return g()\n")
    (pkg / "b.py").write_text("def g():\n    from .a import f\n    return f\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n"
                              "    from .d import X\n")
    (pkg / "d.py").write_text("from . import c\n")
    assert cycles(import_graph(pkg)) == [["pkg.a", "pkg.b"]]


# -- __all__ says the truth ---------------------------------------------------------------


def _top_level(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """The module's statements, through top-level ``if``/``try`` blocks."""
    for node in body:
        if isinstance(node, ast.If):
            yield from _top_level(node.body)
            yield from _top_level(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody,
                          *(h.body for h in node.handlers)):
                yield from _top_level(block)
        else:
            yield node


def _is_type_var(value: ast.expr | None) -> bool:
    return (isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
            and value.func.id in ("TypeVar", "ParamSpec"))


def names_of(path: Path) -> tuple[list[str] | None, set[str], set[str]]:
    """``__all__`` (None when missing), the names a module binds at top level, and those
    of them it defines (not imports; TypeVars left out: typing plumbing)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    declared: list[str] | None = None
    bound: set[str] = set()
    defined: set[str] = set()
    for node in _top_level(tree.body):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.add(node.name)
            defined.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            bound.update((a.asname or a.name).partition(".")[0] for a in node.names)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        bound.add(name.id)
                        if not _is_type_var(node.value):
                            defined.add(name.id)
                        if name.id == "__all__" and node.value is not None:
                            declared = list(ast.literal_eval(node.value))
    return declared, bound, defined


@pytest.mark.parametrize("name", sorted(n for n in modules(PACKAGE)
                                        if not n.endswith("__main__")))
def test_every_module_all_names_what_it_offers_and_nothing_else(name: str) -> None:
    declared, bound, defined = names_of(modules(PACKAGE)[name])
    assert declared is not None, f"{name} has no __all__"
    assert len(declared) == len(set(declared)), f"{name}: __all__ repeats a name"
    assert sorted(set(declared) - bound) == [], f"{name}: __all__ names what is not there"
    public = {n for n in defined if not n.startswith("_")} - {"__all__"}
    assert sorted(public - set(declared)) == [], f"{name}: public names missing in __all__"


def test_the_all_check_sees_a_missing_and_an_unlisted_name(tmp_path: Path) -> None:
    path = tmp_path / "m.py"
    path.write_text('from x import y\n__all__ = ["y", "gone"]\nT = TypeVar("T")\n'
                    "def shown(): ...\ndef _hidden(): ...\n")
    declared, bound, defined = names_of(path)
    assert declared == ["y", "gone"]
    assert set(declared) - bound == {"gone"}
    assert {n for n in defined if not n.startswith("_")} - set(declared) == {"shown"}


# -- short modules ------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(modules(PACKAGE)))
def test_every_module_reads_in_one_sitting(name: str) -> None:
    lines = modules(PACKAGE)[name].read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_LINES, f"{name} has {lines} lines (at most {MAX_LINES})"


# -- public signatures --------------------------------------------------------------------

# Decoded JSON is what it is: a mapping of str to any JSON value (as json.loads gives).
_JSON = re.compile(r"\b(Mapping|dict)\[str, Any\]")
_ANY = re.compile(r"\bAny\b")


def _public_functions() -> Iterator[tuple[str, object]]:
    for package in (wan26_async, wan26_async.testing, wan26_async.redis):
        for export in package.__all__:
            obj = getattr(package, export)
            label = f"{package.__name__}.{export}"
            if inspect.isfunction(obj):
                yield label, obj
            elif inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    if attr.startswith("_") and attr not in ("__init__", "__call__"):
                        continue
                    if isinstance(member, staticmethod | classmethod):
                        member = member.__func__
                    elif isinstance(member, property):
                        member = member.fget
                    if inspect.isfunction(member):
                        yield f"{label}.{attr}", member


def test_no_public_signature_takes_or_gives_any() -> None:
    found = list(_public_functions())
    assert any(label.endswith("RedisRateLimiter.from_url") for label, _ in found)
    loose = [f"{label}({param}: {annotation})"
             for label, fn in found
             for param, annotation in getattr(fn, "__annotations__", {}).items()
             if _ANY.search(_JSON.sub("", str(annotation)))]
    assert loose == []


def test_run_forever_takes_exactly_the_servers_arguments() -> None:
    parameters = inspect.signature(FakeWanServer.__init__).parameters
    assert set(ServerOptions.__annotations__) == set(parameters) - {"self"}


def test_a_request_writes_its_payload_with_only_the_requests_module_imported() -> None:
    # to_payload's encoder comes from _encode, which importing the package always loads
    code = ("from wan26_async._requests import TextToVideo\n"
            "print(TextToVideo(prompt='p', duration=2).to_payload())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": str(PACKAGE.parent)})
    assert out.stdout.strip() == str({"model": "wan-2.6-text-to-video",
                                      "input": {"prompt": "p", "duration": 2}})
