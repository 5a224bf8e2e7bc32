"""careflow's layers, read from the code: no upward import, no import circle, plugins on the public API.

Every module under ``careflow/`` belongs to one layer (``LAYERS``, bottom first). A module may
import its own layer and the layers below it. Imports under ``if TYPE_CHECKING:`` are for type
checkers only and do not count; imports inside functions do (a lazy import is still a
dependency, only a later one). The built-in plugins (``plugins/``) and the example third-party
plugin import nothing of careflow but the public API, ``careflow`` itself. docs/architecture.md
explains the layers; ``python -m tests.test_architecture`` prints the import graph's problems.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Bottom first. A name is a module or a package (with everything under it); the longest
# name that matches decides.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "kernel",
        (
            "careflow.version",
            "careflow.errors",
            "careflow.countries",
            "careflow.config",
            "careflow.logs",
            "careflow.metrics",
            "careflow.heap",
        ),
    ),
    ("storage", ("careflow.storage",)),
    ("contract", ("careflow.care", "careflow.hookspecs", "careflow.compat", "careflow.plugin_manager")),
    ("policies", ("careflow.policies",)),
    ("customers", ("careflow.customers",)),
    ("rendering", ("careflow.rendering",)),
    ("channels", ("careflow.channels",)),
    ("planning", ("careflow.planning",)),
    ("delivery", ("careflow.delivery",)),
    ("runtime", ("careflow.runtime",)),
    ("service", ("careflow.service",)),
    ("testing", ("careflow.testing",)),
    ("web", ("careflow.web",)),
    ("devtools", ("careflow.devtools",)),
    ("cli", ("careflow.cli",)),
    # What plugins import: re-exports from the layers below (careflow.models: the old place of
    # the models, for plugins written before). Nothing in careflow imports them.
    ("public API", ("careflow", "careflow.models", "careflow.__main__")),
)


@dataclass(frozen=True)
class Import:
    source: Path
    line: int
    target: str  # the module imported (the submodule, for ``from package import submodule``)

    def where(self, root: Path) -> str:
        return f"{self.source.relative_to(root)}:{self.line}"


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules(root: Path, package: str = "careflow") -> dict[str, Path]:
    """Every module of ``package`` under ``root``, by dotted name."""
    return {module_name(path, root): path for path in sorted((root / package).rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(nodes: Iterable[ast.AST]) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement that runs, at any depth, leaving out ``if TYPE_CHECKING:`` blocks."""
    for node in nodes:
        if isinstance(node, ast.If) and _is_type_checking(node):
            yield from _import_nodes(node.orelse)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        else:
            yield from _import_nodes(ast.iter_child_nodes(node))


