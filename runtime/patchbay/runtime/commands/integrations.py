"""``patchbay integrations add|update|list|show|pause|resume|disable|events|sync-now|backfill``.

A config comes from ``--config FILE`` or ``--config-json TEXT`` (a JSON object); its secret
fields are ``secret://<tenant>/<name>`` references to values stored with ``patchbay
secrets put``, never the values themselves. ``sync-now`` and ``backfill`` enqueue jobs of
the integration's connector, which must be installed where the command runs.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from patchbay.connectors import ConnectorExecutor
from patchbay.queue import QueueClient

from .common import CommandError, database_url, print_json, print_table, schema_of
from .tenants import with_registry

if TYPE_CHECKING:
    from ..registry import IntegrationInfo, Registry

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``integrations`` and its sub-commands."""
    group = sub.add_parser(
        "integrations",
        help="add, list, show, pause, resume and sync integrations; read their events",
    )
    actions = group.add_subparsers(dest="action", metavar="ACTION", required=True)

    add = actions.add_parser(
        "add",
        help="register an integration: a tenant's use of a connector, with its config",
        description="Register an integration. The config is validated by the connector's "
        "model; secret fields must be secret://<tenant>/<name> references of the same "
        "tenant. With --check the connector's check() runs against the real API first.",
    )
    add.add_argument("integration", help="integration id (letters, digits, '_ . -')")
    add.add_argument("--tenant", required=True)
    add.add_argument("--connector", required=True, help="an installed connector's name")
    _config_arguments(add, required=True)
    add.add_argument("--schedule", help="cron of this integration's syncs (overrides defaults)")
    add.add_argument(
        "--check", action="store_true", help="run the connector's check() before adding"
    )
    add.add_argument("--by", help="who did it (recorded in the audit event)")
    add.add_argument("--json", action="store_true", help="print JSON")
    add.set_defaults(handler=_add)

    update = actions.add_parser("update", help="replace an integration's config and/or schedule")
    update.add_argument("integration")
    _config_arguments(update, required=False)
    schedule = update.add_mutually_exclusive_group()
    schedule.add_argument("--schedule", help="new cron of this integration's syncs")
    schedule.add_argument(
        "--clear-schedule", action="store_true", help="back to the tenant's / connector's cron"
    )
    update.add_argument("--check", action="store_true", help="check() the new config first")
    update.add_argument("--by", help="who did it (recorded in the audit event)")
    update.add_argument("--json", action="store_true", help="print JSON")
    update.set_defaults(handler=_update)

    listing = actions.add_parser("list", help="list integrations")
    listing.add_argument("--tenant", help="only this tenant's")
    listing.add_argument(
        "--status", choices=("active", "paused", "needs_attention", "disabled"), help="only these"
    )
    listing.add_argument("--connector", help="only this connector's")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=_list)

    show = actions.add_parser("show", help="an integration: config, status, failures")
    show.add_argument("integration")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=_show)

    for name, text in (
        ("pause", "pause an integration: the scheduler skips it until resumed"),
        ("disable", "disable an integration: it never runs until resumed"),
    ):
        parser = actions.add_parser(name, help=text)
        parser.add_argument("integration")
        parser.add_argument("--reason", help="why (recorded in the audit event)")
        parser.add_argument("--by", help="who did it (recorded in the audit event)")
        parser.add_argument("--json", action="store_true", help="print JSON")
        parser.set_defaults(handler=_pause if name == "pause" else _disable)

    resume = actions.add_parser(
        "resume", help="return an integration to active, failure counters reset"
    )
    resume.add_argument("integration")
    resume.add_argument("--sync-now", action="store_true", help="enqueue a sync right away")
    resume.add_argument("--by", help="who did it (recorded in the audit event)")
    resume.add_argument("--json", action="store_true", help="print JSON")
    resume.set_defaults(handler=_resume)

    events = actions.add_parser(
        "events",
        help="an integration's audit events, oldest first (--jobs: with its jobs' events)",
    )
    events.add_argument("integration")
    events.add_argument("--since-id", type=int, help="only events after this id")
    events.add_argument(
        "--jobs",
        action="store_true",
        help="also the job events of its jobs (failures always; every transition on queues "
        "with events on), in one time-ordered list",
    )
    events.add_argument("--since", help="only events at or after this ISO 8601 time (naive = UTC)")
    events.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    events.add_argument("--json", action="store_true", help="print JSON")
    events.set_defaults(handler=_events)

    sync_now = actions.add_parser(
        "sync-now", help="enqueue a sync of the integration now (every sync job type)"
    )
    sync_now.add_argument("integration")
    sync_now.add_argument("--job-type", help="only this sync job type")
    sync_now.add_argument(
        "--full-refresh", action="store_true", help="start from nothing, not the cursor"
    )
    sync_now.add_argument("--by", help="who did it (recorded in the audit event)")
    sync_now.add_argument("--json", action="store_true", help="print JSON")
    sync_now.set_defaults(handler=_sync_now)

    backfill = actions.add_parser(
        "backfill", help="backfill [--since, --until) in windows of the connector's size"
    )
    backfill.add_argument("integration")
    backfill.add_argument("--since", required=True, help="range start (ISO 8601; naive = UTC)")
    backfill.add_argument("--until", required=True, help="range end, exclusive (ISO 8601)")
    backfill.add_argument("--job-type", help="the backfill job type, if the connector has several")
    backfill.add_argument("--by", help="who did it (recorded in the audit event)")
    backfill.add_argument("--json", action="store_true", help="print JSON")
    backfill.set_defaults(handler=_backfill)


