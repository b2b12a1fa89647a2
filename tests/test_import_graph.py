"""The package's import graph: no cycles, no private names across modules, no hidden imports, layers kept.

A cycle between modules works only while some import stays inside a function, so it hides in the
function-local imports; a private name imported by another module is a contract nobody documented.
Every module under ``pipeline/`` is parsed with :mod:`ast` (nothing is imported), relative imports are
resolved to module names and imports inside functions count like those at the top.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import pytest

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "pipeline"
PACKAGE = PACKAGE_DIR.name

# Libraries a function may import, each for the reason beside it (timings: seconds an import adds to
# ``import pipeline.cli``, best of three on two busy cores). Any other library, and any module of the
# package, is imported at the top of the module that uses it.
LOCAL_IMPORT_ALLOWED: dict[str, str] = {
    "mlflow": "seconds to import; the CLI imports pipeline.tracking at start-up and most commands never log",
    "pandas": "0.4 s; pipeline.tracking, loaded at the CLI's start-up, builds a table itself only for "
              "an experiment that does not exist yet",
    "matplotlib": "1 s or more and a backend to pick; only the figure writers need it",
    "scipy": "scipy.stats and scipy.io take 0.5 s or more; one function each of the modules that use them",
    "pycocotools": "compiled COCO scorer; training on MPII and the report never score COCO",
}

# The modules a command of the CLI imports when it runs, not at start-up: each pulls torch, timm, cv2,
# numpy or pandas (seconds), which ``python -m pipeline --help`` and the other commands never need.
CLI_ON_DEMAND: dict[str, str] = {
    "pipeline.data.prepare": "the data stage (torch, through the pretrained weights it verifies)",
    "pipeline.pretrain.train": "the pretrain stage (torch, timm)",
    "pipeline.engine": "training and evaluation (torch)",
    "pipeline.metrics.coco_server": "test-dev scores (numpy and the COCO metrics, 0.4 s)",
    "pipeline.report.build": "the report (pandas, scipy)",
    "pipeline.report.paper_config": "the paper-config check (torch, through the run defaults)",
    "pipeline.bench": "the benchmarks (torch)",
}

# The layers, lowest first: a module may import only modules of its own layer or of lower ones; a
# module's layer is that of its longest prefix listed here. The stages' data flow (data, codecs, models,
# losses, engine, metrics, tracking, report) is kept where the imports allow it; three packages sit
# lower than in that flow because the modules before them import them.
LAYERS: list[tuple[str, ...]] = [
    # one-line errors and the SIGTERM handling that every module may raise or use
    ("pipeline", "pipeline.errors", "pipeline.termination"),
    # atomic file writing and every output's location
    ("pipeline.io", "pipeline.paths"),
    # params.yaml and its validation, which checks the pretrained backbones' pins (no torch)
    ("pipeline.config", "pipeline.pretrain.spec"),
    # the MLflow store: training, pretraining, evaluation, test-dev scores and the report all log to it
    ("pipeline.tracking",),
    # weight files: safe loading and whole writes, the pretrained backbones the data stage verifies
    ("pipeline.checkpoint", "pipeline.pretrain.weights"),
    # target encoding and decoding on arrays; the dataset builds its training targets with them
    ("pipeline.codecs",),
    # readers, datasets, synthetic data
    ("pipeline.data",),
    # the networks
    ("pipeline.models",),
    # the training losses on the networks' heatmaps
    ("pipeline.losses",),
    # scores of predictions against the data's annotations; validation and evaluation call them
    ("pipeline.metrics",),
    # training, validation, evaluation and pretraining loops over all of the above
    ("pipeline.engine", "pipeline.torchrun", "pipeline.pretrain"),
    # tables, figures and verdicts from the tracked runs
    ("pipeline.report",),
    # speed and memory benchmarks of the stages and their report figures
    ("pipeline.bench",),
    # the command line, which reaches every stage
    ("pipeline.cli", "pipeline.__main__"),
]


@dataclass(frozen=True)
class Import:
    """One imported module of the package, or a library's top-level package, as one statement names it."""
    importer: str
    target: str  # a module of the package, or a library's top-level package
    names: tuple[str, ...]  # names taken with ``from … import``; empty for a whole module
    line: int
    local: bool  # inside a function body: runs when the function is called, not at import

    @property
    def internal(self) -> bool:
        return is_internal(self.target)

    def where(self) -> str:
        return f"{self.importer}:{self.line}"


def is_internal(module: str) -> bool:
    return module == PACKAGE or module.startswith(PACKAGE + ".")


