"""``patchbay webhooks endpoints|messages|attempts``: outbound webhook endpoints, their
messages, replays and delivery attempts.

``endpoints add`` and ``endpoints rotate-secret`` print the endpoint's signing secret once,
for its receiver; nothing else prints a secret. Secrets are kept in the vault, so these two
need a master key (``PATCHBAY_MASTER_KEYS`` or ``PATCHBAY_MASTER_KEY_FILE``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from patchbay.connectors.webhooks import Endpoint, WebhookError, Webhooks
from patchbay.queue import QueueClient
from patchbay.secrets import LocalKeyProvider, SecretsError, Vault, load_key_provider

from ..database import DATABASE_URL_ENV, data_home
from .common import CommandError, database_url, print_json, print_table, schema_of


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``webhooks`` and its sub-commands."""
    group = sub.add_parser("webhooks", help="outbound webhook endpoints, messages and attempts")
    kinds = group.add_subparsers(dest="kind", metavar="KIND", required=True)

    endpoints = kinds.add_parser("endpoints", help="add, list, disable, enable endpoints")
    actions = endpoints.add_subparsers(dest="action", metavar="ACTION", required=True)

    add = actions.add_parser(
        "add",
        help="add an endpoint (prints its signing secret once)",
        description="Add a webhook endpoint of a tenant. Its signing secret (whsec_...) is "
        "generated, kept in the vault and printed once, for the receiver to verify with.",
    )
    add.add_argument("tenant")
    add.add_argument("url", help="http(s) URL the events are POSTed to")
    add.add_argument(
        "--event-type",
        action="append",
        dest="event_types",
        metavar="TYPE",
        help="receive only this event type ('prefix.*' for a family); repeat for more "
        "(default: every type)",
    )
    add.add_argument("--description", default="", help="a note for operators")
    _network_options(add)
    add.add_argument("--json", action="store_true", help="print JSON")
    add.set_defaults(handler=_add)

    listing = actions.add_parser("list", help="list endpoints")
    listing.add_argument("tenant", nargs="?", help="only this tenant's endpoints")
    state = listing.add_mutually_exclusive_group()
    state.add_argument("--enabled", action="store_true", help="only enabled endpoints")
    state.add_argument("--disabled", action="store_true", help="only disabled endpoints")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=_list_endpoints)

    disable = actions.add_parser(
        "disable", help="stop sending to an endpoint (its pending deliveries are cancelled)"
    )
    disable.add_argument("endpoint_id")
    disable.add_argument("--reason", default="disabled by an operator")
    disable.add_argument("--json", action="store_true", help="print JSON")
    disable.set_defaults(handler=_disable)

    enable = actions.add_parser("enable", help="send to a disabled endpoint again")
    enable.add_argument("endpoint_id")
    enable.add_argument("--json", action="store_true", help="print JSON")
    enable.set_defaults(handler=_enable)

    rotate = actions.add_parser(
        "rotate-secret",
        help="give an endpoint a new signing secret (prints it once)",
        description="Give an endpoint a new signing secret. During the grace period, "
        "deliveries carry signatures by both the new and the previous secret.",
    )
    rotate.add_argument("endpoint_id")
    rotate.add_argument(
        "--grace",
        type=float,
        default=None,
        metavar="SECONDS",
        help="how long the previous secret keeps signing too (default: 24 h)",
    )
    rotate.add_argument("--json", action="store_true", help="print JSON")
    rotate.set_defaults(handler=_rotate)

    messages = kinds.add_parser("messages", help="list and replay messages")
    message_actions = messages.add_subparsers(dest="action", metavar="ACTION", required=True)
    mlist = message_actions.add_parser("list", help="list messages, newest first")
    mlist.add_argument("tenant", nargs="?", help="only this tenant's messages")
    mlist.add_argument("--event-type", help="only this event type")
    mlist.add_argument("--since", type=_when, help="created at or after (ISO 8601; UTC if bare)")
    mlist.add_argument("--until", type=_when, help="created before (ISO 8601; UTC if bare)")
    mlist.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    mlist.add_argument("--json", action="store_true", help="print JSON")
    mlist.set_defaults(handler=_list_messages)

    replay = message_actions.add_parser(
        "replay",
        help="deliver one message again, or every message of a time range",
        description="Deliver MESSAGE_ID again, or with --tenant and --since every message "
        "of that tenant in [since, until). Replays carry the original webhook-id.",
    )
    replay.add_argument("message_id", nargs="?")
    replay.add_argument("--tenant", help="replay this tenant's messages by time range")
    replay.add_argument("--since", type=_when, help="from this time (ISO 8601; UTC if bare)")
    replay.add_argument("--until", type=_when, help="up to this time, excluded")
    replay.add_argument("--endpoint", dest="endpoint_id", help="only to this endpoint")
    replay.add_argument(
        "--failed-only",
        action="store_true",
        help="only where the endpoint has no succeeded or pending delivery",
    )
    replay.add_argument("--json", action="store_true", help="print JSON")
    replay.set_defaults(handler=_replay)

    attempts = kinds.add_parser("attempts", help="a message's delivery attempts")
    attempts.add_argument("message_id")
    attempts.add_argument("--json", action="store_true", help="print JSON")
    attempts.set_defaults(handler=_attempts)


