"""``patchbay run``: the daemon."""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..daemon import Daemon, DaemonConfigError
from ..demo import run_demo
from ..queue_demo import run_queue_demo
from ..settings import load_settings
from .common import CommandError, database_url, schema_of


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``run``."""
    parser = sub.add_parser(
        "run",
        help="run the patchbay daemon (workers, scheduler, failure policy, notifications)",
    )
    parser.add_argument(
        "--dev",
        action="store_true",
        help="local development mode: creates a master key file beside the embedded database",
    )
    parser.add_argument("--config", type=Path, help="a JSON settings file (see docs)")
    parser.add_argument(
        "--demo",
        nargs="?",
        const="runtime",
        choices=["runtime", "queue"],
        help="run a guided demo and say what happens: the whole runtime (default), or the "
        "queue alone",
    )
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    if args.demo == "queue":
        return asyncio.run(
            run_queue_demo(database_url(args), schema_of(args), duration=args.duration)
        )
    if args.demo == "runtime":
        return asyncio.run(run_demo(database_url(args), schema_of(args), duration=args.duration))
    try:
        settings = load_settings(
            args.config,
            database_url=args.database_url,
            PATCHBAY_SCHEMA=args.schema,
            mode="development" if args.dev else None,
        )
    except (ValidationError, OSError, ValueError) as exc:
        raise CommandError(f"invalid settings: {exc}") from exc
    daemon = Daemon(settings, announce=lambda text: print(text, flush=True))

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if args.duration is not None:
            loop.call_later(args.duration, stop.set)
        await daemon.run(stop)

    try:
        asyncio.run(main())
    except DaemonConfigError as exc:
        raise CommandError(str(exc)) from exc
    return 0
