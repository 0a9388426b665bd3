"""The README is a first page, and every page's links lead somewhere."""

import re
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest

from mnistlab.runs.compare import LEGEND_LINES

ROOT = Path(__file__).parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def test_readme_is_short_and_narrow():
    lines = README.read_text().splitlines()
    assert len(lines) <= 170
    assert [n for n, line in enumerate(lines, 1) if len(line) > 100] == []


def test_readme_starts_with_what_a_newcomer_needs():
    first = "\n".join(README.read_text().splitlines()[:60])
    for needle in (
        "make run",
        "make test",
        "mnistlab train ",
        "mnistlab predict ",
        "<!-- include: results/final-compare.md -->",
    ):
        assert needle in first, needle


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    links = LINK.findall(page.read_text())
    assert links
    for link in links:
        if re.match(r"[a-z]+:", link):  # http:, https:, mailto:
            continue
        path, _, anchor = link.partition("#")
        target = (page.parent / unquote(path)).resolve() if path else page
        assert target.exists(), f"{page.name}: {link}"
        if anchor and target.suffix == ".md":
            headings = re.findall(r"^#+ (.+)$", target.read_text(), re.M)
            slugs = {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}
            assert anchor in slugs, f"{page.name}: {link}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_a_table_legend_appears_once_per_page(page):
    text = page.read_text()
    for _, line in LEGEND_LINES:
        assert text.count(line) <= 1, f"{page.name}: {line}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_generated_blocks_hold_the_files_they_name(page):
    # What `make report` splices in is what the files say now (no number typed by hand).
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        from splice_readme import MARKER, included
    finally:
        sys.path.pop(0)
    for block in MARKER.finditer(page.read_text()):
        path, table_only = block.group(2), bool(block.group(3))
        assert block.group(4) == included(path, table_only, ROOT), f"{page.name}: {path}"