def _network_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allow-private-networks",
        action="store_true",
        help="allow URLs on loopback, private and other non-global addresses",
    )
    parser.add_argument(
        "--allow-network",
        action="append",
        dest="allowed_networks",
        default=[],
        metavar="CIDR",
        help="allow this non-global network (e.g. 10.1.2.0/24); repeat for more",
    )


def _when(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 time: {text!r} (e.g. 2026-05-04T12:00:00Z)"
        ) from exc
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _keys(args: argparse.Namespace) -> LocalKeyProvider | None:
    # Local development mode exactly when the embedded database is in use (as `secrets`).
    embedded = not (args.database_url or os.environ.get(DATABASE_URL_ENV))
    return load_key_provider(
        development_home=data_home() if embedded else None,
        announce=lambda message: print(f"patchbay: {message}", file=sys.stderr),
    )


def _run(
    args: argparse.Namespace,
    body: Callable[[Webhooks], Awaitable[int]],
    *,
    keys: bool = False,
    **settings: Any,
) -> int:
    async def go() -> int:
        provider = _keys(args) if keys else None
        async with QueueClient(
            database_url(args), schema=schema_of(args), pool_min=0, pool_max=2, maintenance=False
        ) as client:
            vault = Vault(pool=client.pool, schema=client.schema, keys=provider, cache_ttl=0)
            async with vault, Webhooks(client, vault, **settings) as webhooks:
                return await body(webhooks)

    try:
        return asyncio.run(go())
    except (WebhookError, SecretsError) as exc:
        raise CommandError(str(exc)) from exc


def _endpoint_rows(endpoints: list[Endpoint]) -> None:
    print_table(
        ["id", "tenant", "url", "event_types", "enabled", "disabled_reason", "created_at"],
        [
            [
                e.id,
                e.tenant,
                e.url,
                "*" if e.event_types is None else ",".join(e.event_types),
                "yes" if e.enabled else "no",
                e.disabled_reason,
                e.created_at.isoformat(timespec="seconds"),
            ]
            for e in endpoints
        ],
    )


def _add(args: argparse.Namespace) -> int:
    async def body(webhooks: Webhooks) -> int:
        endpoint = await webhooks.add_endpoint(
            args.tenant, args.url, event_types=args.event_types, description=args.description
        )
        secret = await webhooks.reveal_secret(endpoint.id)
        if args.json:
            print_json({**endpoint.to_json(), "secret": secret})
        else:
            print(f"added endpoint {endpoint.id} for tenant {endpoint.tenant}: {endpoint.url}")
            print(f"signing secret (shown once; give it to the receiver): {secret}")
        return 0

    return _run(
        args,
        body,
        keys=True,
        allow_private_networks=args.allow_private_networks,
        allowed_networks=args.allowed_networks,
    )


