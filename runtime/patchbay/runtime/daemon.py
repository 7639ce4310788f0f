"""The daemon (``patchbay run``): everything that keeps integrations running.

Guarantee
    One daemon, or any number of them on one Postgres, together run: a worker for every
    job type of every installed connector, the tenant-aware scheduler (fan-outs), the
    failure policy (as the executor's hooks), notification delivery, and maintenance
    (lease expiry, retention, cron ticks: each pass once at a time across daemons, each
    cron fire once). Work spreads over all daemons through the queue (SKIP LOCKED).

State model
    Webhook deliveries (``patchbay.connectors.webhooks``) run here too; an endpoint the
    delivery disables opens an attention incident.

    Stateless apart from Postgres: a daemon can be killed at any moment; its jobs' leases
    expire and other daemons re-run them. Every ``reconcile_interval`` it makes the
    tenants' ``sync_all`` schedules match the registry (new tenants scheduled, disabled
    ones unscheduled; idempotent, so daemons doing it at once agree).

How it fails
    Bad configuration stops it at start with a message naming the setting. Production mode
    refuses to start without master keys. Database outages are ridden out by the workers'
    reconnect-and-backoff; SIGTERM/SIGINT stop fetching, wait ``shutdown_grace`` for
    running handlers, then put unfinished jobs back without spending an attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psycopg.rows import dict_row

from patchbay.connectors import Connector, ConnectorExecutor, discover
from patchbay.connectors.webhooks import Endpoint, Webhooks
from patchbay.queue import QueueClient, Statements, Worker, migrate
from patchbay.secrets import Vault, install_log_redaction, load_key_provider

from .audit import AuditExporter, FileSink, HttpSink
from .database import data_home, resolve_database_url
from .failure_policy import FailureTracker
from .notifications import (
    Channel,
    EmailChannel,
    LogChannel,
    Notifier,
    SlackChannel,
    WebhookChannel,
)
from .scheduler import TenantScheduler
from .settings import DaemonSettings

__all__ = ["Daemon", "DaemonConfigError", "DaemonParts"]

log = logging.getLogger("patchbay.runtime.daemon")


class DaemonConfigError(Exception):
    """The daemon cannot start with this configuration; the message says what to set."""


@dataclass(slots=True)
class DaemonParts:
    """The running daemon's services (for tests and the demo)."""

    client: QueueClient
    vault: Vault
    executor: ConnectorExecutor
    scheduler: TenantScheduler
    tracker: FailureTracker
    notifier: Notifier
    webhooks: Webhooks | None = None
    workers: list[Worker] = field(default_factory=list)
    exporters: list[AuditExporter] = field(default_factory=list)


def channel_from_config(
    config: Mapping[str, Any],
    name: str,
    *,
    tenant: str | None = None,
    webhooks: Webhooks | None = None,
) -> Channel:
    """One channel from its settings entry (``type``: slack, email, log, or webhook: the
    tenant's own webhook endpoints, signed and retried by patchbay's webhook delivery)."""
    kind = config.get("type")
    if kind == "webhook":
        if webhooks is None or tenant is None:
            raise DaemonConfigError(
                f"notification channel {name!r}: webhook channels are per tenant"
            )
        return WebhookChannel(webhooks.send_event, tenant, name=name)
    try:
        if kind == "slack":
            return SlackChannel(str(config["url"]), name=name)
        if kind == "email":
            return EmailChannel(
                str(config["host"]),
                str(config["sender"]),
                list(config["recipients"]),
                port=int(config.get("port", 25)),
                name=name,
            )
        if kind == "log":
            return LogChannel(name=name)
    except (KeyError, TypeError, ValueError) as exc:
        raise DaemonConfigError(f"notification channel {name!r} is incomplete: {exc}") from exc
    raise DaemonConfigError(f"notification channel {name!r} has unknown type {kind!r}")


def tenant_channels_from(
    settings: DaemonSettings, webhooks: Webhooks | None = None
) -> dict[str, list[Channel]]:
    """Per-tenant channels from ``notify_tenants`` (named ``<tenant>:<type>:<n>``)."""
    return {
        tenant: [
            channel_from_config(
                config,
                f"{tenant}:{config.get('type')}:{index}",
                tenant=tenant,
                webhooks=webhooks,
            )
            for index, config in enumerate(configs)
        ]
        for tenant, configs in settings.notify_tenants.items()
    }


def endpoint_disabled_hook(tracker: FailureTracker) -> Callable[[Endpoint, str], Any]:
    """The webhooks service's hook: a disabled endpoint opens an attention incident."""

    async def opened(endpoint: Endpoint, reason: str) -> None:
        await tracker.open_subject_incident(
            "endpoint",
            f"endpoint:{endpoint.id}",
            f"webhook endpoint {endpoint.url} of tenant {endpoint.tenant} was disabled: {reason}",
            tenant=endpoint.tenant,
            error={"type": "EndpointDisabled", "message": reason},
        )

    return opened


def channels_from(settings: DaemonSettings) -> list[Channel]:
    """The deployment's notification channels from its settings."""
    found: list[Channel] = []
    if settings.notify_log:
        found.append(LogChannel())
    if settings.notify_slack_url:
        found.append(SlackChannel(settings.notify_slack_url))
    if settings.notify_smtp_host:
        if not settings.notify_email_from or not settings.notify_email_to:
            raise DaemonConfigError(
                "PATCHBAY_NOTIFY_SMTP_HOST needs PATCHBAY_NOTIFY_EMAIL_FROM and "
                "PATCHBAY_NOTIFY_EMAIL_TO"
            )
        found.append(
            EmailChannel(
                settings.notify_smtp_host,
                settings.notify_email_from,
                settings.notify_email_to,
                port=settings.notify_smtp_port,
            )
        )
    return found