def _config_arguments(parser: argparse.ArgumentParser, *, required: bool) -> None:
    source = parser.add_mutually_exclusive_group(required=required)
    source.add_argument("--config", type=Path, help="JSON file holding the config object")
    source.add_argument("--config-json", help="the config object as JSON text")


def _config(args: argparse.Namespace) -> dict[str, Any] | None:
    if args.config is not None:
        try:
            text = args.config.read_text(encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"cannot read --config {args.config}: {exc.strerror}") from exc
        what = f"--config {args.config}"
    elif args.config_json is not None:
        text, what = args.config_json, "--config-json"
    else:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CommandError(f"{what} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise CommandError(f"{what} must hold a JSON object, got {type(value).__name__}")
    return value


def _moment(text: str, option: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise CommandError(f"{option} must be an ISO 8601 date or time, got {text!r}") from exc
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _when(value: datetime | None) -> str:
    return "" if value is None else value.isoformat(timespec="seconds")


def _print_integration(info: IntegrationInfo) -> None:
    print(f"integration:   {info.id}")
    print(f"tenant:        {info.tenant_id}")
    print(f"connector:     {info.connector}")
    print(f"status:        {info.status}")
    print(f"schedule:      {info.schedule or '(default)'}")
    print(f"failures:      {info.consecutive_failures} consecutive")
    print(f"last success:  {_when(info.last_success_at) or '-'}")
    print(f"last failure:  {_when(info.last_failure_at) or '-'}")
    if info.last_error:
        print(f"last error:    {json.dumps(info.last_error, sort_keys=True)}")
    print(f"created:       {_when(info.created_at)}")
    print("config:")
    for line in json.dumps(info.config, indent=2, sort_keys=True).splitlines():
        print(f"  {line}")


def _add(args: argparse.Namespace) -> int:
    config = _config(args)
    assert config is not None  # argparse requires a source

    async def body(registry: Registry) -> int:
        info = await registry.add_integration(
            args.integration,
            tenant=args.tenant,
            connector=args.connector,
            config=config,
            schedule=args.schedule,
            check=args.check,
            actor=args.by,
        )
        if args.json:
            print_json(info.to_json())
        else:
            checked = " (check passed)" if args.check else ""
            print(f"added integration {info.id}: {info.connector} for {info.tenant_id}{checked}")
        return 0

    return with_registry(args, body, vault=args.check)


def _update(args: argparse.Namespace) -> int:
    config = _config(args)
    if config is None and args.schedule is None and not args.clear_schedule:
        raise CommandError("nothing to change: give --config/--config-json and/or a schedule")
    if args.check and config is None:
        raise CommandError("--check checks a new config: give --config or --config-json")

    async def body(registry: Registry) -> int:
        info = await registry.update_integration(
            args.integration,
            config=config,
            schedule=args.schedule,
            clear_schedule=args.clear_schedule,
            check=args.check,
            actor=args.by,
        )
        if args.json:
            print_json(info.to_json())
        else:
            print(f"updated integration {info.id}")
        return 0

    return with_registry(args, body, vault=args.check)


def _list(args: argparse.Namespace) -> int:
    async def body(registry: Registry) -> int:
        found = await registry.list_integrations(
            tenant=args.tenant, status=args.status, connector=args.connector
        )
        if args.json:
            print_json([i.to_json() for i in found])
            return 0
        print_table(
            ["id", "tenant", "connector", "status", "schedule", "failures", "last_success"],
            [
                [
                    i.id,
                    i.tenant_id,
                    i.connector,
                    i.status,
                    i.schedule,
                    i.consecutive_failures,
                    _when(i.last_success_at),
                ]
                for i in found
            ],
        )
        return 0

    return with_registry(args, body)


def _show(args: argparse.Namespace) -> int:
    async def body(registry: Registry) -> int:
        info = await registry.get_integration(args.integration)
        if args.json:
            print_json(info.to_json())
        else:
            _print_integration(info)
        return 0

    return with_registry(args, body)


def _report(args: argparse.Namespace, info: IntegrationInfo, extra: dict[str, Any]) -> None:
    if args.json:
        print_json({**info.to_json(), **extra})
    else:
        print(f"integration {info.id} is {info.status}")


def _pause(args: argparse.Namespace) -> int:
    async def body(registry: Registry) -> int:
        info = await registry.pause(args.integration, reason=args.reason, actor=args.by)
        _report(args, info, {})
        return 0

    return with_registry(args, body)


def _disable(args: argparse.Namespace) -> int:
    async def body(registry: Registry) -> int:
        info = await registry.disable(args.integration, reason=args.reason, actor=args.by)
        _report(args, info, {})
        return 0

    return with_registry(args, body)


async def _send_sync(
    args: argparse.Namespace,
    registry: Registry,
    info: IntegrationInfo,
    job_type: str | None = None,
    full_refresh: bool = False,
) -> list[str | None]:
    connector = registry.connector_class(info.connector)()
    async with QueueClient(
        database_url(args), schema=schema_of(args), pool_min=0, maintenance=False
    ) as client:
        executor = ConnectorExecutor(client, [connector])
        jobs = await registry.sync_now(
            info.id, executor, job_type=job_type, full_refresh=full_refresh, actor=args.by
        )
    return [None if j is None else str(j) for j in jobs]


def _resume(args: argparse.Namespace) -> int:
    async def body(registry: Registry) -> int:
        info = await registry.resume(args.integration, actor=args.by)
        jobs = await _send_sync(args, registry, info) if args.sync_now else []
        if args.json:
            _report(args, info, {"jobs": jobs} if args.sync_now else {})
        else:
            _report(args, info, {})
            if jobs:
                print(f"sync enqueued: {', '.join(str(j) for j in jobs)}")
        return 0

    return with_registry(args, body)


def _events(args: argparse.Namespace) -> int:
    if args.jobs or args.since is not None:
        return _timeline(args)

    async def body(registry: Registry) -> int:
        found = await registry.events(args.integration, since_id=args.since_id, limit=args.limit)
        if args.json:
            print_json([e.to_json() for e in found])
            return 0
        print_table(
            ["id", "at", "kind", "data"],
            [[e.id, _when(e.at), e.kind, json.dumps(e.data, sort_keys=True)] for e in found],
        )
        return 0

    return with_registry(args, body)


def _timeline(args: argparse.Namespace) -> int:
    """``events --jobs`` / ``--since``: the audit stream of :mod:`patchbay.runtime.audit`."""
    from ..audit import AuditLog

    if args.since_id is not None:
        raise CommandError("--since-id counts lifecycle events only; with --jobs use --since")
    since = None if args.since is None else _moment(args.since, "--since")

    async def body(registry: Registry) -> int:
        await registry.get_integration(args.integration)  # an unknown id is an error
        async with QueueClient(
            database_url(args), schema=schema_of(args), pool_min=0, maintenance=False
        ) as client:
            entries = await AuditLog(client).timeline(
                args.integration, since=since, limit=args.limit, jobs=args.jobs
            )
        if args.json:
            print_json([e.to_json() for e in entries])
            return 0
        print_table(
            ["at", "source", "kind", "id", "data"],
            [
                [
                    _when(e.at),
                    e.source,
                    e.kind,
                    e.id if e.job_id is None else f"{e.job_id} #{e.attempt}",
                    json.dumps(dict(e.data), sort_keys=True),
                ]
                for e in entries
            ],
        )
        return 0

    return with_registry(args, body)


def _sync_now(args: argparse.Namespace) -> int:
    async def body(registry: Registry) -> int:
        info = await registry.get_integration(args.integration)
        jobs = await _send_sync(args, registry, info, args.job_type, args.full_refresh)
        if args.json:
            print_json({"integration": info.id, "jobs": jobs})
        else:
            print(f"sync of {info.id} enqueued: {', '.join(str(j) for j in jobs)}")
        return 0

    return with_registry(args, body)


def _backfill(args: argparse.Namespace) -> int:
    since, until = _moment(args.since, "--since"), _moment(args.until, "--until")

    async def body(registry: Registry) -> int:
        info = await registry.get_integration(args.integration)
        connector = registry.connector_class(info.connector)()
        async with QueueClient(
            database_url(args), schema=schema_of(args), pool_min=0, maintenance=False
        ) as client:
            executor = ConnectorExecutor(client, [connector])
            backfill_id = await registry.start_backfill(
                info.id,
                executor,
                since=since,
                until=until,
                job_type=args.job_type,
                actor=args.by,
            )
            status = await executor.backfill_status(backfill_id)
        if args.json:
            print_json(
                {
                    "integration": info.id,
                    "backfill_id": str(backfill_id),
                    "windows": status["windows_total"],
                }
            )
        else:
            print(
                f"backfill {backfill_id} of {info.id} started: "
                f"{status['windows_total']} window(s) from {since.isoformat()} "
                f"to {until.isoformat()}"
            )
        return 0

    return with_registry(args, body)
