"""The ``patchbay`` command.

Each command group lives in ``patchbay.runtime.commands.<group>`` and registers its
sub-commands; errors of patchbay's own types go to stderr with exit code 1, usage errors
exit 2 (argparse's convention).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import psycopg

from patchbay.connectors import ConnectorError, SdkError
from patchbay.queue import QueueError
from patchbay.secrets import SecretsError

from .commands import register_all
from .commands.common import CommandError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser."""
    parser = argparse.ArgumentParser(
        prog="patchbay",
        description="patchbay: a Postgres-native runtime for integration connectors.",
    )
    parser.add_argument(
        "--database-url",
        help="Postgres URL (default: $PATCHBAY_DATABASE_URL, else the embedded Postgres)",
    )
    parser.add_argument(
        "--schema", default=None, help="schema of patchbay's tables (default: patchbay)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    register_all(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``patchbay`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("psycopg", "pgserver"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        result = args.handler(args)
    except (QueueError, SecretsError, ConnectorError, SdkError, CommandError) as exc:
        print(f"patchbay: error: {exc}", file=sys.stderr)
        return 1
    except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName) as exc:
        reason = str(exc).splitlines()[0]
        print(f"patchbay: error: {reason}; run `patchbay migrate` first", file=sys.stderr)
        return 1
    except psycopg.Error as exc:
        print(f"patchbay: error: database error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