def _list_endpoints(args: argparse.Namespace) -> int:
    enabled = True if args.enabled else False if args.disabled else None

    async def body(webhooks: Webhooks) -> int:
        endpoints = await webhooks.list_endpoints(args.tenant, enabled=enabled)
        if args.json:
            print_json([e.to_json() for e in endpoints])
        else:
            _endpoint_rows(endpoints)
        return 0

    return _run(args, body)


def _disable(args: argparse.Namespace) -> int:
    async def body(webhooks: Webhooks) -> int:
        endpoint = await webhooks.disable_endpoint(args.endpoint_id, args.reason)
        if args.json:
            print_json(endpoint.to_json())
        else:
            print(f"endpoint {endpoint.id} is disabled: {endpoint.disabled_reason}")
        return 0

    return _run(args, body)


def _enable(args: argparse.Namespace) -> int:
    async def body(webhooks: Webhooks) -> int:
        endpoint = await webhooks.enable_endpoint(args.endpoint_id)
        if args.json:
            print_json(endpoint.to_json())
        else:
            print(f"endpoint {endpoint.id} is enabled")
        return 0

    return _run(args, body)


def _rotate(args: argparse.Namespace) -> int:
    async def body(webhooks: Webhooks) -> int:
        endpoint = await webhooks.rotate_secret(args.endpoint_id, grace=args.grace)
        secret = await webhooks.reveal_secret(endpoint.id)
        if args.json:
            print_json({**endpoint.to_json(), "secret": secret})
        else:
            until = endpoint.previous_secret_expires_at
            shown = "now" if until is None else until.isoformat(timespec="seconds")
            print(f"new signing secret of endpoint {endpoint.id} (shown once): {secret}")
            print(f"the previous secret signs too until {shown}")
        return 0

    return _run(args, body, keys=True)


def _list_messages(args: argparse.Namespace) -> int:
    async def body(webhooks: Webhooks) -> int:
        messages = await webhooks.list_messages(
            args.tenant,
            event_type=args.event_type,
            since=args.since,
            until=args.until,
            limit=args.limit,
        )
        if args.json:
            print_json([{**m.to_json(), "payload": m.payload} for m in messages])
            return 0
        print_table(
            ["id", "tenant", "event_type", "created_at", "bytes"],
            [
                [
                    m.id,
                    m.tenant,
                    m.event_type,
                    m.created_at.isoformat(timespec="seconds"),
                    len(m.body),
                ]
                for m in messages
            ],
        )
        return 0

    return _run(args, body)


def _replay(args: argparse.Namespace) -> int:
    by_range = args.tenant is not None or args.since is not None
    if (args.message_id is None) == (not by_range):
        raise CommandError("give a MESSAGE_ID, or --tenant and --since (not both)")
    if by_range and (args.tenant is None or args.since is None):
        raise CommandError("a replay by time range needs both --tenant and --since")
    if not by_range and (args.until is not None or args.failed_only):
        raise CommandError("--until and --failed-only go with --tenant and --since")

    async def body(webhooks: Webhooks) -> int:
        if by_range:
            count = await webhooks.replay(
                args.tenant,
                args.since,
                args.until,
                endpoint_id=args.endpoint_id,
                failed_only=args.failed_only,
            )
        else:
            count = len(
                await webhooks.replay_message(args.message_id, endpoint_id=args.endpoint_id)
            )
        if args.json:
            print_json({"deliveries": count})
        else:
            print(f"queued {count} deliver{'y' if count == 1 else 'ies'}")
        return 0

    return _run(args, body)


def _attempts(args: argparse.Namespace) -> int:
    async def body(webhooks: Webhooks) -> int:
        attempts = await webhooks.attempts(args.message_id)
        if args.json:
            print_json([a.to_json() for a in attempts])
            return 0
        print_table(
            ["delivery", "attempt", "attempted_at", "outcome", "status", "ms", "error", "next"],
            [
                [
                    a.delivery_id,
                    a.attempt,
                    a.attempted_at.isoformat(timespec="seconds"),
                    a.outcome.value,
                    a.status,
                    f"{a.duration_ms:.0f}",
                    a.error,
                    None
                    if a.next_attempt_at is None
                    else a.next_attempt_at.isoformat(timespec="seconds"),
                ]
                for a in attempts
            ],
        )
        return 0

    return _run(args, body)
