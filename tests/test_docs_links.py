"""The README and the docs/ pages hold together: links resolve, pointers from code name real sections.

The README is the entry page and short (three screens); the rest lives in docs/ pages it links. A page
renamed or a heading reworded breaks a link or an ``#anchor`` silently, and a pointer written in code or
params.yaml ("docs/study.md, 'The tune split'") goes stale the same way, so both are checked here, as
is the README's length. Result numbers stay out of the pages (they live in generated files).
"""
from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from urllib.parse import unquote

import pytest

from test_readme_results import result_like

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
README_MAX_LINES = 200
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]

#: The README and the pages split off it, which hold its rule: no result copied by hand.
RESULT_FREE = [README, *(ROOT / "docs" / f"{name}.md" for name in (
    "study", "beyond-the-paper", "paper-profile", "pretrained", "mlflow", "using-the-loss", "stages"))]

#: Where code, configuration and workflow files may point readers to a page.
POINTER_SOURCES = [*sorted((ROOT / "pipeline").rglob("*.py")), *sorted((ROOT / "scripts").rglob("*.py")),
                   *sorted((ROOT / "workflow").rglob("*.smk")), ROOT / "Snakefile", ROOT / "params.yaml",
                   ROOT / "dvc.yaml", *PAGES]

FENCE = re.compile(r"^\s*```.*?^\s*```[^\n]*$", re.M | re.S)
CODE_SPAN = re.compile(r"`[^`]*`")
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.M)
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:|^//")
#: ``README, "Section"``, ``docs/x.md, 'Section'``, ``README "Section"`` or ``(README, Section)``: a page
#: and one of its headings.
SECTION_POINTER = re.compile(r"(?<![\w/])(README(?:\.md)?|docs/[\w.-]+\.md)(?:,?\s+([\"'])([^\"'\n]+)\2"
                             r"|,\s+()([^\"'\n()]+)\))")
PAGE_MENTION = re.compile(r"(?<![\w/])docs/[\w.-]+\.md")


def without_code(markdown: str) -> str:
    """``markdown`` without fenced blocks and code spans: a link shown as code is an example, not a link.

    Fenced blocks become empty lines, so headings and links keep their line numbers."""
    text = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), markdown)
    return CODE_SPAN.sub("", text)


def github_anchor(heading: str) -> str:
    """The ``#anchor`` GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens.

    Letters, marks and digits of any script stay (``ε units`` → ``ε-units``), as GitHub keeps them."""
    kept = [c for c in heading.strip().lower()
            if c in " -_" or unicodedata.category(c)[0] in "LMN"]
    return "".join(kept).replace(" ", "-")


def heading_texts(markdown: str) -> list[str]:
    """The headings of ``markdown`` outside code blocks, markup removed (code spans keep their text)."""
    text = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), markdown)
    return [re.sub(r"[`*]", "", m.group(1)) for m in HEADING.finditer(text)]


def anchors(markdown: str) -> set[str]:
    """Every anchor of ``markdown``'s headings; a repeated heading gets ``-1``, ``-2``, … as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for heading in heading_texts(markdown):
        slug = github_anchor(heading)
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def relative_links(markdown: str) -> list[str]:
    """Targets of the inline and reference links of ``markdown`` that stay inside the repository."""
    text = without_code(markdown)
    targets = INLINE_LINK.findall(text) + REFERENCE_LINK.findall(text)
    return [t for t in targets if not SCHEME.match(t)]


def broken_links(page: Path) -> list[str]:
    """Each relative link of ``page`` whose file (or folder) is missing or whose ``#anchor`` names no heading."""
    broken = []
    for target in relative_links(page.read_text(encoding="utf-8")):
        path, _, anchor = target.partition("#")
        dest = (page.parent / unquote(path)).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and unquote(anchor).lower() not in anchors(
                dest.read_text(encoding="utf-8")):
            broken.append(f"{target}: no heading with this anchor in {dest.name}")
    return broken


def stale_pointers(source: Path) -> list[str]:
    """Each pointer in ``source`` to a page that does not exist, or to a section its page does not have.

    A section is named by the start of its heading ("COCO test-dev" for "COCO test-dev: submitting …")."""
    text = source.read_text(encoding="utf-8")
    stale = [f"{name}: no such page" for name in dict.fromkeys(PAGE_MENTION.findall(text))
             if not (ROOT / name).is_file()]
    for page_name, _, quoted, _, bare in SECTION_POINTER.findall(text):
        section = quoted or bare
        page = ROOT / ("README.md" if page_name.startswith("README") else page_name)
        headings = heading_texts(page.read_text(encoding="utf-8")) if page.is_file() else []
        if not any(h.casefold().startswith(section.casefold()) for h in headings):
            stale.append(f"{page_name}, {section!r}: no such section")
    return stale


def _name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def test_the_checker_catches_broken_links(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "other.md").write_text("# Other page\n\n## The tune split: why\n", encoding="utf-8")
    page = tmp_path / "README.md"
    page.write_text("# Top\n\n## ε units\n\n"
                    "[ok](docs/other.md) [ok](docs/other.md#the-tune-split-why) [ok](#ε-units) [ok](docs/)\n"
                    "[gone](docs/missing.md) [bad anchor](docs/other.md#tune-split) [bad](#top-1)\n"
                    "[web](https://example.org/x.md) <https://example.org> `[code](docs/missing.md)`\n"
                    "```\n[fenced](docs/missing.md)\n```\n[ref]: docs/also-missing.md\n", encoding="utf-8")
    assert broken_links(page) == ["docs/missing.md: no such file",
                                  "docs/other.md#tune-split: no heading with this anchor in other.md",
                                  "#top-1: no heading with this anchor in README.md",
                                  "docs/also-missing.md: no such file"]


def test_anchors_are_githubs():
    assert github_anchor("The verdict: is it HDM, or is it this benchmark?") == \
        "the-verdict-is-it-hdm-or-is-it-this-benchmark"
    assert github_anchor("UDP (runs with codec: udp)") == "udp-runs-with-codec-udp"
    assert github_anchor("Pretrained demo backbones (pretrained/<profile>/<arch>/backbone.pth)") == \
        "pretrained-demo-backbones-pretrainedprofilearchbackbonepth"
    assert anchors("# A\n## A\n```\n# A\n```\n## `x_y` z\n") == {"a", "a-1", "x_y-z"}


def test_the_pointer_check_reads_pages_and_sections(tmp_path):
    source = tmp_path / "code.py"
    source.write_text("# see docs/study.md, 'Choosing hyperparameters'; docs/paper-profile.md, \"COCO test-dev\"\n"
                      "# README, 'Choices where the paper is silent'; docs/nowhere.md\n"
                      "# (docs/study.md, The tune split) (docs/study.md, Seeds, intervals and findings)\n",
                      encoding="utf-8")
    assert stale_pointers(source) == ["docs/nowhere.md: no such page",
                                      "README, 'Choices where the paper is silent': no such section",
                                      "docs/study.md, 'The tune split': no such section"]


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_relative_links_resolve(page):
    assert broken_links(page) == []


def test_readme_fits_three_screens():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail to a docs/ page"


def test_pointers_to_pages_name_existing_sections():
    stale = {_name(source): found for source in POINTER_SOURCES if (found := stale_pointers(source))}
    assert stale == {}


@pytest.mark.parametrize("page", RESULT_FREE, ids=_name)
def test_pages_quote_no_result(page):
    assert result_like(page.read_text(encoding="utf-8")) == []