def is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def module_name(path: Path) -> str:
    """The dotted module name of a file under the package (a package's ``__init__`` is the package)."""
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    """Every module of the package, by name."""
    return {module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def resolve_from(importer: str, node: ast.ImportFrom, modules: dict[str, Path]) -> str:
    """The absolute module a ``from … import`` statement reads from (relative to the importer's package)."""
    if node.level == 0:
        return node.module or ""
    is_package = modules.get(importer, Path()).name == "__init__.py"
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


class ImportCollector(ast.NodeVisitor):
    """The imports of one module, each marked local when a function body holds it, and the private
    attributes it reads from modules of the package it imported whole (``files._write``).

    Imports under ``if TYPE_CHECKING:`` never run and are left out."""

    def __init__(self, importer: str, modules: dict[str, Path]) -> None:
        self.importer, self.modules = importer, modules
        self.depth = 0
        self.imports: list[Import] = []
        self.module_aliases: dict[str, str] = {}  # local name -> module of the package bound to it
        self.private_reads: list[tuple[int, str, str]] = []  # (line, module, private attribute)

    def _function(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def _add(self, target: str, names: tuple[str, ...], node: ast.stmt) -> None:
        self.imports.append(Import(self.importer, target, names, node.lineno, self.depth > 0))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if is_internal(alias.name):
                self._add(alias.name, (), node)
                if alias.asname:
                    self.module_aliases[alias.asname] = alias.name
            else:
                self._add(alias.name.split(".")[0], (), node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        source = resolve_from(self.importer, node, self.modules)
        if not is_internal(source):
            if source != "__future__":
                self._add(source.split(".")[0], tuple(a.name for a in node.names), node)
            return
        # ``from .package import module`` imports that module; ``from .module import name`` takes a name
        submodules = [a for a in node.names if f"{source}.{a.name}" in self.modules]
        for alias in submodules:
            self._add(f"{source}.{alias.name}", (), node)
            self.module_aliases[alias.asname or alias.name] = f"{source}.{alias.name}"
        names = tuple(a.name for a in node.names if a not in submodules)
        if names or not submodules:
            self._add(source, names, node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if (isinstance(node.value, ast.Name) and node.value.id in self.module_aliases
                and is_private(node.attr)):
            self.private_reads.append((node.lineno, self.module_aliases[node.value.id], node.attr))
        self.generic_visit(node)


def collect(modules: dict[str, Path]) -> list[ImportCollector]:
    """One finished collector per module of the package."""
    collectors = []
    for name, path in modules.items():
        collector = ImportCollector(name, modules)
        collector.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        collectors.append(collector)
    return collectors


def import_edges(imports: list[Import], *, top_level_only: bool = False) -> dict[str, set[str]]:
    """module -> the modules of the package it imports (function-local imports included unless
    ``top_level_only``)."""
    edges: dict[str, set[str]] = {}
    for imp in imports:
        if imp.internal and imp.target != imp.importer and not (top_level_only and imp.local):
            edges.setdefault(imp.importer, set()).add(imp.target)
    return edges


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each group of modules that import each other (a strongly connected component
    of two or more modules, Tarjan's algorithm), as the module names along it."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return [cycle_through(component, edges) for component in components]


def cycle_through(component: list[str], edges: dict[str, set[str]]) -> list[str]:
    """A shortest import path from the component's first module back to itself, inside the component."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(edges.get(node, set()) & members):
            if nxt == start:
                return paths[node] + [start]
            if nxt not in paths:
                paths[nxt] = paths[node] + [nxt]
                queue.append(nxt)
    return component


def reachable(start: str, edges: dict[str, set[str]]) -> set[str]:
    """Every module that importing ``start`` imports, directly or not."""
    seen, todo = set(), [start]
    while todo:
        for nxt in edges.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def listed_prefix(module: str, prefixes: Iterable[str]) -> str | None:
    """The longest of ``prefixes`` that is ``module`` or a package holding it."""
    matches = [p for p in prefixes if module == p or module.startswith(p + ".")]
    return max(matches, key=len) if matches else None


def layer_of(module: str) -> int:
    """The index in :data:`LAYERS` of the longest listed prefix of ``module`` (-1: none)."""
    prefix = listed_prefix(module, [p for layer in LAYERS for p in layer])
    return next(i for i, layer in enumerate(LAYERS) if prefix in layer) if prefix else -1


MODULES = package_modules()
COLLECTORS = collect(MODULES)
IMPORTS = [imp for c in COLLECTORS for imp in c.imports]


def test_every_module_is_parsed_and_in_a_layer():
    assert len(MODULES) > 50 and any(imp.local for imp in IMPORTS)
    unplaced = [m for m in MODULES if layer_of(m) < 0]
    assert not unplaced, f"modules in no layer (add them to LAYERS): {unplaced}"


def test_no_import_cycles():
    cycles = find_cycles(import_edges(IMPORTS))
    assert not cycles, "import cycles (function-local imports included):\n" + "\n".join(
        " -> ".join(cycle) for cycle in cycles)


def test_no_private_names_from_other_modules():
    taken = [f"{imp.where()} imports {name} from {imp.target}"
             for imp in IMPORTS if imp.internal and imp.target != imp.importer
             for name in imp.names if is_private(name)]
    read = [f"{c.importer}:{line} reads {module}.{attr}"
            for c in COLLECTORS for line, module, attr in c.private_reads if module != c.importer]
    found = taken + read
    assert not found, ("private names of another module (make them public, with a docstring):\n"
                       + "\n".join(found))


def test_no_function_local_imports_but_the_allowed_ones():
    cli_loads = reachable("pipeline.cli", import_edges(IMPORTS, top_level_only=True))
    found = []
    for imp in IMPORTS:
        if not imp.local:
            continue
        if not imp.internal:
            allowed = imp.target in LOCAL_IMPORT_ALLOWED
        else:  # the CLI's commands import their stage on demand, unless start-up loads it anyway
            allowed = (imp.importer == "pipeline.cli" and imp.target not in cli_loads
                       and listed_prefix(imp.target, CLI_ON_DEMAND) is not None)
        if not allowed:
            found.append(f"{imp.where()} imports {imp.target}" + (f" ({', '.join(imp.names)})" if imp.names else ""))
    assert not found, ("function-local imports (move them to the top, or list a slow or optional "
                       "library with its reason):\n" + "\n".join(found))


def test_every_allowance_is_used():
    local = [imp for imp in IMPORTS if imp.local]
    unused = [lib for lib in LOCAL_IMPORT_ALLOWED if not any(imp.target == lib for imp in local)]
    unused += [mod for mod in CLI_ON_DEMAND
               if not any(imp.importer == "pipeline.cli" and listed_prefix(imp.target, [mod]) for imp in local)]
    assert not unused, f"allowances no import uses (remove them): {unused}"


def test_no_lower_layer_imports_a_higher_one():
    found = [f"{imp.where()} (layer {layer_of(imp.importer)}) imports {imp.target} (layer {layer_of(imp.target)})"
             for imp in IMPORTS if imp.internal and layer_of(imp.target) > layer_of(imp.importer)]
    assert not found, "a lower layer imports a higher one (see LAYERS):\n" + "\n".join(found)


@pytest.mark.parametrize("importer, source, expected", [
    ("pipeline.cli", "from . import errors", ["pipeline.errors"]),
    ("pipeline.cli", "from .config import Paths", ["pipeline.config"]),
    ("pipeline.report.aggregate", "from ..metrics import coco_bootstrap", ["pipeline.metrics.coco_bootstrap"]),
    ("pipeline.report.aggregate", "from .beyond import REPORT_TABLES", ["pipeline.report.beyond"]),
    ("pipeline.codecs", "from .hdm import decode", ["pipeline.codecs.hdm"]),  # a package's own module
    ("pipeline.cli", "import numpy.linalg", ["numpy"]),
])
def test_imports_resolve_to_modules(importer, source, expected):
    collector = ImportCollector(importer, MODULES)
    collector.visit(ast.parse(source))
    assert [imp.target for imp in collector.imports] == expected


def test_the_checks_see_what_they_look_for():
    """Each check on a made-up module that breaks it: a cycle through a function-local import, a private
    name taken and read, a lower layer importing a higher one."""
    collector = ImportCollector("pipeline.data.prepare", MODULES)
    collector.visit(ast.parse("from ..engine import train\n"
                              "def f():\n    from ..report.figures import _save\n    return train._step\n"))
    edges = import_edges(collector.imports) | {"pipeline.report.figures": {"pipeline.data.prepare"}}
    assert ["pipeline.data.prepare", "pipeline.report.figures", "pipeline.data.prepare"] in find_cycles(edges)
    assert [(imp.target, imp.names, imp.local) for imp in collector.imports] == [
        ("pipeline.engine.train", (), False), ("pipeline.report.figures", ("_save",), True)]
    assert collector.private_reads == [(4, "pipeline.engine.train", "_step")]
    assert layer_of("pipeline.report.figures") > layer_of("pipeline.data.prepare")
