"""``mmcourse`` / ``python -m mmcourse``: one command line, one sub-command family per tool module.

Each module in :data:`COMMAND_MODULES` exposes ``add_parser(subparsers)``, which registers its sub-commands and
sets ``func`` (a callable ``args -> int`` exit code) on their parsers. Adding a tool means adding its module name
here; registering a parser must stay cheap (heavy imports happen inside ``func``).

    mmcourse grade SUBMISSIONS_DIR --out grades.csv [--workers N] [--timeout S] [--memory-mb M]
    mmcourse exercises generate [--check] | release OUT_DIR | list
    mmcourse notebooks execute|stamp [--check]
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMAND_MODULES = ("mmcourse.grading.cli", "mmcourse.dev.notebooks")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmcourse", description="Tools of the mmcourse course.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
