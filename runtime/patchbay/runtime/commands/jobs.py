"""``patchbay jobs list|show|retry|cancel|resume|delete|events|redrive``."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from patchbay.queue import QueueClient

from . import events
from .common import database_url, print_json, print_table, schema_of


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``jobs`` and its sub-commands."""
    jobs = sub.add_parser("jobs", help="list, inspect and act on jobs")
    actions = jobs.add_subparsers(dest="action", metavar="ACTION", required=True)

    listing = actions.add_parser("list", help="list jobs, newest first")
    listing.add_argument("--queue")
    listing.add_argument("--state")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--cursor", help="next_cursor printed by the previous page")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=_list)

    show = actions.add_parser("show", help="show one job")
    show.add_argument("job_id")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=_show)

    for verb, text in (
        ("retry", "run a failed job again"),
        ("cancel", "cancel a queued, retrying or active job"),
        ("resume", "put a cancelled job back in the queue"),
        ("delete", "delete a job"),
    ):
        act = actions.add_parser(verb, help=text)
        act.add_argument("job_id")
        act.add_argument("--json", action="store_true", help="print JSON")
        act.set_defaults(handler=_act, verb=verb)

    events.add_job_commands(actions)


def _with_client(args: argparse.Namespace, body: Callable[[QueueClient], Awaitable[int]]) -> int:
    async def go() -> int:
        async with QueueClient(database_url(args), schema=schema_of(args), pool_min=0) as c:
            return await body(c)

    return asyncio.run(go())


def _list(args: argparse.Namespace) -> int:
    async def body(client: QueueClient) -> int:
        page = await client.list_jobs(
            queue=args.queue, state=args.state, limit=args.limit, cursor=args.cursor
        )
        if args.json:
            print_json({"jobs": [j.to_json() for j in page.jobs], "next_cursor": page.next_cursor})
            return 0
        print_table(
            ["id", "queue", "state", "attempt", "priority", "created_at"],
            [
                [
                    j.id,
                    j.queue,
                    j.state.value,
                    j.attempt,
                    j.priority,
                    j.created_at.isoformat(timespec="seconds"),
                ]
                for j in page.jobs
            ],
        )
        if page.next_cursor:
            print(f"next page: --cursor '{page.next_cursor}'")
        return 0

    return _with_client(args, body)


def _show(args: argparse.Namespace) -> int:
    async def body(client: QueueClient) -> int:
        job = await client.get_job(args.job_id)
        why = await client.explain(job.id)
        doc = job.to_json()
        if args.json:
            print_json({**doc, "why_not_running": why.to_json()})
            return 0
        for key, value in doc.items():
            if key == "error" and value:
                print(f"{'error':>17}: {value.get('type')}: {value.get('message')}")
                if value.get("traceback"):
                    print(value["traceback"].rstrip())
            else:
                print(f"{key:>17}: {value}")
        if why.codes and why.codes != ["not_waiting"]:
            print(f"{'why not running':>17}: " + "; ".join(why.reasons))
        return 0

    return _with_client(args, body)


def _act(args: argparse.Namespace) -> int:
    async def body(client: QueueClient) -> int:
        action = {
            "retry": client.retry,
            "cancel": client.cancel,
            "resume": client.resume,
            "delete": client.delete_job,
        }[args.verb]
        await action(args.job_id)
        if args.json:
            print_json({"id": args.job_id, "action": args.verb, "ok": True})
        else:
            print(f"{args.verb}: {args.job_id}")
        return 0

    return _with_client(args, body)
