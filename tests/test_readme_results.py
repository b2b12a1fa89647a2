"""README.md quotes no result: results live in generated files (reports/<profile>/[study/]summary.md and
findings.md), which a rerun rewrites; a number copied into the README by hand goes stale silently.

A "result-like" number is an interval "[a, b]", a signed decimal "+1.3" / "−2.2", or a decimal within a
few characters of AP or PCKh. Timings and coverage measured by a command are plain numbers and stay.
"""
from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"

RESULT_LIKE = (
    re.compile(r"\[\s*[−+-]?\d+\.\d+\s*,\s*[−+-]?\d+\.\d+\s*\]"),  # an interval
    re.compile(r"(?<![\w.\-])[+−]\d+\.\d+"),  # a signed decimal: a Δ
    re.compile(r"\b(?:AP|PCKh)\b[^\n.;:()]{0,12}?\d+\.\d+"),  # "AP 75.3", "PCKh of 88.1"
    re.compile(r"\d+\.\d+\s*(?:AP|PCKh)\b"),  # "0.65 AP"
)


def result_like(text: str) -> list[str]:
    """The result-like numbers of ``text`` outside code blocks (commands and code keep their numbers)."""
    hits, in_code = [], False
    for line in text.splitlines():
        if line.strip().startswith("```"):
            in_code = not in_code
            continue
        if not in_code:
            hits += [m.group(0) for pattern in RESULT_LIKE for m in pattern.finditer(line)]
    return hits


def test_the_pattern_catches_hand_copied_results():
    assert result_like("UDP − MSE +1.3 and +2.2, not resolved") == ["+1.3", "+2.2"]
    hits = result_like("HDM −20.0 [−27.0, −13.1] at stride 4")
    assert "[−27.0, −13.1]" in hits and "−20.0" in hits
    assert result_like("spread by 0.65 AP; MSE AP 75.3") == ["AP 75.3", "0.65 AP"]
    assert result_like("took **9 min 5 s**; coverage 87 %; `snakemake --cores all`") == []
    assert result_like("```\nAP 75.3\n```") == []


def test_readme_quotes_no_result():
    assert result_like(README.read_text(encoding="utf-8")) == []