def exporters_from(settings: DaemonSettings, client: QueueClient) -> list[AuditExporter]:
    """The audit stream's exporters the settings ask for."""
    found = []
    if settings.audit_export_url:
        found.append(AuditExporter(client, HttpSink(settings.audit_export_url), name="http"))
    if settings.audit_export_file:
        sink = FileSink(Path(settings.audit_export_file))
        found.append(AuditExporter(client, sink, name="file"))
    return found


class Daemon:
    """``patchbay run``. ``connectors`` default to the installed plugins; ``channels``
    are added to the ones the settings configure."""

    def __init__(
        self,
        settings: DaemonSettings,
        *,
        connectors: Mapping[str, type[Connector[Any]]] | None = None,
        channels: Iterable[Channel] = (),
        announce: Callable[[str], None] = print,
    ) -> None:
        self.settings = settings
        self._connectors = connectors
        self._channels = list(channels)
        self.announce = announce
        self.parts: DaemonParts | None = None
        self.ready = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Start everything, run until ``stop`` is set, then shut down gracefully."""
        settings = self.settings
        url = resolve_database_url(settings.database_url)
        schema = settings.schema_name
        applied = await migrate(url, schema)
        if applied:
            self.announce(f"migrated schema {schema!r}: {len(applied)} step(s)")
        keys = load_key_provider(
            development_home=data_home() if settings.mode == "development" else None,
            announce=self.announce,
        )
        if keys is None:
            raise DaemonConfigError(
                "no master keys configured: set PATCHBAY_MASTER_KEYS or "
                "PATCHBAY_MASTER_KEY_FILE (create one with `patchbay secrets new-master-key`), "
                "or run in local development mode (--dev)"
            )
        connectors = self._connectors if self._connectors is not None else discover()
        vault = Vault(url, schema=schema, keys=keys)
        client = QueueClient(
            url,
            schema=schema,
            redact=vault.redactor,
            pool_max=settings.pool_max,
            maintenance_interval=settings.maintenance_interval,
            application_name="patchbay-daemon",
        )
        # Every log line the process writes is scrubbed of resolved secret values.
        install_log_redaction(vault.redactor)
        async with vault, client:
            await vault.check_master_keys()
            tracker = FailureTracker(client, redact=vault.redactor)
            webhooks = Webhooks(
                client,
                vault,
                on_endpoint_disabled=endpoint_disabled_hook(tracker),
                allowed_networks=settings.webhook_allowed_networks,
            )
            executor = ConnectorExecutor(
                client, [cls() for cls in connectors.values()], vault=vault, hooks=tracker
            )
            scheduler = TenantScheduler(client, executor, tick=settings.scheduler_tick)
            notifier = Notifier(
                client,
                [*channels_from(settings), *self._channels],
                tenant_channels=tenant_channels_from(settings, webhooks),
            )
            await scheduler.ensure_queues()
            await tracker.ensure_queue()
            parts = DaemonParts(client, vault, executor, scheduler, tracker, notifier)
            parts.workers += await executor.start(
                concurrency=settings.concurrency, poll_interval=settings.poll_interval
            )
            parts.workers.append(await scheduler.start(concurrency=settings.scheduler_concurrency))
            parts.workers += await notifier.start()
            await webhooks.open()
            parts.workers.append(
                await webhooks.work(
                    concurrency=settings.concurrency, poll_interval=settings.poll_interval
                )
            )
            parts.webhooks = webhooks
            parts.exporters += exporters_from(settings, client)
            for exporter in parts.exporters:
                exporter.start()
            self.parts = parts
            await self.reconcile_schedules()
            reconcile = asyncio.get_running_loop().create_task(self._reconcile_loop())
            names = ", ".join(sorted(connectors)) or "none installed"
            self.announce(
                f"patchbay daemon running: connectors {names}; {len(parts.workers)} workers; "
                f"schema {schema!r}"
            )
            self.ready.set()
            try:
                await stop.wait()
            finally:
                reconcile.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reconcile
                for exporter in parts.exporters:
                    await exporter.stop()
                self.announce("stopping: letting running jobs finish")
                await client.close(grace=settings.shutdown_grace)
                await webhooks.close()
        self.announce("stopped")

    async def _reconcile_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reconcile_interval)
            try:
                await self.reconcile_schedules()
            except Exception:
                log.exception("reconciling tenant schedules failed; retrying next interval")

    async def reconcile_schedules(self) -> tuple[int, int]:
        """Make the tenants' sync_all schedules match the registry; returns (scheduled,
        unscheduled)."""
        assert self.parts is not None
        client, scheduler = self.parts.client, self.parts.scheduler
        statements = Statements(client.schema, package="patchbay.runtime")
        async with client.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(statements["tenant_list_for_schedules"])
            tenants = await cur.fetchall()
        existing = {
            s.name: s.cron for s in await client.schedules.list() if s.name.startswith("sync_all:")
        }
        scheduled = unscheduled = 0
        for tenant in tenants:
            name = f"sync_all:{tenant['id']}"
            cron = tenant["sync_schedule"] or self.settings.scheduler_tick
            if tenant["status"] == "active":
                if existing.get(name) != cron:
                    await scheduler.schedule_tenant(tenant["id"], cron)
                    scheduled += 1
            elif name in existing:
                await scheduler.unschedule_tenant(tenant["id"])
                unscheduled += 1
        return scheduled, unscheduled
