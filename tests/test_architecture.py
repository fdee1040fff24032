"""The package's imports point one way (read with `ast`, nothing is executed):

    errors < format, device, distributed, io < nn < coding, zoo < pipelines < eval < train < cli

A module may import its own part (subpackage) and parts of lower rank only; parts of equal rank
(coding and zoo; format, device and io) do not import each other. No module import cycle, with
imports inside functions counted too: deferring an import hides a cycle, it does not remove it.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "vqcodec"

RANKS = {"errors": 0, "format": 1, "device": 1, "distributed": 1, "io": 1, "nn": 2, "coding": 3, "zoo": 3,
         "pipelines": 4, "eval": 5, "train": 6, "cli": 7, "": 8}  # "": the public API


def module_names(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package at `root`."""
    names = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def imports_of(name: str, path: Path, modules: set[str]) -> set[str]:
    """The package modules that module `name` imports, wherever the import statement is."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            # `from pkg import mod` imports module pkg.mod; `from mod import name` imports mod.
            targets = [f"{stem}.{alias.name}" if f"{stem}.{alias.name}" in modules else stem
                       for alias in node.names]
        else:
            continue
        for target in targets:
            # `import a.b.c` also imports a and a.b; keep the deepest package module named.
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    names = module_names(root)
    return {name: imports_of(name, path, set(names)) for name, path in names.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def part(module: str) -> str:
    """The part of the package a module belongs to ("" for the top-level API module)."""
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else ""


GRAPH = import_graph(PACKAGE)


def test_every_part_has_a_rank():
    assert {part(m) for m in GRAPH} <= set(RANKS), {part(m) for m in GRAPH} - set(RANKS)


def test_no_import_cycle():
    assert find_cycle(GRAPH) is None, " -> ".join(find_cycle(GRAPH))


def test_imports_point_one_way():
    wrong = [f"{a} imports {b}" for a, targets in GRAPH.items() for b in sorted(targets)
             if part(a) != part(b) and RANKS[part(b)] >= RANKS[part(a)]]
    assert not wrong, "\n".join(wrong)


def test_cli_holds_no_codec_logic():
    wrong = [f"{a} imports {b}" for a, targets in GRAPH.items() if part(a) == "cli"
             for b in targets if part(b) in ("nn", "coding")]
    assert not wrong, "\n".join(wrong)


def test_the_reader_sees_every_import_form(tmp_path):
    """A synthetic package: each import form must give its edge, deferred ones too."""
    root = tmp_path / "pkg"
    (root / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "a.py": "import pkg.b\nfrom . import c\nfrom .sub import d\n",
        "b.py": "def f():\n    from .sub.d import thing\n",
        "c.py": "from pkg.sub import e as alias\n",
        "sub/__init__.py": "from .. import a\n",
        "sub/d.py": "thing = 1\n",
        "sub/e.py": "import os\nfrom ..b import f\n",
    }
    for name, text in files.items():
        (root / name).write_text(text)
    graph = import_graph(root)
    assert graph["pkg.a"] == {"pkg.b", "pkg.c", "pkg.sub.d"}
    assert graph["pkg.b"] == {"pkg.sub.d"}
    assert graph["pkg.c"] == {"pkg.sub.e"}
    assert graph["pkg.sub"] == {"pkg.a"}
    assert graph["pkg.sub.e"] == {"pkg.b"}
    assert find_cycle({"x": {"y"}, "y": {"z"}, "z": {"x"}}) == ["x", "y", "z", "x"]
    assert find_cycle(graph) is None
