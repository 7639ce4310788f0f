"""Maintenance: lease expiry, max queued age, retention and cron, once at a time.

Guarantee: every client of a schema may run maintenance; each pass runs at most once at a
time across all of them, because it holds a transaction-level advisory lock taken with
``pg_try_advisory_xact_lock`` (a client that does not get the lock skips that pass). A job
whose lease ran out is retried (or failed and dead-lettered) within one interval of its
expiry, with its attempt counted. Retention: a finished job (completed, failed,
cancelled) is deleted, with its events, within one interval of its queue's ``retention``
passing; a job that waited longer than its queue's ``max_queued_age`` to start fails and
is dead-lettered within one interval. Both run in batches, bounded per pass in count
and time (``_RETENTION_STEPS``), so one pass stays short; a larger backlog drains over
the following passes. Cron: each pass enqueues the due fires
of the schema's schedules (:meth:`patchbay.queue.schedules.Schedules.tick`).

State model: ``passes`` counts completed passes and ``expired`` the jobs they expired,
``queued_expired`` the jobs that waited too long and ``deleted`` the jobs retention
deleted (test signals); ``pass_done`` is set after each pass.

How it fails: a database error ends the pass, is logged (the 1st, 10th and every 100th in
a row when the database is unreachable), and the next interval retries.
A client that stalls in the middle of a pass (a paused process) holds the lock only until
Postgres ends its idle transaction (``_PASS_IDLE_TIMEOUT``); the others then go on.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from typing import TYPE_CHECKING

import psycopg

if TYPE_CHECKING:
    from .client import QueueClient

__all__ = ["Maintenance"]

log = logging.getLogger("patchbay.queue.maintenance")

_LEASE_ERROR = json.dumps(
    {
        "type": "patchbay.queue.LeaseExpired",
        "message": "the job's lease expired: its worker died, hung or lost the database",
        "traceback": "",
    }
)


def _lock_key(schema: str) -> int:
    digest = hashlib.sha256(f"patchbay.maintenance:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


# A pass holds the maintenance lock for its whole transaction. If its process stalls
# mid-pass (SIGSTOP, a paused VM, a blocked event loop), Postgres ends that session once it
# has waited this long for the next statement, which frees the lock: otherwise lease
# expiry, retention and cron would stop for every client for as long as the stall lasts.
_PASS_IDLE_TIMEOUT = "5s"
_SET_IDLE_TIMEOUT = "select set_config('idle_in_transaction_session_timeout', %s, true)"
_LOCK_PASS = (
    "select set_config('idle_in_transaction_session_timeout', %s, true),"
    " pg_try_advisory_xact_lock(%s)"
)

# Retention steps: (statement, batch size, counter, log message). Expiry writes more per
# job (an update, an event, maybe a dead-letter copy) than deletion, so its batches are
# smaller. Each step stops after _RETENTION_BATCHES batches or _RETENTION_BUDGET seconds,
# so a pass holding the lock stays short; what is left waits for the next pass.
_RETENTION_STEPS = (
    ("job_expire_queued", 1000, "queued_expired", "expired %d job(s) past max_queued_age"),
    ("job_delete_retained", 5000, "deleted", "retention deleted %d finished job(s)"),
)
_RETENTION_BATCHES = 10
_RETENTION_BUDGET = 1.0


class Maintenance:
    """Periodic maintenance of one schema, every ``interval`` seconds."""

    def __init__(self, client: QueueClient, *, interval: float) -> None:
        self._client = client
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self.passes = 0
        self.expired = 0
        self.queued_expired = 0
        self.deleted = 0
        self.pass_done = asyncio.Event()

    async def start(self) -> None:
        """Run passes in the background (idempotent)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="maintenance")

    async def stop(self) -> None:
        """Stop the background passes."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _loop(self) -> None:
        failures = 0  # passes failed in a row
        while True:
            try:
                await self.run_once()
                if failures:
                    log.info("maintenance passes resumed after %d failed", failures)
                failures = 0
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                # The database is away: log the 1st, 10th, 100th, 200th... failure in a row,
                # as the worker loops do, so a long outage logs a bounded number of lines.
                failures += 1
                if failures in (1, 10) or failures % 100 == 0:
                    log.warning("maintenance pass failed (%d in a row): %s", failures, exc)
            except Exception:
                # Any other failure must not end maintenance for good: log it, try again.
                failures += 1
                log.exception("maintenance pass failed")
            await asyncio.sleep(self.interval)

    async def run_once(self) -> bool:
        """One pass, if no other client is running one; returns whether it ran."""
        client = self._client
        async with client.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(_LOCK_PASS, (_PASS_IDLE_TIMEOUT, _lock_key(client.schema)))
            row = await cur.fetchone()
            if row is None or not row[1]:
                return False
            self.expired += await self._expire_leases(conn, limit=10_000)
            # Retention and max queued age (see the module docstring).
            await self._retention(conn)
            # Cron: the due fires of every schedule, each in a savepoint. Exactly-once comes
            # from schedule_fire's key (see patchbay.queue.schedules); this lock only spares
            # the other daemons the same work.
            await client.schedules.tick(conn=conn)
        self.passes += 1
        self.pass_done.set()
        return True

    async def expire_leases(self, *, limit: int = 1000) -> int:
        """Expire leases now (outside the periodic pass); returns how many jobs."""
        async with self._client.pool.connection() as conn, conn.transaction():
            await conn.execute(_SET_IDLE_TIMEOUT, (_PASS_IDLE_TIMEOUT,))
            return await self._expire_leases(conn, limit=limit)

    async def _expire_leases(self, conn: psycopg.AsyncConnection[object], *, limit: int) -> int:
        client = self._client
        now = client.clock.now()
        cur = await conn.execute(
            client.sql["job_find_expired_leases"], {"now": now, "limit": limit}
        )
        rows = await cur.fetchall()
        if not rows:
            return 0
        ids = [r[0] for r in rows]  # type: ignore[index]
        attempts = [r[1] for r in rows]  # type: ignore[index]
        cur = await conn.execute(
            client.sql["job_fail_many"],
            {
                "ids": ids,
                "attempts": attempts,
                "errors": [_LEASE_ERROR] * len(ids),
                "finals": [False] * len(ids),
                "now": now,
                "channel": client.channel,
            },
        )
        expired = cur.rowcount
        if expired:
            log.info("expired the leases of %d job(s)", expired)
        return expired

    async def _retention(self, conn: psycopg.AsyncConnection[object]) -> None:
        client = self._client
        now = client.clock.now()
        for statement, batch, counter, message in _RETENTION_STEPS:
            params = {"now": now, "limit": batch, "channel": client.channel}
            deadline = time.monotonic() + _RETENTION_BUDGET
            for _ in range(_RETENTION_BATCHES):
                cur = await conn.execute(client.sql[statement], params)
                row = await cur.fetchone()
                done = int(row[0]) if row else 0  # type: ignore[index]
                setattr(self, counter, getattr(self, counter) + done)
                if done:
                    log.info(message, done)
                if done < batch or time.monotonic() > deadline:
                    break
