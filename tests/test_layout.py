"""The package's shape: faces, one-way dependencies, no cycles, small modules.

Run alone with `pytest tests/test_layout.py`; it reads the source, it imports nothing.
docs/design.md explains the rules these tests hold the code to.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "appliance"

# Each area may import the areas of lower layers, through their faces. The core modules
# are one-file areas: their module is their face.
LAYERS: dict[str, int] = {
    "identifiers": 0,
    "version": 0,
    "passwords": 0,
    "config": 1,
    "model": 1,
    "zones": 2,
    "store": 2,
    "directory": 2,
    "cab": 2,
    "tls": 2,
    "web": 2,
    "catalogue": 3,
    "discovery": 3,
    "ops": 3,
    "phones": 4,
    "admin": 4,
    "service": 5,
    "testing": 5,
    "phonesim": 5,
    "cli": 6,
}
# The module that starts the running service and so may import the global reactor; and the
# in-process web harness, which runs the calls Twisted's cooperator schedules on it.
COMPOSITION_ROOTS = {"appliance.cli.serve", "appliance.testing.web"}
# Modules allowed over MAX_LINES, each one cohesive codec or table (docs/design.md).
MAX_LINES = 400
LONG_MODULES: dict[str, str] = {}


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the module imported from (`from X import ...` gives X, or X.name)
    line: int
    top_level: bool  # run when the module is imported (not in a function, not TYPE_CHECKING)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


@functools.cache  # the source does not change during a run
def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


@functools.cache
def face_names(path: Path) -> frozenset[str]:
    """The names a package's `__init__` binds: `from pkg import name` may mean these."""
    init = path / "__init__.py"
    if not init.exists():
        return frozenset()
    return frozenset(
        a.asname or a.name
        for node in ast.parse(init.read_text(encoding="utf-8")).body
        if isinstance(node, ast.ImportFrom)
        for a in node.names
    )


def imports_of(module: str, path: Path, known: set[str]) -> Iterator[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def walk(node: ast.AST, top: bool) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield Import(module, alias.name, child.lineno, top)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                exported = face_names(PACKAGE.parent.joinpath(*base.split(".")))
                for alias in child.names:
                    # `from package import submodule` imports the submodule
                    full = f"{base}.{alias.name}"
                    sub = full in known and alias.name not in exported
                    yield Import(module, full if sub else base, child.lineno, top)
            else:
                deferred = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
                deferred |= isinstance(child, ast.If) and _is_type_checking(child)
                yield from walk(child, top and not deferred)

    yield from walk(tree, True)


@functools.cache
def all_imports() -> tuple[Import, ...]:
    found = modules()
    known = set(found)
    return tuple(
        i
        for m, p in found.items()
        for i in imports_of(m, p, known)
        if i.target == "appliance" or i.target.startswith("appliance.")
    )


def test_the_walker_sees_the_package() -> None:
    """The checks below would pass vacuously if the walker found nothing."""
    imports = all_imports()
    assert len(modules()) > 50
    assert any(i.module == "appliance.service" and i.target == "appliance.phones" for i in imports)
    assert any(not i.top_level for i in imports)


def test_other_areas_are_imported_through_their_faces() -> None:
    wrong = [
        f"{i.module}:{i.line} imports {i.target}"
        for i in all_imports()
        if area(i.target) in LAYERS
        and area(i.target) != area(i.module)
        and i.target != f"appliance.{area(i.target)}"
    ]
    assert wrong == []


def test_dependencies_run_one_way() -> None:
    wrong = [
        f"{i.module}:{i.line} ({area(i.module)}) imports {i.target} ({area(i.target)})"
        for i in all_imports()
        if area(i.module) in LAYERS
        and area(i.target) in LAYERS
        and area(i.target) != area(i.module)
        and LAYERS[area(i.target)] >= LAYERS[area(i.module)]
    ]
    assert wrong == []


def test_every_area_has_a_layer() -> None:
    assert {area(m) for m in modules()} - {""} - {"__main__"} <= set(LAYERS)


def test_no_import_cycles() -> None:
    graph: dict[str, set[str]] = {m: set() for m in modules()}
    for i in all_imports():
        if i.top_level and i.target in graph and i.target != i.module:
            graph[i.module].add(i.target)
            # importing a submodule runs its package's __init__ first
            parent = i.target.rpartition(".")[0]
            inside = i.module == parent or i.module.startswith(parent + ".")
            if parent in graph and not inside:
                graph[i.module].add(parent)
    assert find_cycles(graph) == []


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the stack, 2 done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    return cycles


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_the_reactor_is_imported_only_by_the_composition_roots() -> None:
    found = modules()
    wrong = []
    for m, p in found.items():
        if m in COMPOSITION_ROOTS:
            continue
        for i in imports_of(m, p, set(found)):
            if i.target == "twisted.internet.reactor" or (
                i.target == "twisted.internet" and "import reactor" in _line(p, i.line)
            ):
                wrong.append(f"{m}:{i.line}")
    assert wrong == []


def _line(path: Path, number: int) -> str:
    return path.read_text(encoding="utf-8").splitlines()[number - 1]


@pytest.mark.parametrize("face", sorted(m for m, p in modules().items() if p.name == "__init__.py"))
def test_a_face_holds_only_a_docstring_reexports_and_all(face: str) -> None:
    path = modules()[face]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    assert ast.get_docstring(tree), f"{face} says what the area is"
    names: list[str] = []
    declared: list[str] | None = None
    for node in tree.body[1:]:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(face + "."):
            names += [a.asname or a.name for a in node.names]
        elif isinstance(node, ast.Assign) and [getattr(t, "id", "") for t in node.targets] == [
            "__all__"
        ]:
            declared = list(ast.literal_eval(node.value))
        elif face == "appliance" and isinstance(node, ast.Assign):
            continue  # __version__
        else:
            pytest.fail(f"{face}:{node.lineno}: a face holds only re-exports and __all__")
    if face != "appliance":
        assert declared is not None and sorted(declared) == sorted(names)


def test_modules_stay_small() -> None:
    long = {
        m: n
        for m, p in modules().items()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
        and m not in LONG_MODULES
    }
    assert long == {}


def runtime_imports(node: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, dotted name) of every import that can run: all but those under TYPE_CHECKING."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import):
            yield from ((child.lineno, a.name) for a in child.names)
        elif isinstance(child, ast.ImportFrom):
            if not child.level:
                yield from ((child.lineno, f"{child.module}.{a.name}") for a in child.names)
        elif not (isinstance(child, ast.If) and _is_type_checking(child)):
            yield from runtime_imports(child)


def test_no_private_module_of_another_package_is_imported() -> None:
    """A library's private modules (`spnego._ntlm_raw`, `OpenSSL._util`) change without
    notice: at run time the appliance uses public names only (type hints may look deeper)."""
    wrong = [
        f"{m}:{line} imports {name}"
        for m, p in modules().items()
        for line, name in runtime_imports(ast.parse(p.read_text(encoding="utf-8")))
        if name.split(".")[0] not in ("appliance", "__future__")
        and any(part.startswith("_") for part in name.split("."))
    ]
    assert wrong == []
