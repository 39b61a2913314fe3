"""The ``glmv`` command line: one subcommand per module in ``glmv/commands``.

Each module there defines ``register(subparsers)``, which adds its parser and sets ``func`` (called with the
parsed args, returns an exit code). Discovery keeps this file free of per-command edits.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

import glmv.commands
from glmv.errors import GlmvError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="glmv",
        description="Run, serve, evaluate and train GLM-V vision-language models "
        "(GLM-4.1V, GLM-4.5V, GLM-4.6V and the bundled nano GLM-V).",
    )
    parser.add_argument("--log-level", default="WARNING", help="DEBUG, INFO, WARNING (default) or ERROR")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(glmv.commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):  # shared helpers, not commands
            continue
        importlib.import_module(f"glmv.commands.{info.name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except GlmvError as e:  # expected failures: one line, no traceback
        print(f"glmv: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
