"""``patchbay schedules list|add|remove|preview|fires``: cron schedules."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from patchbay.queue import QueueClient, ScheduleInfo

from .common import CommandError, database_url, print_json, print_table, schema_of


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``schedules`` and its sub-commands."""
    schedules = sub.add_parser("schedules", help="list, add, remove and preview cron schedules")
    actions = schedules.add_subparsers(dest="action", metavar="ACTION", required=True)

    listing = actions.add_parser("list", help="list the schedules")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=_list)

    add = actions.add_parser(
        "add", help="create or update a schedule: send a job to QUEUE at each fire of CRON"
    )
    add.add_argument("name")
    add.add_argument("cron", help="five fields, e.g. '*/15 * * * *', or @hourly, @daily, ...")
    add.add_argument("queue")
    add.add_argument("--data", default="null", help="the jobs' data, as JSON (default null)")
    add.add_argument("--tz", default="UTC", help="IANA time zone of CRON (default UTC)")
    add.add_argument(
        "--catch-up",
        action="store_true",
        help="after downtime, send one job for the fires missed (default: skip them)",
    )
    add.add_argument(
        "--options",
        default="{}",
        help='send options as a JSON object, e.g. \'{"priority": 5, "retry_limit": 3}\'',
    )
    add.add_argument("--json", action="store_true", help="print JSON")
    add.set_defaults(handler=_add)

    remove = actions.add_parser("remove", help="delete a schedule")
    remove.add_argument("name")
    remove.set_defaults(handler=_remove)

    preview = actions.add_parser(
        "preview", help="the next fire times of a schedule, or of --cron in --tz"
    )
    preview.add_argument("name", nargs="?")
    preview.add_argument("--cron", help="an expression to preview instead of a schedule")
    preview.add_argument("--tz", default="UTC", help="time zone of --cron (default UTC)")
    preview.add_argument("-n", type=int, default=10, help="how many (default 10)")
    preview.add_argument("--json", action="store_true", help="print JSON")
    preview.set_defaults(handler=_preview)

    fires = actions.add_parser("fires", help="a schedule's recent fires, newest first")
    fires.add_argument("name")
    fires.add_argument("--limit", type=int, default=20)
    fires.add_argument("--json", action="store_true", help="print JSON")
    fires.set_defaults(handler=_fires)


def _with_client(args: argparse.Namespace, body: Callable[[QueueClient], Awaitable[int]]) -> int:
    async def go() -> int:
        async with QueueClient(
            database_url(args), schema=schema_of(args), pool_min=0, maintenance=False
        ) as c:
            return await body(c)

    return asyncio.run(go())


def _json_arg(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CommandError(f"{what} is not valid JSON: {exc}") from exc


def _local(value: datetime | None, tz: str) -> str:
    if value is None:
        return ""
    return value.astimezone(ZoneInfo(tz)).isoformat(timespec="seconds")


def _list(args: argparse.Namespace) -> int:
    async def body(client: QueueClient) -> int:
        schedules = await client.list_schedules()
        if args.json:
            print_json([s.to_json() for s in schedules])
            return 0
        print_table(
            ["name", "cron", "tz", "queue", "catch_up", "next_fire", "last_fire", "revision"],
            [
                [
                    s.name,
                    s.cron,
                    s.tz,
                    s.queue,
                    "yes" if s.catch_up else "no",
                    _local(s.next_fire_at, s.tz),
                    _local(s.last_fire_at, s.tz),
                    s.revision,
                ]
                for s in schedules
            ],
        )
        return 0

    return _with_client(args, body)


def _add(args: argparse.Namespace) -> int:
    data = _json_arg(args.data, "--data")
    options = _json_arg(args.options, "--options")
    if not isinstance(options, dict):
        raise CommandError("--options must be a JSON object")

    async def body(client: QueueClient) -> int:
        info: ScheduleInfo = await client.schedule(
            args.name,
            args.cron,
            args.queue,
            data,
            tz=args.tz,
            catch_up=args.catch_up,
            **options,
        )
        if args.json:
            print_json(info.to_json())
        else:
            print(
                f"scheduled {info.name} ({info.cron}, {info.tz}) -> {info.queue}; "
                f"next fire {_local(info.next_fire_at, info.tz)}"
            )
        return 0

    return _with_client(args, body)


def _remove(args: argparse.Namespace) -> int:
    async def body(client: QueueClient) -> int:
        await client.unschedule(args.name)
        print(f"removed {args.name}")
        return 0

    return _with_client(args, body)


def _preview(args: argparse.Namespace) -> int:
    if (args.name is None) == (args.cron is None):
        raise CommandError("give a schedule NAME or --cron, not both")

    async def body(client: QueueClient) -> int:
        fires = await client.preview_schedule(args.name, args.n, cron=args.cron, tz=args.tz)
        texts = [f.isoformat(timespec="seconds") for f in fires]
        if args.json:
            print_json(texts)
        else:
            print("\n".join(texts))
        return 0

    return _with_client(args, body)


def _fires(args: argparse.Namespace) -> int:
    async def body(client: QueueClient) -> int:
        info = await client.schedules.get(args.name)
        fires = await client.schedules.fires(args.name, limit=args.limit)
        if args.json:
            print_json(
                [
                    {
                        "fire_at": f.fire_at.isoformat(),
                        "covers_from": f.covers_from.isoformat(),
                        "job_id": None if f.job_id is None else str(f.job_id),
                        "fired_at": f.fired_at.isoformat(),
                    }
                    for f in fires
                ]
            )
            return 0
        print_table(
            ["fire_at", "job_id", "missed_since"],
            [
                [
                    _local(f.fire_at, info.tz),
                    f.job_id if f.job_id is not None else "(skipped: missed)",
                    _local(f.covers_from, info.tz) if f.covers_from != f.fire_at else "",
                ]
                for f in fires
            ],
        )
        return 0

    return _with_client(args, body)
