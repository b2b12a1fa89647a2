"""Every function in ``pipeline/`` fits on one screen (at most 60 lines, docstring included).

A long function mixes several steps that a reader must hold at once; splitting it into named helpers
states each step's purpose. The count is ``end_lineno - lineno + 1`` of each ``def`` as ``ast`` reports
it, nested functions and methods included.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pipeline"
MAX_LINES = 60


def _long_functions(path: Path) -> list[str]:
    """``file:function:lines`` for each function of ``path`` longer than :data:`MAX_LINES`."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    where = path.relative_to(PACKAGE.parent).as_posix()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines = node.end_lineno - node.lineno + 1
            if lines > MAX_LINES:
                found.append(f"{where}:{node.name}:{lines}")
    return found


def test_no_function_in_pipeline_is_over_sixty_lines() -> None:
    modules = sorted(PACKAGE.rglob("*.py"))
    assert modules, f"no modules under {PACKAGE}"
    too_long = [entry for path in modules for entry in _long_functions(path)]
    assert not too_long, f"functions over {MAX_LINES} lines: " + ", ".join(too_long)
