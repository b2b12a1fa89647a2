"""The repository and what it generates speak of the project only: a reader has no issue tracker, so a
comment, a doc, a message or a generated report that cites a tracker's entry by number (or quotes one as
its source) points at nothing. Every tracked text file is searched line by line, and every string literal of the
report generators (``pipeline/report/``: findings.md, the tables, the README of a report), where
adjacent literals joined by Python would escape a line search."""
from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# A tracker's entry by number, or named as a source of facts; written with [i] and [t] so that the
# patterns do not match their own text (the examples below are joined from pieces for the same reason).
TRACKER_WORDS = re.compile(r"\b(?:[i]ssues?|[t]ickets?)\s*#?\s*\d+|\bthe [i]ssue\b|\b[t]ickets?\b", re.IGNORECASE)
GENERATORS = ROOT / "pipeline" / "report"


def _tracked_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, check=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        pytest.skip("not a git checkout: no list of tracked files")
    return [ROOT / name for name in out.decode().split("\0") if name]


def _text(path: Path) -> str | None:
    """The file's text, or None for a binary file (weights, images) or one not checked out."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _hits(path: Path, text: str) -> list[str]:
    where = path.relative_to(ROOT)
    return [f"{where}:{number}: {line.strip()[:160]}" for number, line in enumerate(text.splitlines(), 1)
            if TRACKER_WORDS.search(line)]


def _literals(tree: ast.AST) -> list[ast.Constant]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)]


def test_no_tracked_text_file_speaks_of_a_tracker():
    hits = [hit for path in _tracked_files() if (text := _text(path)) is not None for hit in _hits(path, text)]
    assert not hits, "words from an issue tracker (say what the thing is instead):\n" + "\n".join(hits)


def test_no_report_generator_writes_tracker_words():
    hits = []
    for path in sorted(GENERATORS.rglob("*.py")):
        for node in _literals(ast.parse(path.read_text(), str(path))):
            if TRACKER_WORDS.search(node.value):
                hits.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value.strip()[:160]!r}")
    assert not hits, "a report generator writes words from an issue tracker:\n" + "\n".join(hits)


def test_the_search_finds_what_it_is_for(tmp_path):
    """The patterns match the words they guard against, and not the project's own uses of the letters."""
    word, other = "iss" + "ue", "tick" + "et"
    for line in (f"see {word} 13", f"as in {word.title()} #3", f"the {word}'s example", f"a {other}"):
        assert TRACKER_WORDS.search(line), line
    for line in ("requests.Session()", "issued 3 requests", "tissue 12", "a session of its own"):
        assert not TRACKER_WORDS.search(line), line
    generator = tmp_path / "findings.py"
    generator.write_text('TEXT = ("as measured for " "iss" "ue 13")\n')  # one literal once joined
    assert [node.value for node in _literals(ast.parse(generator.read_text()))
            if TRACKER_WORDS.search(node.value)] == [f"as measured for {word} 13"]
