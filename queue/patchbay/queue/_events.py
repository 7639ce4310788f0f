"""Job events written beside the statements that make a transition.

Failures, expiries, cancels, requeues and redrives append their events inside their own
statements. Sends, fetches, completions and releases are the hot path and their statements
know nothing of events: for those the code runs ``job_event_insert_*`` afterwards, and only
for queues whose ``events`` setting is on, so a queue without events pays nothing but a
dictionary lookup.

Whether a queue records events is read from the database at most once per ``ttl`` seconds
per client (:class:`EventsFlags`); a change of the setting reaches every client within that
time. Writes from workers are best effort: a failed event write is logged and the job goes
on (the transition itself already happened). A send in the caller's transaction writes its
events in that transaction, so they commit or roll back with the job.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from ._sql import Statements

__all__ = ["EventsFlags", "SyncEventsFlags", "record_transition"]

log = logging.getLogger("patchbay.queue.events")

DEFAULT_TTL = 5.0


class EventsFlags:
    """A client's cache of which queues record events, each entry kept ``ttl`` seconds."""

    def __init__(self, pool: AsyncConnectionPool, sql: Statements, ttl: float = DEFAULT_TTL):
        self._pool = pool
        self._sql = sql
        self.ttl = ttl
        self._flags: dict[str, tuple[float, bool]] = {}

    def cached(self, queue: str) -> bool | None:
        """The cached flag, or None when unknown or stale."""
        hit = self._flags.get(queue)
        if hit is None or hit[0] < time.monotonic():
            return None
        return hit[1]

    def remember(self, queue: str, enabled: bool) -> None:
        """Store a flag just read (``get_queue``, ``update_queue``)."""
        self._flags[queue] = (time.monotonic() + self.ttl, enabled)

    async def enabled(self, queue: str) -> bool:
        """Whether ``queue`` records events (False for an unknown queue). Never raises a
        database error: it then answers with the last value read (False if none), so the
        worker loops that ask are not broken by it."""
        hit = self.cached(queue)
        if hit is not None:
            return hit
        try:
            async with self._pool.connection() as conn:
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(self._sql["queue_get"], {"name": queue})
                row = await cur.fetchone()
        except psycopg.Error as exc:
            log.warning("could not read the events setting of queue %r: %s", queue, exc)
            stale = self._flags.get(queue)
            return stale[1] if stale else False
        enabled = bool(row is not None and row.get("events"))
        self.remember(queue, enabled)
        return enabled


class SyncEventsFlags:
    """:class:`EventsFlags` for the synchronous client, reading through ``connect()``."""

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection[Any]],
        sql: Statements,
        ttl: float = DEFAULT_TTL,
    ) -> None:
        self._connect = connect
        self._sql = sql
        self.ttl = ttl
        self._flags: dict[str, tuple[float, bool]] = {}

    def enabled(self, queue: str) -> bool:
        """Whether ``queue`` records events (False for an unknown queue)."""
        hit = self._flags.get(queue)
        if hit is not None and hit[0] >= time.monotonic():
            return hit[1]
        with self._connect().cursor(row_factory=dict_row) as cur:
            cur.execute(self._sql["queue_get"], {"name": queue})
            row = cur.fetchone()
        enabled = bool(row is not None and row.get("events"))
        self._flags[queue] = (time.monotonic() + self.ttl, enabled)
        return enabled


async def record_transition(
    pool: AsyncConnectionPool,
    sql: Statements,
    *,
    kind: str,
    from_state: str | None,
    to_state: str,
    ids: Sequence[uuid.UUID],
    attempts: Sequence[int],
    now: datetime | None,
    conn: psycopg.AsyncConnection[Any] | None = None,
) -> None:
    """Append ``kind`` events for the jobs that are now in ``to_state`` at ``attempts``,
    on ``conn`` or a connection of ``pool``. Best effort: a database error is logged, not
    raised."""
    if not ids:
        return
    params = {
        "kind": kind,
        "from_state": from_state,
        "to_state": to_state,
        "ids": list(ids),
        "attempts": list(attempts),
        "now": now,
    }
    try:
        if conn is not None:
            await conn.execute(sql["job_event_insert_transition"], params)
        else:
            async with pool.connection() as own:
                await own.execute(sql["job_event_insert_transition"], params)
    except psycopg.Error as exc:
        log.warning("could not record %d %r job event(s): %s", len(ids), kind, exc)
