"""``patchbay jobs events|redrive`` and ``patchbay queues events``: job history and
dead-letter redrive. Registered by the ``jobs`` and ``queues`` groups."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from patchbay.queue import JobEvent, QueueClient

from .common import CommandError, database_url, print_json, print_table, schema_of

__all__ = ["add_job_commands", "add_queue_commands"]

_DETAIL_LIMIT = 160


def add_job_commands(actions: argparse._SubParsersAction[Any]) -> None:
    """Add ``jobs events`` and ``jobs redrive``."""
    events = actions.add_parser("events", help="show a job's recorded state changes")
    events.add_argument("job_id")
    events.add_argument("--json", action="store_true", help="print JSON")
    events.set_defaults(handler=_job_events)

    redrive = actions.add_parser(
        "redrive", help="move dead-lettered jobs back to the queues they failed in"
    )
    redrive.add_argument("queue", help="the dead-letter queue")
    redrive.add_argument(
        "--id",
        dest="ids",
        action="append",
        metavar="ID",
        help="redrive only this job (repeatable); without it, every job not running",
    )
    redrive.add_argument("--json", action="store_true", help="print JSON")
    redrive.set_defaults(handler=_redrive)


def add_queue_commands(actions: argparse._SubParsersAction[Any]) -> None:
    """Add ``queues events``."""
    events = actions.add_parser("events", help="show a queue's job events, oldest first")
    events.add_argument("queue")
    events.add_argument(
        "--since", help="only events at or after this ISO 8601 time (with a UTC offset)"
    )
    events.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    events.add_argument("--json", action="store_true", help="print JSON")
    events.set_defaults(handler=_queue_events)


def _with_client(args: argparse.Namespace, body: Callable[[QueueClient], Awaitable[int]]) -> int:
    async def go() -> int:
        async with QueueClient(
            database_url(args), schema=schema_of(args), pool_min=0, maintenance=False
        ) as client:
            return await body(client)

    return asyncio.run(go())


def _detail(event: JobEvent) -> str:
    """One line saying what the event's data holds."""
    data = event.data or {}
    parts: list[str] = []
    error = data.get("error")
    if isinstance(error, dict):
        message = str(error.get("message") or "").strip().splitlines()
        parts.append(f"{error.get('type')}: {message[0] if message else ''}")
    dead = data.get("dead_letter")
    if isinstance(dead, dict):
        parts.append(f"dead-lettered to {dead.get('queue')} as {dead.get('id')}")
    if data.get("origin_queue"):
        parts.append(f"copy of {data.get('origin_id')} from {data['origin_queue']}")
    if data.get("from_queue"):
        parts.append(f"from {data['from_queue']}")
    text = "; ".join(parts)
    return text if len(text) <= _DETAIL_LIMIT else text[: _DETAIL_LIMIT - 3] + "..."


def _state(value: Any) -> str:
    return "" if value is None else str(value.value)


def _job_events(args: argparse.Namespace) -> int:
    async def body(client: QueueClient) -> int:
        events = await client.job_events(args.job_id)
        if args.json:
            print_json([e.to_json() for e in events])
            return 0
        print_table(
            ["at", "kind", "from", "to", "attempt", "detail"],
            [
                [
                    e.at.isoformat(timespec="milliseconds"),
                    e.kind,
                    _state(e.from_state),
                    _state(e.to_state),
                    e.attempt,
                    _detail(e),
                ]
                for e in events
            ],
        )
        return 0

    return _with_client(args, body)


def _queue_events(args: argparse.Namespace) -> int:
    since: datetime | None = None
    if args.since is not None:
        try:
            since = datetime.fromisoformat(args.since)
        except ValueError as exc:
            raise CommandError(f"--since {args.since!r} is not an ISO 8601 time") from exc
        if since.tzinfo is None:
            raise CommandError(f"--since {args.since!r} needs a UTC offset (e.g. +00:00)")

    async def body(client: QueueClient) -> int:
        events = await client.queue_events(args.queue, since, limit=args.limit)
        if args.json:
            print_json([e.to_json() for e in events])
            return 0
        print_table(
            ["at", "job", "kind", "from", "to", "attempt", "detail"],
            [
                [
                    e.at.isoformat(timespec="milliseconds"),
                    e.job_id,
                    e.kind,
                    _state(e.from_state),
                    _state(e.to_state),
                    e.attempt,
                    _detail(e),
                ]
                for e in events
            ],
        )
        return 0

    return _with_client(args, body)


def _redrive(args: argparse.Namespace) -> int:
    async def body(client: QueueClient) -> int:
        moved = await client.redrive(args.queue, ids=args.ids)
        if args.json:
            print_json({"queue": args.queue, "redriven": moved})
        else:
            print(f"redrove {moved} job(s) from {args.queue}")
        return 0

    return _with_client(args, body)
