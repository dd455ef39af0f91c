"""The import graph of dinolab follows the layers of ARCHITECTURE.md: no upward imports, no loops.

Every module's imports are read with `ast` (module level and inside functions), mapped to the
layer of the module they name, and checked against the importing module's layer.
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
                found.append((base, child.lineno, nested))
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


MODULES = _modules()
EDGES = [
    (module, target, line, nested)
    for module, path in MODULES.items()
    for target, line, nested in _imports(module, path)
    if not _is_type_checking_only(path, line)
]


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
    for module, target, _, _ in EDGES:
        a, b = _component(module), _component(target)
        if a != b:
            graph.setdefault(a, set()).add(b)

    def cycle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in sorted(graph.get(node, ())):
                if nxt == start:
                    return path + [start]
                if nxt not in path:
                    stack.append((nxt, path + [nxt]))
        return None

    cycles = [c for c in (cycle_from(n) for n in sorted(graph)) if c]
    assert not cycles, "package import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


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
