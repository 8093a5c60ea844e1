"""Keep the line counts of the reader's map (``mmcourse/README.md``) true.

``python -m mmcourse.dev.readers_map`` rewrites the count column of every table row that names a file as
```` `path/in/mmcourse.py` ````, and prints the library's total; ``--check`` only reports rows that are out of date
(exit status 1). The counts are non-blank lines, the measure the layout tests use.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]
MAP = PACKAGE / "README.md"
ROW = re.compile(r"^\| `(?P<path>[\w/]+\.py)` \| (?P<count>\d+|\?) \|")


def non_blank(text: str) -> int:
    """The size measure of the map and of the layout tests: lines that are not blank."""
    return sum(1 for line in text.splitlines() if line.strip())


def non_blank_lines(path: Path) -> int:
    return non_blank(path.read_text(encoding="utf-8"))


def refreshed(text: str) -> tuple[str, list[str]]:
    """The map with every row's count recomputed, and the paths whose count changed."""
    changed, out = [], []
    for line in text.splitlines(keepends=True):
        match = ROW.match(line)
        if match:
            count = str(non_blank_lines(PACKAGE / match["path"]))
            if count != match["count"]:
                changed.append(match["path"])
                line = line[: match.start("count")] + count + line[match.end("count") :]
        out.append(line)
    return "".join(out), changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmcourse.dev.readers_map", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report out-of-date rows, change nothing")
    args = parser.parse_args(argv)
    text, changed = refreshed(MAP.read_text(encoding="utf-8"))
    if args.check:
        print("\n".join(f"out of date: {path}" for path in changed) or "the reader's map is up to date")
        return 1 if changed else 0
    MAP.write_text(text, encoding="utf-8")
    print(f"updated {len(changed)} rows of {MAP}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
