"""``patchbay tenants add|list|show|disable``: the tenants of the registry."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import psycopg

from patchbay.queue import QueueClient
from patchbay.secrets import LocalKeyProvider, SecretsError, Vault, load_key_provider

from ..database import DATABASE_URL_ENV, data_home
from ..errors import RegistryError
from .common import CommandError, database_url, print_json, print_table, schema_of

if TYPE_CHECKING:
    # The registry (and SQLAlchemy) is imported when a command runs, not at start-up.
    from ..registry import Registry, TenantInfo

__all__ = ["register", "with_registry"]


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``tenants`` and its sub-commands."""
    group = sub.add_parser("tenants", help="add, list, show and disable tenants")
    actions = group.add_subparsers(dest="action", metavar="ACTION", required=True)

    add = actions.add_parser("add", help="register a tenant with its limits")
    add.add_argument("tenant", help="tenant id (letters, digits, '_ . -'; as in secret:// refs)")
    add.add_argument("--name", help="display name (default: the id)")
    add.add_argument(
        "--max-concurrent", type=int, help="jobs of this tenant running at once (default: no limit)"
    )
    add.add_argument(
        "--starts-per-interval",
        type=int,
        help="job starts allowed per --start-interval (default: no rate limit)",
    )
    add.add_argument(
        "--start-interval",
        type=float,
        default=60.0,
        help="the rate limit's interval in seconds (default 60)",
    )
    add.add_argument(
        "--fairness-weight",
        type=int,
        default=1,
        help="turns per round in fair dispatch, 1-1000 (default 1)",
    )
    add.add_argument(
        "--sync-schedule",
        help="cron of the tenant's syncs, e.g. '*/15 * * * *' (default: the deployment's)",
    )
    add.add_argument("--json", action="store_true", help="print JSON")
    add.set_defaults(handler=_add)

    listing = actions.add_parser("list", help="list tenants")
    listing.add_argument("--status", choices=("active", "disabled"), help="only this status")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=_list)

    show = actions.add_parser("show", help="a tenant, its limits and its integrations")
    show.add_argument("tenant")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=_show)

    disable = actions.add_parser(
        "disable", help="disable a tenant: no new integrations, no syncs of its integrations"
    )
    disable.add_argument("tenant")
    disable.add_argument("--json", action="store_true", help="print JSON")
    disable.set_defaults(handler=_disable)


def _key_provider(args: argparse.Namespace) -> LocalKeyProvider | None:
    # As ``patchbay secrets``: local development mode exactly when the embedded database
    # is in use, so the development key there is the one `secrets put` used.
    embedded = not (args.database_url or os.environ.get(DATABASE_URL_ENV))
    return load_key_provider(
        development_home=data_home() if embedded else None,
        announce=lambda message: print(f"patchbay: {message}", file=sys.stderr),
    )


def with_registry(
    args: argparse.Namespace,
    body: Callable[[Registry], Awaitable[int]],
    *,
    vault: bool = False,
) -> int:
    """Run ``body`` with a Registry on this invocation's database and schema (and a vault,
    when ``vault`` is true); registry errors become CommandError, database errors the
    psycopg errors the ``patchbay`` command reports."""

    from sqlalchemy.exc import DBAPIError

    from ..failure_policy import FailureTracker
    from ..registry import Registry

    async def go() -> int:
        url, schema = database_url(args), schema_of(args)
        secrets = None
        if vault:
            secrets = Vault(url, schema=schema, keys=_key_provider(args), cache_ttl=0, pool_max=2)
            await secrets.open()
        # Resuming through the registry resolves the integration's incident in the same
        # transaction (the failure policy's resume hook).
        queue = QueueClient(url, schema=schema, pool_min=0, pool_max=2, maintenance=False)
        tracker = FailureTracker(queue)
        try:
            async with (
                queue,
                Registry(
                    url, schema=schema, vault=secrets, pool_size=2, on_resume=tracker.on_resume
                ) as registry,
            ):
                return await body(registry)
        finally:
            if secrets is not None:
                await secrets.close()

    try:
        return asyncio.run(go())
    except (RegistryError, SecretsError) as exc:
        raise CommandError(str(exc)) from exc
    except DBAPIError as exc:
        if isinstance(exc.orig, psycopg.Error):
            raise exc.orig from None
        raise


def _limits_text(tenant: TenantInfo) -> str:
    rate = (
        "no rate limit"
        if tenant.starts_per_interval is None
        else f"{tenant.starts_per_interval} starts / {tenant.start_interval_s:g} s"
    )
    concurrent = "unlimited" if tenant.max_concurrent is None else str(tenant.max_concurrent)
    return f"max concurrent {concurrent}; {rate}; fairness weight {tenant.fairness_weight}"


def _add(args: argparse.Namespace) -> int:
    async def body(registry: Registry) -> int:
        tenant = await registry.add_tenant(
            args.tenant,
            name=args.name,
            max_concurrent=args.max_concurrent,
            starts_per_interval=args.starts_per_interval,
            start_interval_s=args.start_interval,
            fairness_weight=args.fairness_weight,
            sync_schedule=args.sync_schedule,
        )
        if args.json:
            print_json(tenant.to_json())
        else:
            print(f"added tenant {tenant.id} ({tenant.name}): {_limits_text(tenant)}")
        return 0

    return with_registry(args, body)


def _list(args: argparse.Namespace) -> int:
    async def body(registry: Registry) -> int:
        tenants = await registry.list_tenants(status=args.status)
        if args.json:
            print_json([t.to_json() for t in tenants])
            return 0
        print_table(
            ["id", "name", "status", "max_concurrent", "starts", "interval_s", "weight", "sync"],
            [
                [
                    t.id,
                    t.name,
                    t.status,
                    t.max_concurrent,
                    t.starts_per_interval,
                    f"{t.start_interval_s:g}",
                    t.fairness_weight,
                    t.sync_schedule,
                ]
                for t in tenants
            ],
        )
        return 0

    return with_registry(args, body)


def _show(args: argparse.Namespace) -> int:
    async def body(registry: Registry) -> int:
        tenant = await registry.get_tenant(args.tenant)
        integrations = await registry.list_integrations(tenant=tenant.id)
        if args.json:
            print_json(
                {
                    **tenant.to_json(),
                    "integrations": [
                        {"id": i.id, "connector": i.connector, "status": i.status}
                        for i in integrations
                    ],
                }
            )
            return 0
        print(f"tenant:        {tenant.id}")
        print(f"name:          {tenant.name}")
        print(f"status:        {tenant.status}")
        print(f"limits:        {_limits_text(tenant)}")
        print(f"sync schedule: {tenant.sync_schedule or '(deployment default)'}")
        print(f"created:       {tenant.created_at.isoformat(timespec='seconds')}")
        print(f"integrations:  {len(integrations)}")
        if integrations:
            print()
            print_table(
                ["id", "connector", "status", "failures"],
                [[i.id, i.connector, i.status, i.consecutive_failures] for i in integrations],
            )
        return 0

    return with_registry(args, body)


def _disable(args: argparse.Namespace) -> int:
    async def body(registry: Registry) -> int:
        tenant = await registry.disable_tenant(args.tenant)
        if args.json:
            print_json(tenant.to_json())
        else:
            print(f"tenant {tenant.id} is disabled")
        return 0

    return with_registry(args, body)
