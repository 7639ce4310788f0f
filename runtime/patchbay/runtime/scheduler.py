"""The tenant-aware scheduler: per tenant, a cron tick fans out one sync per due
integration.

Guarantee
    Each tenant has a cron schedule (``sync_all:<tenant>``, a queue schedule: exactly one
    job per fire however many daemons run) that enqueues ``integration.sync_all`` for it.
    That job's fan-out sends, in one transaction, one sync job per *due* active
    integration and marks them scheduled: an integration is due when its cron had a fire
    since it was last scheduled. Its cron is, first found: the integration's own
    ``schedule``, the tenant's ``sync_schedule``, the connector's ``@sync(every=...)``.
    Paused, disabled and needs-attention integrations (and disabled tenants) are skipped.

Each sync job has ``singleton_key`` = the integration on a ``stately``-policy queue (at
most one waiting and one running per integration: never two syncs of one integration at
once, and a sync that outlasts its interval causes no pile-up); ``group`` = the tenant
with the tenant's ``max_concurrent`` as its limit when the tenant has one (else the
integration, limit 1); ``fairness_key`` = the tenant (sync queues are fair, weighted by the
tenant's ``fairness_weight``; a weight set back to 1 keeps the old one until changed
again); and, when the tenant has ``starts_per_interval``, its rate
limit ``tenant:<id>``.

How it fails: a fan-out is one transaction; if it fails, nothing is marked and the
sync_all job is retried.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from croniter import croniter
from psycopg.rows import dict_row

from patchbay.connectors import ConnectorExecutor
from patchbay.queue import (
    Clock,
    InvalidOption,
    Job,
    JobSpec,
    QueueClient,
    QueueNotFound,
    Statements,
    SystemClock,
    Worker,
)

__all__ = ["SYNC_ALL_QUEUE", "FanOut", "TenantScheduler", "tenant_rate_key"]

log = logging.getLogger("patchbay.runtime.scheduler")

SYNC_ALL_QUEUE = "integration.sync_all"


def tenant_rate_key(tenant: str) -> str:
    """The rate limit all of a tenant's syncs spend."""
    return f"tenant:{tenant}"


@dataclass(frozen=True, slots=True)
class FanOut:
    """What one fan-out did: syncs sent, integrations not due, unknown connectors."""

    tenant: str
    sent: int
    not_due: int
    unknown_connector: int

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "tenant": self.tenant,
            "sent": self.sent,
            "not_due": self.not_due,
            "unknown_connector": self.unknown_connector,
        }


