"""The README stays a short way in, and no link in it or in docs/ leads nowhere.

The CLI reference itself is generated from ``--help`` and checked by ``make lint``
(``cog --check``), so these tests only guard what cog cannot: size, links and the set-up
commands CI and users run.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline.common import errors

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def prose(text: str) -> str:
    """The text a reader sees as prose: no code blocks, HTML comments (cog code) or code spans."""
    return CODE_SPAN.sub("", COMMENT.sub("", FENCE.sub("", text)))


def anchors(page: Path) -> set[str]:
    """The fragment ids GitHub gives the page's headings (lower case, punctuation dropped)."""
    seen: dict[str, int] = {}
    ids = set()
    for heading in HEADING.findall(FENCE.sub("", page.read_text())):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        ids.add(slug if count == 0 else f"{slug}-{count}")
    return ids


def relative_links(page: Path) -> list[str]:
    return [
        target
        for target in LINK.findall(prose(page.read_text()))
        if not re.match(r"[a-z][a-z0-9+.-]*:", target)  # http:, https:, mailto:
    ]


def test_readme_is_short() -> None:
    assert README.stat().st_size <= 10_000


def test_readme_keeps_the_set_up_commands() -> None:
    text = README.read_text()
    assert "make demo" in text
    assert "make test" in text


def test_docs_exist() -> None:
    assert len(PAGES) > 1, "docs/*.md is missing"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in relative_links(page):
        path, _, fragment = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif fragment and file.suffix == ".md" and fragment not in anchors(file):
            broken.append(f"{target}: no such heading")
    assert not broken, f"{page.relative_to(ROOT)}: {broken}"


def test_readme_exit_codes_match_the_errors_module() -> None:
    section = README.read_text().split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    documented = {int(code) for code in re.findall(r"^\| (\d+) \|", section, re.MULTILINE)}
    defined = {0} | {value for name, value in vars(errors).items() if name.startswith("EXIT_")}
    assert documented == defined
