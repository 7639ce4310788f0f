"""``patchbay run``: the daemon."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from ..demo import run_demo
from .common import CommandError, database_url, schema_of


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``run``."""
    parser = sub.add_parser("run", help="run the patchbay daemon")
    parser.add_argument(
        "--demo", action="store_true", help="work an example queue and say what happens"
    )
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    if not args.demo:
        raise CommandError(
            "the daemon has nothing to run yet without --demo: connectors and the "
            "scheduler arrive with the runtime"
        )
    return asyncio.run(run_demo(database_url(args), schema_of(args), duration=args.duration))
