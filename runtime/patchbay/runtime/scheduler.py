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

Cost: the sync_all worker makes the fan-outs of the jobs it holds at once together, a
few transactions of many tenants each (:meth:`TenantScheduler.fan_out_many`), so a tick of
many tenants costs a few round trips per batch, not per tenant.

How it fails: a fan-out is one transaction; if it fails, nothing is marked and the
sync_all job is retried. A batch that fails is made again tenant by tenant, so only the
failing tenant's job fails.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from croniter import croniter
from psycopg.rows import dict_row

from patchbay.connectors import ConfigError, ConnectorExecutor
from patchbay.queue import (
    Clock,
    InvalidOption,
    Job,
    JobSpec,
    QueueClient,
    QueueNotFound,
    Statements,
    Worker,
)

from .audit import worker_identity

__all__ = ["SYNC_ALL_QUEUE", "FanOut", "TenantScheduler", "tenant_rate_key"]

log = logging.getLogger("patchbay.runtime.scheduler")

SYNC_ALL_QUEUE = "integration.sync_all"


def tenant_rate_key(tenant: str) -> str:
    """The rate limit all of a tenant's syncs spend."""
    return f"tenant:{tenant}"


@dataclass(frozen=True, slots=True)
class FanOut:
    """What one fan-out did: syncs sent, integrations not due, unknown connectors, configs
    the connector's model now refuses (not sent; the log says why); ``worker``: the
    process that made it (``host:pid``)."""

    tenant: str
    sent: int
    not_due: int
    unknown_connector: int
    invalid_config: int = 0
    worker: str = field(default_factory=worker_identity)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "tenant": self.tenant,
            "sent": self.sent,
            "not_due": self.not_due,
            "unknown_connector": self.unknown_connector,
            "invalid_config": self.invalid_config,
            "worker": self.worker,
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
        self.clock = clock or queue.clock
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

    async def start(
        self, *, concurrency: int = 64, batch_size: int = 100, parallel: int = 2
    ) -> Worker:
        """Work the sync_all queue: each job fans out its tenant. The fan-outs of the jobs
        running at once (up to ``concurrency``) are made together, in up to ``parallel``
        transactions at once of up to ``batch_size`` tenants each (see
        :meth:`fan_out_many`)."""
        if not 1 <= batch_size <= 10_000 or not 1 <= parallel <= 100:
            raise InvalidOption(
                f"batch_size must be 1-10000 and parallel 1-100, got {batch_size!r} and "
                f"{parallel!r}"
            )
        batcher = _Batcher(self, batch_size, parallel)

        async def handle(job: Job) -> dict[str, Any]:
            return (await batcher.fan_out(job.data["tenant"])).to_json()

        return await self.queue.work(SYNC_ALL_QUEUE, handle, concurrency=concurrency)

    async def fan_out(self, tenant: str) -> FanOut:
        """Send one sync per due active integration of ``tenant`` (see the module doc)."""
        return (await self.fan_out_many([tenant]))[0]

    async def fan_out_many(self, tenants: Sequence[str]) -> list[FanOut]:
        """Fan out several tenants in one transaction (a handful of round trips, whatever
        their number): what the sync_all worker does with the jobs it runs at once.
        Returns one :class:`FanOut` per tenant, in order; a tenant named twice is fanned
        out once (its second entry sends nothing)."""
        executor = self.executor
        wanted = list(dict.fromkeys(tenants))
        counts = {tenant: [0, 0, 0, 0] for tenant in wanted}  # FanOut's counters
        rates: dict[str, tuple[int, float]] = {}
        async with self.queue.pool.connection() as conn, conn.transaction():
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                self._sql["integration_scheduling_candidates"],
                {"tenants": wanted, "now": self.clock.now()},
            )
            rows = await cur.fetchall()
            batches: dict[str, list[JobSpec]] = defaultdict(list)
            limits: dict[tuple[str, str], tuple[int | None, int]] = {}
            due_ids: list[str] = []
            # Integrations scheduled together share their last time: one cron step each.
            next_fires: dict[tuple[str, datetime], datetime] = {}
            for row in rows:
                tenant: str = row["tenant_id"]
                count = counts[tenant]
                connector = executor.connectors.get(row["connector"])
                if connector is None:
                    count[2] += 1
                    log.warning(
                        "integration %s uses connector %r, which is not installed",
                        row["id"],
                        row["connector"],
                    )
                    continue
                rate_key: str | None = None
                if row["starts_per_interval"]:
                    rate_key = tenant_rate_key(tenant)
                    rates[tenant] = (row["starts_per_interval"], row["start_interval_s"])
                for name, kind in connector.job_types().items():
                    if kind.kind != "sync":
                        continue
                    cron = row["schedule"] or row["sync_schedule"] or kind.every or self.tick
                    if not _due(cron, row["last_scheduled_at"], row["now"], next_fires):
                        count[1] += 1
                        continue
                    try:
                        payload = executor.payload(
                            connector, tenant=tenant, integration=row["id"], config=row["config"]
                        )
                    except ConfigError as exc:
                        # One integration's stale config must not hold back its tenant's.
                        count[3] += 1
                        log.warning("integration %s not scheduled: %s", row["id"], exc)
                        continue
                    queue_name = connector.queue_name(name)
                    if row["max_concurrent"] or row["fairness_weight"] != 1:
                        limits[queue_name, tenant] = (
                            row["max_concurrent"],
                            row["fairness_weight"],
                        )
                    batches[queue_name].append(
                        JobSpec(
                            payload,
                            group=tenant if row["max_concurrent"] else row["id"],
                            fairness_key=tenant,
                            singleton_key=row["id"],
                            priority=kind.priority,
                            rate_key=rate_key,
                        )
                    )
                    due_ids.append(row["id"])
                    count[0] += 1
            for (queue_name, tenant), (max_active, weight) in limits.items():
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
                    self._sql["integration_mark_scheduled"],
                    {"ids": due_ids, "at": rows[0]["now"]},
                )
        for tenant, (capacity, per) in rates.items():
            await self.queue.set_rate_limit(tenant_rate_key(tenant), capacity, per)
        results = {t: FanOut(t, c[0], c[1], c[2], c[3]) for t, c in counts.items()}
        return [results.pop(t) if t in results else FanOut(t, 0, 0, 0, 0) for t in tenants]


