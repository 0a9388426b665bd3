"""Copy generated files into README.md between include markers, so no result is typed by hand.

<!-- include: results/compare.md -->
...replaced by the file's text (inside a code fence for .txt files)...
<!-- end include -->
"""

import re
import sys
from pathlib import Path

MARKER = re.compile(r"(<!-- include: (\S+) -->\n)(.*?)(<!-- end include -->)", re.DOTALL)


def splice(readme: Path) -> None:
    def replace(match: re.Match) -> str:
        text = Path(match.group(2)).read_text().rstrip("\n") + "\n"
        if match.group(2).endswith(".txt"):
            text = "```\n" + text + "```\n"
        return match.group(1) + text + match.group(4)

    readme.write_text(MARKER.sub(replace, readme.read_text()))


if __name__ == "__main__":
    splice(Path(sys.argv[1] if len(sys.argv) > 1 else "README.md"))
