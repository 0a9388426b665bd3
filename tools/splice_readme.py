"""Copy generated files into Markdown pages between include markers, so no result is typed.

    python tools/splice_readme.py README.md docs/*.md

In each page given (README.md when none is):

<!-- include: results/compare.md -->
...replaced by the file's text (inside a code fence for .txt files)...
<!-- end include -->

Paths are relative to the working directory (the repository root). `table` after the path
keeps only a Markdown file's leading table, for a page that already shows the legend under
another table from `mnistlab compare`:

<!-- include: results/cuda/compare.md table -->
"""

import re
import sys
from pathlib import Path

MARKER = re.compile(r"(<!-- include: (\S+)( table)? -->\n)(.*?)(<!-- end include -->)", re.DOTALL)


def included(path: str, table_only: bool, root: Path = Path(".")) -> str:
    """The text a marker naming `path` (relative to `root`) holds."""
    text = (root / path).read_text().rstrip("\n") + "\n"
    if table_only:
        lines = text.splitlines(keepends=True)
        end = next((i for i, line in enumerate(lines) if not line.startswith("|")), len(lines))
        text = "".join(lines[:end])
    if path.endswith(".txt"):
        text = "```\n" + text + "```\n"
    return text


def splice(page: Path) -> None:
    def replace(match: re.Match) -> str:
        return match.group(1) + included(match.group(2), bool(match.group(3))) + match.group(5)

    text = page.read_text()
    spliced = MARKER.sub(replace, text)
    if spliced != text:  # an unchanged page keeps its timestamp
        page.write_text(spliced)


if __name__ == "__main__":
    for name in sys.argv[1:] or ["README.md"]:
        splice(Path(name))