class _Batcher:
    """Gathers the fan-outs asked for while others are being made, and makes them together.

    Up to ``parallel`` batches are made at once (each in its own transaction), each of up
    to ``size`` tenants: waiting fan-outs are shared evenly between the batches starting,
    so the database's cores work at once. An idle batcher starts at once (after the
    handlers started in the same loop turn have asked); batches grow with load. A batch
    that fails is made again tenant by tenant, so one tenant's error fails only its job."""

    def __init__(self, scheduler: TenantScheduler, size: int, parallel: int) -> None:
        self._scheduler = scheduler
        self._size = size
        self._parallel = parallel
        self._waiting: list[tuple[str, asyncio.Future[FanOut]]] = []
        # Counted in step with the runners' loops (no await between a runner's last look
        # at the waiting list and its leaving), so a request never waits with no runner.
        self._active = 0
        self._runners: set[asyncio.Task[None]] = set()

    async def fan_out(self, tenant: str) -> FanOut:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[FanOut] = loop.create_future()
        self._waiting.append((tenant, future))
        if self._active < self._parallel:
            self._active += 1
            runner = loop.create_task(self._run(), name="sync_all fan-out")
            self._runners.add(runner)
            runner.add_done_callback(self._runners.discard)
        # A cancelled handler (a stopping worker) cancels its future; the batch skips it.
        return await future

    async def _run(self) -> None:
        try:
            while self._waiting:
                share = -(-len(self._waiting) // self._active)  # ceiling
                take = max(1, min(self._size, share))
                batch = [w for w in self._waiting[:take] if not w[1].done()]
                del self._waiting[:take]
                if batch:
                    await self._make(batch)
        finally:
            self._active -= 1
            if self._active == 0:  # cancelled, and nobody is left to serve these
                for _, future in self._waiting:
                    future.cancel()
                self._waiting.clear()

    async def _make(self, batch: list[tuple[str, asyncio.Future[FanOut]]]) -> None:
        try:
            results = await self._scheduler.fan_out_many([tenant for tenant, _ in batch])
        except Exception as exc:
            if len(batch) == 1:
                if not batch[0][1].done():
                    batch[0][1].set_exception(exc)
                return
            for item in batch:
                await self._make([item])
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)


def _due(
    cron: str,
    last: datetime | None,
    now: datetime,
    next_fires: dict[tuple[str, datetime], datetime],
) -> bool:
    """Whether ``cron`` fired in ``(last, now]`` (always, when never scheduled);
    ``next_fires`` caches the first fire after ``last`` by ``(cron, last)``."""
    if last is None:
        return True
    fire = next_fires.get((cron, last))
    if fire is None:
        fire = next_fires[cron, last] = croniter(cron, last).get_next(datetime)
    return fire <= now
