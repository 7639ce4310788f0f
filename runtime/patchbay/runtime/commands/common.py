"""What the command groups share: settings from the arguments, output helpers."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from ..database import resolve_database_url

__all__ = ["CommandError", "database_url", "print_json", "print_table", "schema_of"]

SCHEMA_ENV = "PATCHBAY_SCHEMA"


class CommandError(Exception):
    """A command could not do what was asked; the message says why."""


def database_url(args: argparse.Namespace) -> str:
    """The database URL for this invocation."""
    explicit: str | None = args.database_url
    return resolve_database_url(explicit)


def schema_of(args: argparse.Namespace) -> str:
    """The schema for this invocation (``--schema``, ``$PATCHBAY_SCHEMA``, ``patchbay``)."""
    return str(args.schema or os.environ.get(SCHEMA_ENV) or "patchbay")


def print_json(value: Any) -> None:
    """Print ``value`` as indented JSON."""
    json.dump(value, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print rows as an aligned text table."""
    cells = [[str(h) for h in headers]] + [
        ["" if v is None else str(v) for v in row] for row in rows
    ]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for index, row in enumerate(cells):
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
        if index == 0:
            print("  ".join("-" * w for w in widths))
