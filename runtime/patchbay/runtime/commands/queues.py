"""``patchbay queues``: per-queue stats; ``patchbay queues events QUEUE``."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from patchbay.queue import QueueClient

from . import events
from .common import database_url, print_json, print_table, schema_of


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``queues``."""
    parser = sub.add_parser("queues", help="show each queue's jobs by state")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(handler=_queues)
    # Without an action, ``patchbay queues`` shows the stats.
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    events.add_queue_commands(actions)


def _queues(args: argparse.Namespace) -> int:
    async def go() -> int:
        async with QueueClient(database_url(args), schema=schema_of(args), pool_min=0) as c:
            stats = await c.stats()
        if args.json:
            print_json([s.to_json() for s in stats])
            return 0
        headers = [
            "queue",
            "queued",
            "deferred",
            "retrying",
            "active",
            "completed",
            "failed",
            "cancelled",
            "oldest_queued_s",
        ]
        print_table(
            headers,
            [
                [
                    s.queue,
                    s.queued,
                    s.deferred,
                    s.retrying,
                    s.active,
                    s.completed,
                    s.failed,
                    s.cancelled,
                    None if s.oldest_queued_age is None else f"{s.oldest_queued_age:.1f}",
                ]
                for s in stats
            ],
        )
        return 0

    return asyncio.run(go())
