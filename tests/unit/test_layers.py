"""saltami's modules form layers: no module imports, however indirectly, one that imports it.
Imports inside functions count as much as those at the top of a module: a function-level
import that closes a cycle only hides it until the day the order of imports changes.

The imports are read from the source (each ``import`` and ``from ... import``, wherever it
stands), and a module's edges are the saltami modules it names: ``from . import claims`` is
saltami.pipeline.claims, ``from . import cleanup`` the package saltami.pipeline itself. A
cycle is fixed by moving what both sides need down to a module of its own (as
pipeline/manifest.py holds the Build that claims and report read, and pipeline/candidate.py
what the snapshot, upload and publish steps share), not by an import inside a function."""
import ast
import os
from pathlib import Path

import saltami

PACKAGE = Path(saltami.__file__).parent


def modules(root, package):
    """{dotted name: (path, whether it is a package's __init__)} of the .py files below
    ``root``. Links are not followed: the loader module folders (_modules, _runners...) are
    Salt's modules, which nothing in the package imports."""
    found = {}
    for folder, _dirs, files in os.walk(root):
        for file in files:
            if not file.endswith(".py"):
                continue
            path = Path(folder) / file
            parts = [package, *path.relative_to(root).with_suffix("").parts]
            is_package = parts[-1] == "__init__"
            found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def imports(name, path, is_package, known):
    """[(module imported, line)] of the modules among ``known`` that module ``name`` imports."""
    edges = []

    def add(target, line):
        # the module itself, else the package it is a name of (``from . import cleanup``)
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            edges.append((target, line))

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module
            for alias in node.names:
                add(f"{source}.{alias.name}" if f"{source}.{alias.name}" in known else source, node.lineno)
    return edges


def graph(root, package):
    known = modules(root, package)
    return {name: imports(name, path, is_package, known) for name, (path, is_package) in known.items()}, known


def cycles(edges):
    """The strongly connected components of more than one module (Tarjan's), each as one
    cycle through its first module: [module, module it imports, ..., module]."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w, _line in edges[v]:
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
                components.append(set(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return [_cycle_in(edges, component) for component in components]


def _cycle_in(edges, component):
    """A shortest cycle through the first module of ``component`` (breadth first)."""
    start = min(component)
    came_from = {start: None}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w, _line in edges[v]:
            if w == start:
                path = [v]
                while came_from[path[-1]] is not None:
                    path.append(came_from[path[-1]])
                return [*reversed(path), start]
            if w in component and w not in came_from:
                came_from[w] = v
                queue.append(w)
    raise AssertionError(f"no cycle through {start} in {sorted(component)}")


def described(edges, known, cycle):
    """One line an import of the cycle: where it stands."""
    lines = []
    for a, b in zip(cycle, cycle[1:]):
        where = ", ".join(str(line) for target, line in edges[a] if target == b)
        lines.append(f"  {a} imports {b} ({known[a][0].relative_to(PACKAGE.parent)}:{where})")
    return "\n".join(lines)


def test_no_import_cycle_among_saltamis_modules():
    edges, known = graph(PACKAGE, "saltami")
    assert "saltami.pipeline.claims" in known and edges["saltami.pipeline.claims"]
    found = cycles(edges)
    assert not found, "import cycles among saltami's modules:\n" + "\n".join(
        " -> ".join(cycle) + "\n" + described(edges, known, cycle) for cycle in found)


def test_a_cycle_is_found_through_function_level_and_package_imports(tmp_path):
    """The check itself: a cycle closed inside a function, through a name of a package."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "__init__.py").write_text("")
    (tmp_path / "low.py").write_text("import os\n")
    (tmp_path / "sub" / "__init__.py").write_text("from .. import low\n\n\ndef f():\n    pass\n")
    (tmp_path / "sub" / "step.py").write_text("from . import f\n")
    (tmp_path / "top.py").write_text("def g():\n    from .sub import step\n")
    edges, _known = graph(tmp_path, "pkg")
    assert cycles(edges) == []
    (tmp_path / "low.py").write_text("def h():\n    from .top import g\n")
    edges, _known = graph(tmp_path, "pkg")
    assert edges["pkg.sub.step"] == [("pkg.sub", 1)]
    assert cycles(edges) == [["pkg.low", "pkg.top", "pkg.sub.step", "pkg.sub", "pkg.low"]]
