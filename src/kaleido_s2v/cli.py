"""The `kaleido-s2v` command line: one sub-command family per area of the package.

Each area owns a small `cli` module exposing `register(subparsers)`, which adds its
sub-command(s) and sets `func` on the parsed arguments. Heavy imports happen inside `func`.
"""

from __future__ import annotations

import argparse
import sys
from importlib import import_module

# One line per area; the order is the order of `--help`.
_COMMAND_MODULES = [
    "kaleido_s2v.models.cli",
    "kaleido_s2v.pipelines.cli",
    "kaleido_s2v.evaluation.cli",
    "kaleido_s2v.data.cli",
    "kaleido_s2v.training.cli",
    "kaleido_s2v.demo.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kaleido-s2v",
        description="Multi-subject reference-to-video generation (Kaleido / Wan2.1).",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in _COMMAND_MODULES:
        import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError, KeyError, RuntimeError) as error:
        # User-facing failures are raised with actionable messages; print them without a traceback.
        print(f"kaleido-s2v {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
