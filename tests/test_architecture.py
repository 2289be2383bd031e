"""The package's structure: no import cycle among the modules of latent_replay.

The graph is read from the source with :mod:`ast` (nothing is imported): every ``import`` and
``from ... import`` anywhere in a module counts, inside functions and ``if TYPE_CHECKING:`` blocks too,
so that a cycle cannot hide in a lazy import. Importing ``a.b.c`` also runs the ``__init__`` of ``a.b``
(unless the importer lives inside ``a.b`` itself, whose ``__init__`` has then run already), so that
package is a target as well. Imports by name at run time (``importlib.import_module``, e.g. the lazy
subcommands of :mod:`latent_replay.cli`) are not seen.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "latent_replay"
ROOT = Path(__file__).resolve().parents[1] / "project_source" / PACKAGE


def module_names(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of the package (a package is its ``__init__``)."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = [PACKAGE, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _source(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The module a ``from ... import`` statement reads from, relative imports resolved."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _targets(node: ast.AST, module: str, is_package: bool, modules: set[str]) -> set[str]:
    """The package's modules an import statement loads (before the ancestor rule)."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in modules}
    if not isinstance(node, ast.ImportFrom):
        return set()
    source = _source(node, module, is_package)
    found = {source} if source in modules else set()
    found |= {f"{source}.{a.name}" for a in node.names if f"{source}.{a.name}" in modules}
    return found


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (anywhere in its source)."""
    names = module_names(root)
    graph: dict[str, set[str]] = {}
    for module, path in names.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        is_package = path.name == "__init__.py"
        own = set(_ancestors(module)) | ({module} if is_package else set())
        edges: set[str] = set()
        for node in ast.walk(tree):
            for target in _targets(node, module, is_package, set(names)):
                edges |= {t for t in (*_ancestors(target), target) if t in names and t not in own}
        edges.discard(module)
        graph[module] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def _path(graph: dict[str, set[str]], component: list[str]) -> str:
    """One cycle through a component, as ``a -> b -> a`` (for the failure message)."""
    members = set(component)
    start = component[0]
    seen, path = {start}, [start]
    while True:
        nxt = sorted(w for w in graph[path[-1]] if w in members)
        back = [w for w in nxt if w == start]
        if back:
            return " -> ".join(path + [start])
        step = next((w for w in nxt if w not in seen), None)
        if step is None:
            return " <-> ".join(component)
        seen.add(step)
        path.append(step)


def test_the_graph_sees_relative_function_level_and_package_imports(tmp_path):
    pkg = tmp_path / PACKAGE
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from .sub.b import g\n")
    (pkg / "sub" / "__init__.py").write_text("from .b import g\nfrom .. import a\n")
    (pkg / "sub" / "b.py").write_text("from . import c\nfrom latent_replay import a\n")
    (pkg / "sub" / "c.py").write_text("")
    graph = import_graph(pkg)
    assert graph == {PACKAGE: set(), f"{PACKAGE}.a": {f"{PACKAGE}.sub", f"{PACKAGE}.sub.b"},
                     f"{PACKAGE}.sub": {f"{PACKAGE}.sub.b", f"{PACKAGE}.a"},
                     f"{PACKAGE}.sub.b": {f"{PACKAGE}.sub.c", f"{PACKAGE}.a"}, f"{PACKAGE}.sub.c": set()}
    assert cycles(graph) == [[f"{PACKAGE}.a", f"{PACKAGE}.sub", f"{PACKAGE}.sub.b"]]


def test_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 20 and "latent_replay.cli" in graph
    found = cycles(graph)
    assert not found, "import cycles: " + "; ".join(_path(graph, c) for c in found)


def test_relative_imports_name_modules_of_the_package():
    """``from .x import y`` must name a module that exists (a lazy import in a moved function is run only
    when called: a wrong level would fail late, and would hide an edge from the cycle check)."""
    names = module_names()
    wrong = []
    for module, path in names.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level and node.module:
                source = _source(node, module, path.name == "__init__.py")
                if source not in names:
                    wrong.append(f"{path.relative_to(ROOT.parent)}:{node.lineno}: {source}")
    assert not wrong, "relative imports of no module: " + "; ".join(wrong)
