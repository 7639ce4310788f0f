"""A small synchronous client for apps that only enqueue (Django, Flask, scripts)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from types import TracebackType
from typing import Any, Self, Unpack, overload

import psycopg
from psycopg.rows import dict_row, tuple_row

from ._events import SyncEventsFlags
from ._send import SendBuilder, SendPlan, as_uuid
from ._sql import Statements
from .clock import Clock, SystemClock
from .errors import JobNotFound
from .models import JobRecord
from .settings import JobOptions, SendOptions, integer, validate_schema_name

__all__ = ["SyncQueueClient"]


class SyncQueueClient:
    """Send jobs and read them back from synchronous code.

    Opens one connection lazily (or uses the ``conn=`` passed to each call, to enqueue
    inside the caller's transaction). Same validation and semantics as
    :class:`~patchbay.queue.QueueClient`.
    """

    def __init__(
        self,
        conninfo: str,
        *,
        schema: str = "patchbay",
        max_payload_bytes: int = 1024 * 1024,
        clock: Clock | None = None,
    ) -> None:
        self.conninfo = conninfo
        self.schema = validate_schema_name(schema)
        self.sql = Statements(self.schema)
        self.channel = f"patchbay:{self.schema}"
        limit = integer("max_payload_bytes", max_payload_bytes, minimum=1)
        self._sends = SendBuilder(self.channel, limit, clock or SystemClock())
        self._conn: psycopg.Connection[Any] | None = None
        self._events = SyncEventsFlags(self._connection, self.sql)

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.conninfo, autocommit=True)
        return self._conn

    def close(self) -> None:
        """Close the client's own connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @overload
    def send(
        self,
        queue: str,
        data: Any = None,
        *,
        conn: psycopg.Connection[Any] | None = None,
        **options: Unpack[JobOptions],
    ) -> uuid.UUID: ...

    @overload
    def send(
        self,
        queue: str,
        data: Any = None,
        *,
        conn: psycopg.Connection[Any] | None = None,
        **options: Unpack[SendOptions],
    ) -> uuid.UUID | None: ...

    def send(
        self,
        queue: str,
        data: Any = None,
        *,
        conn: psycopg.Connection[Any] | None = None,
        **options: Unpack[SendOptions],
    ) -> uuid.UUID | None:
        """Send one job; returns its id, or with a ``singleton_key`` the id of the job
        holding the key's place, or None (see QueueClient.send)."""
        return self._insert(queue, self._sends.one(queue, data, options), conn)[0]

    def send_many(
        self,
        queue: str,
        items: Iterable[Any],
        *,
        conn: psycopg.Connection[Any] | None = None,
        **options: Unpack[SendOptions],
    ) -> list[uuid.UUID | None]:
        """Send many jobs in one statement; returns their ids (see QueueClient.send_many)."""
        plan = self._sends.many(queue, items, options)
        if not plan.ids:
            return []
        return self._insert(queue, plan, conn)

    def _insert(
        self, queue: str, plan: SendPlan, conn: psycopg.Connection[Any] | None
    ) -> list[uuid.UUID | None]:
        target = conn if conn is not None else self._connection()
        events = self._events.enabled(queue)
        if conn is None and events:
            # The jobs and their 'created' events commit together.
            with target.transaction():
                return self._insert(queue, plan, target)
        with target.cursor(row_factory=tuple_row) as cur:
            cur.execute(self.sql[plan.statement], plan.params)
            found, lookup = plan.results(queue, cur.fetchone())
            if lookup is not None:
                cur.execute(self.sql["job_find_singleton"], lookup)
                found = plan.fill(found, lookup, cur.fetchone())
            if events:
                cur.execute(self.sql["job_event_insert_created"], {"ids": plan.ids, "queue": queue})
        return found

    def get_job(self, job_id: uuid.UUID | str) -> JobRecord:
        """One job; raises JobNotFound."""
        jid = as_uuid(job_id)
        with self._connection().cursor(row_factory=dict_row) as cur:
            cur.execute(self.sql["job_get"], {"id": jid})
            row = cur.fetchone()
        if row is None:
            raise JobNotFound(f"job {jid} not found")
        return JobRecord.from_row(row)