class TenantScheduler:
    """Schedules and fans out the tenants' syncs. ``tick`` is the default cron of a
    tenant's sync_all (default every minute: each integration still syncs only when its own
    cron is due)."""

    def __init__(
        self,
        queue: QueueClient,
        executor: ConnectorExecutor,
        *,
        tick: str = "* * * * *",
        clock: Clock | None = None,
    ) -> None:
        if not croniter.is_valid(tick):
            raise InvalidOption(f"scheduler tick {tick!r} is not a valid cron expression")
        self.queue = queue
        self.executor = executor
        self.tick = tick
        self.clock = clock or queue.clock or SystemClock()
        self._sql = Statements(queue.schema, package="patchbay.runtime")

    async def ensure_queues(self) -> None:
        """Create the sync_all queue (one waiting fan-out per tenant) and, through the
        executor, every job type's queue, if missing."""
        try:
            await self.queue.get_queue(SYNC_ALL_QUEUE)
        except QueueNotFound:
            await self.queue.create_queue(
                SYNC_ALL_QUEUE, policy="short", retry_limit=3, retry_delay=5.0
            )
        await self.executor.ensure_queues()

    async def schedule_tenant(self, tenant: str, cron: str | None = None) -> None:
        """Create or update the tenant's sync_all schedule (``cron`` or the default tick)."""
        await self.queue.schedule(
            f"sync_all:{tenant}",
            cron or self.tick,
            SYNC_ALL_QUEUE,
            {"tenant": tenant},
            singleton_key=tenant,
        )

    async def unschedule_tenant(self, tenant: str) -> None:
        """Remove the tenant's sync_all schedule."""
        await self.queue.unschedule(f"sync_all:{tenant}")

    async def start(self, *, concurrency: int = 16) -> Worker:
        """Work the sync_all queue: each job fans out its tenant."""

        async def handle(job: Job) -> dict[str, Any]:
            return (await self.fan_out(job.data["tenant"])).to_json()

        return await self.queue.work(SYNC_ALL_QUEUE, handle, concurrency=concurrency)

    async def fan_out(self, tenant: str) -> FanOut:
        """Send one sync per due active integration of ``tenant`` (see the module doc)."""
        executor = self.executor
        async with self.queue.pool.connection() as conn, conn.transaction():
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(self._sql["scheduler_now"], {"now": self.clock.now()})
            now_row = await cur.fetchone()
            assert now_row is not None
            now: datetime = next(iter(now_row.values()))
            await cur.execute(self._sql["integration_scheduling_candidates"], {"tenant": tenant})
            rows = await cur.fetchall()
            batches: dict[str, list[JobSpec]] = defaultdict(list)
            limits: dict[str, tuple[int | None, int]] = {}
            due_ids: list[str] = []
            not_due = unknown = 0
            rate_key: str | None = None
            for row in rows:
                connector = executor.connectors.get(row["connector"])
                if connector is None:
                    unknown += 1
                    log.warning(
                        "integration %s uses connector %r, which is not installed",
                        row["id"],
                        row["connector"],
                    )
                    continue
                if row["starts_per_interval"] and rate_key is None:
                    rate_key = tenant_rate_key(tenant)
                for name, kind in connector.job_types().items():
                    if kind.kind != "sync":
                        continue
                    cron = row["schedule"] or row["sync_schedule"] or kind.every or self.tick
                    if not _due(cron, row["last_scheduled_at"], now):
                        not_due += 1
                        continue
                    payload = executor.payload(
                        connector, tenant=tenant, integration=row["id"], config=row["config"]
                    )
                    queue_name = connector.queue_name(name)
                    if row["max_concurrent"] or row["fairness_weight"] != 1:
                        limits[queue_name] = (row["max_concurrent"], row["fairness_weight"])
                    batches[queue_name].append(
                        JobSpec(
                            payload,
                            group=tenant if row["max_concurrent"] else row["id"],
                            fairness_key=tenant,
                            singleton_key=row["id"],
                            priority=kind.priority,
                            rate_key=rate_key if row["starts_per_interval"] else None,
                        )
                    )
                    due_ids.append(row["id"])
            for queue_name, (max_active, weight) in limits.items():
                await conn.execute(
                    self._sql["tenant_queue_limits_apply"],
                    {
                        "queue": queue_name,
                        "tenant": tenant,
                        "max_active": max_active,
                        "weight": weight,
                    },
                )
            for queue_name, specs in batches.items():
                await self.queue.send_many(queue_name, specs, conn=conn)
            if due_ids:
                await conn.execute(
                    self._sql["integration_mark_scheduled"], {"ids": due_ids, "at": now}
                )
        if rate_key is not None:
            await self._ensure_tenant_rate(tenant)
        return FanOut(tenant, len(due_ids), not_due, unknown)

    async def _ensure_tenant_rate(self, tenant: str) -> None:
        async with self.queue.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(self._sql["tenant_get_limits"], {"tenant": tenant})
            row = await cur.fetchone()
        if row and row["starts_per_interval"]:
            await self.queue.set_rate_limit(
                tenant_rate_key(tenant), row["starts_per_interval"], row["start_interval_s"]
            )


def _due(cron: str, last: datetime | None, now: datetime) -> bool:
    """Whether ``cron`` fired in ``(last, now]`` (always, when never scheduled)."""
    if last is None:
        return True
    return bool(croniter(cron, last).get_next(datetime) <= now)
