"""The import graph of dinolab follows the layers of ARCHITECTURE.md: no upward imports, no loops.

Every module's imports are read with `ast` (module level and inside functions), mapped to the
layer of the module they name, and checked against the importing module's layer. Imports under
`if TYPE_CHECKING:` never run, so the layer rules skip them; the loop rule counts them too (a
loop that only type annotations close still ties the two modules together for a reader).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import dinolab

SRC = Path(dinolab.__file__).parent

# Bottom to top; a module imports only from its own layer or below (ARCHITECTURE.md).
LAYERS: dict[str, int] = {
    "device": 1,
    "distributed": 1,
    "io": 1,
    "checkpoint": 1,
    "runfiles": 1,
    "data": 2,
    "models": 2,
    "losses": 2,
    "configs": 2,
    "interop": 2,
    "methods": 3,
    "hub": 3,
    "train": 4,
    "eval": 4,
    "viz": 5,
    "curate": 5,
    "cli": 6,
    "demo": 6,
    "__main__": 6,
    "__init__": 6,  # dinolab.load: the package's front door
}

# Function-level imports of dinolab modules are allowed only here, each for a reason.
DEFERRED_IMPORTS_ALLOWED = {
    "__init__": "`import dinolab` stays light: dinolab.load imports torch and hub on first use",
    "cli": "`dinolab --help` and argument errors answer without importing torch",
}


def _modules() -> dict[str, Path]:
    return {
        ".".join(p.relative_to(SRC.parent).with_suffix("").parts): p
        for p in sorted(SRC.rglob("*.py"))
    }


def _component(module: str) -> str:
    """`dinolab.eval.knn` -> `eval`; `dinolab` (the package itself) -> `__init__`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _is_module(name: str) -> bool:
    """Whether the dotted `name` is a dinolab module or package (not a name inside one)."""
    path = SRC.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _imports(module: str, path: Path) -> list[tuple[str, int, bool]]:
    """(imported dinolab module, line, at function level) for every import in the file."""
    tree = ast.parse(path.read_text(), str(path))
    package = module.rsplit(".", 1)[0]  # `dinolab.eval.__init__` and `dinolab.eval.knn` alike
    found = []

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, nested) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                # `from dinolab.data import augment` imports the module dinolab.data.augment
                submodules = [
                    f"{base}.{a.name}" for a in child.names if _is_module(f"{base}.{a.name}")
                ]
                found.extend((m, child.lineno, nested) for m in submodules or [base])
            visit(child, inner)

    visit(tree, False)
    return [(m, line, nested) for m, line, nested in found if m.split(".")[0] == "dinolab"]


def _is_type_checking_only(path: Path, line: int) -> bool:
    """Whether the import on `line` sits under `if TYPE_CHECKING:` (types only, never run)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            lines = {n.lineno for b in node.body for n in ast.walk(b) if hasattr(n, "lineno")}
            if line in lines:
                return True
    return False


def _edges(modules: dict[str, Path]) -> list[tuple[str, str, int, bool, bool]]:
    """(module, imported module, line, at function level, under TYPE_CHECKING) per import."""
    return [
        (module, target, line, nested, _is_type_checking_only(path, line))
        for module, path in modules.items()
        for target, line, nested in _imports(module, path)
    ]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every node's shortest way back to itself through `graph`, if it has one."""

    def cycle_from(start: str) -> list[str] | None:
        paths, seen = [[start]], {start}
        while paths:
            path = paths.pop(0)
            for nxt in sorted(graph.get(path[-1], ())):
                if nxt == start:
                    return path + [start]
                if nxt not in seen:
                    seen.add(nxt)
                    paths.append(path + [nxt])
        return None

    return [c for c in (cycle_from(n) for n in sorted(graph)) if c]


def _module_graph(
    modules: dict[str, Path], edges: list[tuple[str, str, int, bool, bool]]
) -> dict[str, set[str]]:
    """Module -> the modules it imports (a package's name stands for its __init__)."""
    graph: dict[str, set[str]] = {}
    for module, target, *_ in edges:
        name = target if target in modules else f"{target}.__init__"
        if name in modules and name != module:
            graph.setdefault(module, set()).add(name)
    return graph


MODULES = _modules()
ALL_EDGES = _edges(MODULES)
EDGES = [(m, t, line, nested) for m, t, line, nested, types_only in ALL_EDGES if not types_only]


def test_every_component_has_a_layer() -> None:
    unknown = sorted({_component(m) for m in MODULES} - set(LAYERS))
    assert not unknown, f"give these a layer in LAYERS (and in ARCHITECTURE.md): {unknown}"


def test_imports_go_to_the_same_layer_or_below() -> None:
    upward = [
        f"{module}:{line} imports {target} "
        f"(layer {LAYERS[_component(module)]} -> {LAYERS[_component(target)]})"
        for module, target, line, _ in EDGES
        if LAYERS[_component(target)] > LAYERS[_component(module)]
    ]
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_no_function_level_imports_of_dinolab() -> None:
    deferred = [
        f"{module}:{line} imports {target} inside a function"
        for module, target, line, nested in EDGES
        if nested and _component(module) not in DEFERRED_IMPORTS_ALLOWED
    ]
    assert not deferred, "import at module level:\n" + "\n".join(deferred)


def test_no_import_cycles_between_packages() -> None:
    graph: dict[str, set[str]] = {}
    for module, target, *_ in ALL_EDGES:
        a, b = _component(module), _component(target)
        if a != b:
            graph.setdefault(a, set()).add(b)
    cycles = _cycles(graph)
    assert not cycles, "package import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_no_import_cycles_between_modules() -> None:
    cycles = _cycles(_module_graph(MODULES, ALL_EDGES))
    assert not cycles, "module import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_a_cycle_closed_under_type_checking_is_found(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text(
        "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from dinolab.b import B\n"
    )
    (tmp_path / "b.py").write_text("from dinolab.a import A\n")
    modules = {"dinolab.a": tmp_path / "a.py", "dinolab.b": tmp_path / "b.py"}
    edges = _edges(modules)
    assert ("dinolab.a", "dinolab.b", 4, False, True) in edges
    cycles = _cycles(_module_graph(modules, edges))
    assert cycles == [
        ["dinolab.a", "dinolab.b", "dinolab.a"],
        ["dinolab.b", "dinolab.a", "dinolab.b"],
    ]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from dinolab.eval.features import x", "dinolab.eval.features"),
        ("import dinolab.io", "dinolab.io"),
    ],
)
def test_the_import_reader_sees_what_it_should(tmp_path: Path, source: str, expected: str) -> None:
    path = tmp_path / "m.py"
    path.write_text(f"def f():\n    {source}\n")
    assert _imports("dinolab.m", path) == [(expected, 2, True)]
