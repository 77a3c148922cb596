"""Command line: ``clt-gen``. Thin: each subcommand parses into a config and calls one
public function."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from clt_gen._version import __version__
from clt_gen.errors import ValidationError

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="clt-gen",
        description="Conjugate-learning-theory diagnostics for trained classifiers.",
    )
    parser.add_argument("--version", action="version", version=f"clt-gen {__version__}")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``clt-gen`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except ValidationError as exc:
        print(f"clt-gen: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