def imports_of(path: Path, name: str, known: Iterable[str]) -> list[Import]:
    """The imports module ``name`` (at ``path``) makes at run time."""
    known = set(known)
    tree = ast.parse(path.read_text("utf-8"), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[Import] = []
    for node in _import_nodes(tree.body):
        if isinstance(node, ast.Import):
            found.extend(Import(path, node.lineno, alias.name) for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join([*anchor, *([node.module] if node.module else [])])
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            found.append(Import(path, node.lineno, submodule if submodule in known else base))
    return found


def layer_of(module: str) -> int:
    best, index = -1, -1
    for position, (_, names) in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > best:
                best, index = len(name), position
    if index < 0:
        raise AssertionError(f"{module} belongs to no layer: add it to LAYERS in tests/test_architecture.py")
    return index


def _owner(target: str, known: dict[str, Path]) -> str | None:
    """The module of ``known`` that an import loads, or None for another package's."""
    while target and target not in known:
        target = target.rpartition(".")[0]
    return target or None


def import_graph(known: dict[str, Path]) -> dict[str, dict[str, Import]]:
    """module -> the modules of ``known`` it imports at run time (with the first such import)."""
    graph: dict[str, dict[str, Import]] = {}
    for module, path in known.items():
        edges: dict[str, Import] = {}
        for imp in imports_of(path, module, known):
            target = _owner(imp.target, known)
            if target is not None and target != module:
                edges.setdefault(target, imp)
        graph[module] = edges
    return graph


def upward_imports(graph: dict[str, dict[str, Import]], root: Path) -> list[str]:
    problems = []
    for module, edges in sorted(graph.items()):
        here = layer_of(module)
        for target, imp in sorted(edges.items()):
            there = layer_of(target)
            if there > here:
                problems.append(
                    f"{imp.where(root)} imports {target}: layer {LAYERS[here][0]!r} may not import "
                    f"the higher layer {LAYERS[there][0]!r}"
                )
    return problems


def circles(graph: dict[str, dict[str, Import]], root: Path) -> list[str]:
    """One import circle through each group of modules that import each other, each step named."""
    return [_describe(graph, _a_circle(graph, group), root) for group in _entangled(graph)]


def _entangled(graph: dict[str, dict[str, Import]]) -> list[set[str]]:
    """Strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def _a_circle(graph: dict[str, dict[str, Import]], group: set[str]) -> list[str]:
    start = min(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:  # breadth first: the shortest way back to the start
        following = []
        for node in frontier:
            for nxt in sorted(graph[node]):
                if nxt == start:
                    return [*paths[node], start]
                if nxt in group and nxt not in paths:
                    paths[nxt] = [*paths[node], nxt]
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"no circle found in {sorted(group)}")


def _describe(graph: dict[str, dict[str, Import]], circle: list[str], root: Path) -> str:
    return " -> ".join(
        f"{graph[here][there].where(root)} imports {there}" for here, there in itertools.pairwise(circle)
    )


def non_public_imports(folders: Iterable[Path], root: Path) -> list[str]:
    """Imports of careflow's modules (not the public API, ``careflow``) in plugin sources."""
    problems = []
    for folder in folders:
        for path in sorted(folder.rglob("*.py")):
            seen = set()
            for imp in imports_of(path, "", ()):
                if imp.target.startswith("careflow.") and (imp.line, imp.target) not in seen:
                    seen.add((imp.line, imp.target))
                    problems.append(
                        f"{imp.where(root)} imports {imp.target}: a plugin imports careflow's public "
                        "API only ('from careflow import ...')"
                    )
    return problems


PLUGIN_SOURCES = (ROOT / "plugins", ROOT / "examples" / "careflow-tire-season" / "src")


def test_every_careflow_module_belongs_to_a_layer() -> None:
    for module in package_modules(ROOT):
        layer_of(module)


def test_no_layer_imports_a_higher_one() -> None:
    problems = upward_imports(import_graph(package_modules(ROOT)), ROOT)
    assert not problems, "upward imports:\n" + "\n".join(problems)


def test_careflow_modules_import_no_circle() -> None:
    found = circles(import_graph(package_modules(ROOT)), ROOT)
    assert not found, "import circles:\n" + "\n".join(found)


def test_plugins_import_only_the_public_api() -> None:
    problems = non_public_imports(PLUGIN_SOURCES, ROOT)
    assert not problems, "\n".join(problems)


def test_the_public_api_offers_what_it_lists() -> None:
    import careflow

    missing = [name for name in careflow.__all__ if not hasattr(careflow, name)]
    assert not missing, f"careflow.__all__ lists names careflow does not have: {missing}"


def test_docs_give_the_layers_in_this_order() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text("utf-8")
    order = " < ".join(f"`{name}`" for name, _ in LAYERS)
    assert order in text, f"docs/architecture.md should list the layers, bottom first, as:\n{order}"


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, "utf-8")


def test_the_check_names_an_upward_import_and_ignores_type_checking_ones(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "careflow/__init__.py": "",
            "careflow/storage/__init__.py": "",
            "careflow/storage/models.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n"
                "    from careflow.runtime import Runtime\n"
                "def later():\n"
                "    from careflow.cli import base\n"
            ),
            "careflow/runtime.py": "",
            "careflow/cli/__init__.py": "",
            "careflow/cli/base.py": "from careflow.storage import models\n",
        },
    )
    problems = upward_imports(import_graph(package_modules(tmp_path)), tmp_path)
    assert problems == [
        "careflow/storage/models.py:5 imports careflow.cli.base: layer 'storage' may not import "
        "the higher layer 'cli'"
    ]


def test_the_check_names_each_step_of_a_circle(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "careflow/__init__.py": "",
            "careflow/policies/__init__.py": "",
            "careflow/policies/a.py": "from careflow.policies import b\n",
            "careflow/policies/b.py": "import os\n\nfrom careflow.policies.a import thing\n",
        },
    )
    found = circles(import_graph(package_modules(tmp_path)), tmp_path)
    assert found == [
        "careflow/policies/a.py:1 imports careflow.policies.b -> "
        "careflow/policies/b.py:3 imports careflow.policies.a"
    ]


def test_the_check_names_a_plugins_import_of_a_careflow_module(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {"plugins/nice.py": "from careflow import CarePlugin\n", "plugins/bad.py": "import careflow.db\n"},
    )
    assert non_public_imports([tmp_path / "plugins"], tmp_path) == [
        "plugins/bad.py:1 imports careflow.db: a plugin imports careflow's public API only "
        "('from careflow import ...')"
    ]


if __name__ == "__main__":
    graph = import_graph(package_modules(ROOT))
    for line in [
        *upward_imports(graph, ROOT),
        *circles(graph, ROOT),
        *non_public_imports(PLUGIN_SOURCES, ROOT),
    ]:
        print(line)
