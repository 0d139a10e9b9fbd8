"""No import circle at any depth: an import inside a function still runs, so it still closes a circle."""
from __future__ import annotations

import ast
from pathlib import Path

import lora_leak_lib as ll

ROOT = Path(ll.__file__).parent

def modules_of(root: Path) -> dict[str, Path]:
    """Every module of the package at ``root``, by dotted name (a package by its ``__init__.py``)."""
    found = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def packages_of(name: str) -> list[str]:
    """``a.b.c`` -> ``["a", "a.b"]``: the package ``__init__`` files importing ``a.b.c`` runs first."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def imports_at_any_depth(name: str, modules: dict[str, Path]) -> set[str]:
    """The modules of the package that ``name`` imports anywhere: at module level, under ``if``/``try``, and inside
    functions and methods (``ast.walk`` sees every ``import``); relative imports resolved, ``from . import x`` read
    as the module ``x`` when there is one; each with the package ``__init__`` files that import runs, and, for a
    package that calls ``discover()``, every module of that package."""
    path = modules[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def add(target: str) -> None:
        if target in modules:
            found.add(target)

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            add(base)
            for alias in node.names:
                add(f"{base}.{alias.name}")
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "discover":
            found.update(m for m in modules if m.startswith(package + ".") and m.count(".") == package.count(".") + 1)
    own = set(packages_of(name)) | {name}
    for target in list(found):
        found.update(p for p in packages_of(target) if p not in own)
    return found - own  # the packages ``name`` is inside are already importing it


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    modules = modules_of(root)
    return {name: imports_at_any_depth(name, modules) for name in modules}


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Every circle of the graph, as the set of modules of one strongly connected component (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[frozenset[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(frozenset(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_itself_back_at_any_depth():
    graph = import_graph()
    assert "lora_leak_lib.experiments.core" in graph["lora_leak_lib.experiments.multi_round"]  # the walker sees imports
    assert "lora_leak_lib.attacks.dlg" in graph["lora_leak_lib.attacks"]  # and discover()
    found = [sorted(c) for c in cycles(graph)]
    assert found == [], f"import circles: {found}"


def test_a_circle_through_a_function_level_import_is_found(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "low.py").write_text("def helper():\n    from .high import report  # hidden from module level\n"
                                    "    return report()\n")
    (package / "high.py").write_text("from . import low\n\n\ndef report():\n    return low\n")
    (package / "other.py").write_text("import pkg.high\n")
    graph = import_graph(package)
    assert graph["pkg.low"] == {"pkg.high"} and graph["pkg.high"] == {"pkg.low"}
    assert graph["pkg.other"] == {"pkg.high"}
    assert cycles(graph) == [frozenset({"pkg.low", "pkg.high"})]


def test_a_circle_through_a_package_init_is_found():
    # fl -> attacks.base runs attacks/__init__, which imports a module that imports fl: a circle
    graph = {"fl": {"attacks", "attacks.base"}, "attacks": {"attacks.harness"}, "attacks.base": set(),
             "attacks.harness": {"fl"}}
    assert cycles(graph) == [frozenset({"fl", "attacks", "attacks.harness"})]
    assert cycles({"a": {"b"}, "b": set()}) == []
