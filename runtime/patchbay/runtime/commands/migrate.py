"""``patchbay migrate``."""

from __future__ import annotations

import argparse
from typing import Any

from patchbay.queue import migrate_sync

from .common import database_url, schema_of


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``migrate``."""
    parser = sub.add_parser("migrate", help="apply pending schema migrations")
    parser.set_defaults(handler=_migrate)


def _migrate(args: argparse.Namespace) -> int:
    schema = schema_of(args)
    applied = migrate_sync(database_url(args), schema)
    if applied:
        for step in applied:
            print(f"applied {step.version:04d}_{step.name}")
    else:
        print(f"schema {schema!r} is up to date")
    return 0
