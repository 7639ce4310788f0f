"""The async queue client: queues, sends, job operations, workers."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from functools import cached_property
from types import TracebackType
from typing import Any, Self, Unpack, overload

import psycopg
from psycopg.rows import dict_row, tuple_row
from psycopg_pool import AsyncConnectionPool

from ._events import EventsFlags
from ._listener import Listener
from ._maintenance import Maintenance
from ._pool import QueuePool
from ._send import JobSpec, SendBuilder, SendPlan, as_uuid
from ._sql import Statements
from ._worker import Handler, Worker
from .clock import Clock, SystemClock
from .diagnosis import JobDiagnosis, diagnose
from .errors import (
    DatabaseUnavailable,
    InvalidJobState,
    InvalidOption,
    JobNotFound,
    QueueAlreadyExists,
    QueueNotFound,
)
from .models import JobEvent, JobPage, JobRecord, JobState, QueueInfo, QueueStats
from .schedules import ScheduleInfo, Schedules
from .settings import (
    JobOptions,
    QueueSettings,
    SendOptions,
    integer,
    seconds,
    validate_key,
    validate_queue_name,
    validate_schema_name,
)

__all__ = ["JobSpec", "QueueClient"]

log = logging.getLogger("patchbay.queue")

DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024


class QueueClient:
    """Async client of one patchbay queue schema.

    Use as ``async with QueueClient(url) as client:``. The client owns a connection pool,
    one LISTEN connection (opened when the first worker starts) and, when
    ``maintenance=True``, the maintenance service (lease expiry), which runs once at a time
    across all clients of the schema.

    Settings: ``schema`` (default ``patchbay``); ``pool_min``/``pool_max`` connections
    (defaults 1 and 8: each worker uses up to two at once, for fetch and completion);
    ``max_payload_bytes`` (default 1 MiB; larger data raises PayloadTooLarge);
    ``maintenance_interval`` seconds (default 5; lower re-runs lost jobs sooner for a
    little more load); ``clock`` (default: the database's); ``redact``, a function applied
    to error messages and tracebacks before they are stored (the vault's redactor).
    """

    def __init__(
        self,
        conninfo: str,
        *,
        schema: str = "patchbay",
        pool_min: int = 1,
        pool_max: int = 8,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        maintenance: bool = True,
        maintenance_interval: float = 5.0,
        clock: Clock | None = None,
        redact: Callable[[str], str] | None = None,
        application_name: str = "patchbay",
    ) -> None:
        self.conninfo = conninfo
        self.schema = validate_schema_name(schema)
        self.max_payload_bytes = integer("max_payload_bytes", max_payload_bytes, minimum=1)
        self.clock: Clock = clock or SystemClock()
        self.redact = redact
        self.sql = Statements(self.schema)
        self.channel = f"patchbay:{self.schema}"
        self._sends = SendBuilder(self.channel, self.max_payload_bytes, self.clock)
        self._pool: AsyncConnectionPool = QueuePool(
            conninfo,
            min_size=integer("pool_min", pool_min, minimum=0),
            max_size=integer("pool_max", pool_max, minimum=1),
            kwargs={"autocommit": True, "application_name": application_name},
            configure=_configure_session,
            open=False,
            name=f"patchbay-{self.schema}",
        )
        self._events = EventsFlags(self._pool, self.sql)
        self._workers: list[Worker] = []
        self._listener = Listener(conninfo, self.channel, self._on_notify)
        self._maintenance = Maintenance(
            self, interval=seconds("maintenance_interval", maintenance_interval, allow_zero=False)
        )
        self._run_maintenance = maintenance
        self._opened = False

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> Self:
        """Open the pool (and wait for its first connection)."""
        if not self._opened:
            try:
                await self._pool.open(wait=True, timeout=30)
            except Exception as exc:
                raise DatabaseUnavailable(f"cannot connect to the database: {exc}") from exc
            self._opened = True
        return self

    async def close(self, *, grace: float | None = None) -> None:
        """Stop all workers (see :meth:`Worker.stop`), maintenance and the listener, then
        close the pool."""
        await asyncio.gather(*(w.stop(grace=grace) for w in self._workers))
        self._workers.clear()
        await self._maintenance.stop()
        await self._listener.stop()
        if self._opened:
            await self._pool.close()
            self._opened = False

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def pool(self) -> AsyncConnectionPool:
        """The client's connection pool (autocommit connections)."""
        return self._pool

    @property
    def listener(self) -> Listener:
        """The LISTEN connection's service (exposed for tests and health checks)."""
        return self._listener

    @property
    def maintenance(self) -> Maintenance:
        """The maintenance service."""
        return self._maintenance

    # -- queues --------------------------------------------------------------------------

    async def create_queue(self, name: str, **settings: Any) -> QueueInfo:
        """Create a queue with defaults its jobs inherit (see :class:`QueueSettings`).

        Creating an existing queue with the same settings is a no-op; with other settings it
        raises QueueAlreadyExists (use :meth:`update_queue`)."""
        validate_queue_name(name)
        wanted = QueueSettings.build(**settings)
        params = self._queue_params(name, wanted)
        async with self._pool.connection() as conn, conn.transaction():
            await self._refuse_dead_letter_cycle(conn, name, wanted.dead_letter)
            try:
                await conn.execute(self.sql["queue_insert"], params)
            except psycopg.errors.ForeignKeyViolation as exc:
                raise QueueNotFound(
                    f"dead-letter queue {wanted.dead_letter!r} does not exist; create it first"
                ) from exc
        info = await self.get_queue(name)
        if info.settings != wanted:
            raise QueueAlreadyExists(
                f"queue {name!r} exists with other settings; use update_queue to change them"
            )
        return info

    async def update_queue(self, name: str, **settings: Any) -> QueueInfo:
        """Change a queue's defaults; options not given keep their current value. Jobs
        already sent keep the policy they were sent with."""
        validate_queue_name(name)
        current = (await self.get_queue(name)).settings
        merged = QueueSettings.build(
            **{**{f: getattr(current, f) for f in current.__slots__}, **settings}
        )
        async with self._pool.connection() as conn, conn.transaction():
            await self._refuse_dead_letter_cycle(conn, name, merged.dead_letter)
            try:
                cur = await conn.execute(self.sql["queue_update"], self._queue_params(name, merged))
            except psycopg.errors.ForeignKeyViolation as exc:
                raise QueueNotFound(
                    f"dead-letter queue {merged.dead_letter!r} does not exist; create it first"
                ) from exc
            if await cur.fetchone() is None:
                raise QueueNotFound(f"queue {name!r} does not exist")
        return await self.get_queue(name)

    async def _refuse_dead_letter_cycle(
        self, conn: psycopg.AsyncConnection[Any], name: str, dead_letter: str | None
    ) -> None:
        # A loop (a -> a, or a -> b -> a) would copy a failing job from queue to queue
        # forever, a new job each time; refused before anything is written.
        if dead_letter is None:
            return
        if dead_letter == name:
            raise InvalidOption(f"queue {name!r} cannot be its own dead-letter queue")
        await conn.execute(self.sql["queue_dead_letter_lock"], {"lock": f"{self.schema}:dlq"})
        cur = await conn.execute(
            self.sql["queue_dead_letter_cycle"], {"name": name, "dead_letter": dead_letter}
        )
        row = await cur.fetchone()
        if row is not None and row[0]:
            raise InvalidOption(
                f"dead-letter queue {dead_letter!r} for {name!r} would form a loop: the chain "
                f"from {dead_letter!r} leads back to {name!r}; pick a queue outside the chain"
            )

    async def get_queue(self, name: str) -> QueueInfo:
        """A queue and its settings; raises QueueNotFound."""
        validate_queue_name(name)
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(self.sql["queue_get"], {"name": name})
            row = await cur.fetchone()
        if row is None:
            raise QueueNotFound(f"queue {name!r} does not exist; create it with create_queue")
        info = QueueInfo.from_row(row)
        self._events.remember(name, info.settings.events)
        return info

    async def list_queues(self) -> list[QueueInfo]:
        """All queues, by name."""
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(self.sql["queue_list"])
            return [QueueInfo.from_row(r) for r in await cur.fetchall()]

    async def delete_queue(self, name: str) -> None:
        """Delete a queue and all its jobs; raises QueueNotFound."""
        validate_queue_name(name)
        async with self._pool.connection() as conn:
            cur = await conn.execute(self.sql["queue_delete"], {"name": name})
            if await cur.fetchone() is None:
                raise QueueNotFound(f"queue {name!r} does not exist")

    @staticmethod
    def _queue_params(name: str, settings: QueueSettings) -> dict[str, Any]:
        return {"name": name, **settings.to_columns()}

    # -- limits and fairness --------------------------------------------------------------

    async def set_group_limit(self, queue: str, group: str, max_active: int | None) -> None:
        """Allow ``max_active`` jobs of ``group`` in ``queue`` to be active at once (None
        reverts to the queue's ``group_limit``). Lowering it never cancels running jobs;
        new ones wait until the group is under the limit."""
        validate_queue_name(queue)
        params: dict[str, Any] = {"queue": queue, "group_key": validate_key("group", group)}
        async with self._pool.connection() as conn:
            if max_active is None:
                await conn.execute(self.sql["group_limit_delete"], params)
            else:
                params["max_active"] = integer("max_active", max_active, minimum=1, maximum=100_000)
                await conn.execute(self.sql["group_limit_set"], params)

    async def group_active(self, queue: str, group: str) -> int:
        """How many jobs of ``group`` are active now."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                self.sql["group_active_count"], {"queue": queue, "group_key": group}
            )
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def set_fairness_weight(self, queue: str, fairness_key: str, weight: int | None) -> None:
        """Give ``fairness_key`` ``weight`` turns per round in a fair queue (None: 1)."""
        validate_queue_name(queue)
        params: dict[str, Any] = {
            "queue": queue,
            "fairness_key": validate_key("fairness_key", fairness_key),
        }
        async with self._pool.connection() as conn:
            if weight is None:
                await conn.execute(self.sql["fairness_weight_delete"], params)
            else:
                params["weight"] = integer("weight", weight, minimum=1, maximum=1000)
                await conn.execute(self.sql["fairness_weight_set"], params)

    async def set_rate_limit(self, key: str, capacity: int, per: float | timedelta) -> None:
        """Allow ``capacity`` starts of jobs with ``rate_key=key`` per ``per`` seconds,
        shared by every worker (a token bucket refilling continuously; it starts full)."""
        async with self._pool.connection() as conn:
            await conn.execute(
                self.sql["rate_limit_set"],
                {
                    "key": validate_key("rate_key", key),
                    "capacity": integer("capacity", capacity, minimum=1),
                    "interval_s": seconds("per", per, allow_zero=False),
                    "now": self.clock.now(),
                },
            )

    async def delete_rate_limit(self, key: str) -> bool:
        """Remove a rate limit (its jobs become unlimited); returns whether it existed."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(self.sql["rate_limit_delete"], {"key": key})
            return await cur.fetchone() is not None

    async def rate_limits(self) -> list[dict[str, Any]]:
        """Every rate limit with its currently available tokens."""
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(self.sql["rate_limit_list"], {"now": self.clock.now()})
            return list(await cur.fetchall())

    # -- sending -------------------------------------------------------------------------

    @overload
    async def send(
        self,
        queue: str,
        data: Any = None,
        *,
        conn: psycopg.AsyncConnection[Any] | None = None,
        **options: Unpack[JobOptions],
    ) -> uuid.UUID: ...

    @overload
    async def send(
        self,
        queue: str,
        data: Any = None,
        *,
        conn: psycopg.AsyncConnection[Any] | None = None,
        **options: Unpack[SendOptions],
    ) -> uuid.UUID | None: ...

    async def send(
        self,
        queue: str,
        data: Any = None,
        *,
        conn: psycopg.AsyncConnection[Any] | None = None,
        **options: Unpack[SendOptions],
    ) -> uuid.UUID | None:
        """Send one job; returns its id.

        With ``conn=``, the insert runs in that connection's current transaction: if the
        caller rolls back, no job exists. A repeated ``id`` returns the id without adding a
        second job. With a ``singleton_key`` (see :class:`SendOptions`), a send the queue's
        policy or a throttle window refuses adds nothing and returns the id of the job
        holding the key's place, or None in the rare case that job cannot be read (it
        finished meanwhile, or the caller's transaction cannot see it); a debounced send
        returns its window's job. A send that meets another sender's uncommitted job of
        the same key waits for that transaction to end."""
        plan = self._sends.one(queue, data, options)
        return (await self._insert(queue, plan, conn))[0]

    async def send_many(
        self,
        queue: str,
        items: Iterable[Any],
        *,
        conn: psycopg.AsyncConnection[Any] | None = None,
        **options: Unpack[SendOptions],
    ) -> list[uuid.UUID | None]:
        """Send many jobs to one queue in one statement; returns their ids in order.

        Each item is the job's data, or a :class:`JobSpec` with its own id, priority,
        start time or singleton key. ``options`` apply to all (``id`` is not allowed here).
        All or nothing: one invalid item raises before anything is written. An item
        refused for its singleton key gets the id of the job holding the key's place (an
        earlier item of the same call, maybe), or None, as in :meth:`send`; only items
        with a key can be None."""
        plan = self._sends.many(queue, items, options)
        if not plan.ids:
            return []
        return await self._insert(queue, plan, conn)

    async def _insert(
        self, queue: str, plan: SendPlan, conn: psycopg.AsyncConnection[Any] | None
    ) -> list[uuid.UUID | None]:
        if conn is None and await self._events.enabled(queue):
            # The jobs and their 'created' events commit together.
            async with self._pool.connection() as own, own.transaction():
                return await self._insert(queue, plan, own)
        if conn is None:
            async with self._pool.connection() as own:
                return await self._insert_on(queue, plan, own, events=False)
        return await self._insert_on(queue, plan, conn, events=await self._events.enabled(queue))

    async def _insert_on(
        self, queue: str, plan: SendPlan, conn: psycopg.AsyncConnection[Any], *, events: bool
    ) -> list[uuid.UUID | None]:
        async with conn.cursor(row_factory=tuple_row) as cur:
            await cur.execute(self.sql[plan.statement], plan.params)
            found, lookup = plan.results(queue, await cur.fetchone())
            if lookup is not None:
                # Holders a concurrent sender committed while the insert waited on them.
                await cur.execute(self.sql["job_find_singleton"], lookup)
                found = plan.fill(found, lookup, await cur.fetchone())
            if events:
                await cur.execute(
                    self.sql["job_event_insert_created"], {"ids": plan.ids, "queue": queue}
                )
        return found

    # -- job operations ------------------------------------------------------------------

    async def get_job(self, job_id: uuid.UUID | str) -> JobRecord:
        """One job; raises JobNotFound."""
        jid = as_uuid(job_id)
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(self.sql["job_get"], {"id": jid})
            row = await cur.fetchone()
        if row is None:
            raise JobNotFound(f"job {jid} not found")
        return JobRecord.from_row(row)

    async def list_jobs(
        self,
        *,
        queue: str | None = None,
        state: JobState | str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> JobPage:
        """Jobs newest first, filtered by queue and state, a page at a time."""
        if queue is not None:
            validate_queue_name(queue)
        state_value = None if state is None else self._state(state)
        integer("limit", limit, minimum=1, maximum=10_000)
        before_created: datetime | None = None
        before_id: uuid.UUID | None = None
        if cursor is not None:
            try:
                stamp, _, raw_id = cursor.partition("|")
                before_created, before_id = datetime.fromisoformat(stamp), uuid.UUID(raw_id)
            except ValueError as exc:
                raise InvalidOption(f"invalid cursor {cursor!r}") from exc
        params = {
            "queue": queue,
            "state": state_value,
            "limit": limit,
            "before_created_at": before_created,
            "before_id": before_id,
        }
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(self.sql["job_list"], params)
            rows = await cur.fetchall()
        jobs = [JobRecord.from_row(r) for r in rows]
        next_cursor = None
        if len(jobs) == limit:
            last = jobs[-1]
            next_cursor = f"{last.created_at.isoformat()}|{last.id}"
        return JobPage(jobs, next_cursor)

    @staticmethod
    def _state(state: JobState | str) -> str:
        try:
            return JobState(state).value
        except ValueError as exc:
            known = ", ".join(s.value for s in JobState)
            raise InvalidOption(f"unknown job state {state!r}; known: {known}") from exc

    async def cancel(self, job_id: uuid.UUID | str) -> None:
        """Cancel a queued, retrying or active job. An active handler's result is then
        discarded. Raises JobNotFound or InvalidJobState."""
        await self._transition(job_id, "job_cancel", "cancel", {})

    async def resume(self, job_id: uuid.UUID | str) -> None:
        """Put a cancelled job back in the queue."""
        await self._transition(
            job_id, "job_requeue", "resume", {"from_states": ["cancelled"], "channel": self.channel}
        )

    async def retry(self, job_id: uuid.UUID | str) -> None:
        """Run a failed job again, with a fresh retry budget."""
        await self._transition(
            job_id, "job_requeue", "retry", {"from_states": ["failed"], "channel": self.channel}
        )

    async def delete_job(self, job_id: uuid.UUID | str) -> None:
        """Delete a job whatever its state; raises JobNotFound."""
        await self._transition(job_id, "job_delete", "delete", {})

    async def _transition(
        self, job_id: uuid.UUID | str, statement: str, verb: str, extra: dict[str, Any]
    ) -> None:
        jid = as_uuid(job_id)
        async with self._pool.connection() as conn:
            try:
                cur = await conn.execute(
                    self.sql[statement], {"id": jid, "now": self.clock.now(), **extra}
                )
            except psycopg.errors.UniqueViolation as exc:
                # Only requeueing can break a unique rule: the job's singleton key or
                # throttle window is taken by a job sent since.
                raise InvalidJobState(
                    f"cannot {verb} job {jid}: another job now holds its singleton key's "
                    "place (queue policy or throttle window); cancel or finish that one first"
                ) from exc
            if await cur.fetchone() is not None:
                return
            cur = await conn.execute(self.sql["job_state_of"], {"id": jid})
            row = await cur.fetchone()
        if row is None:
            raise JobNotFound(f"job {jid} not found")
        raise InvalidJobState(f"cannot {verb} job {jid}: it is {row[0]}")

    async def explain(self, job_id: uuid.UUID | str) -> JobDiagnosis:
        """Why a job is not running (start time, group limit, rate limit, fairness turn,
        or simply jobs ahead of it); raises JobNotFound."""
        jid = as_uuid(job_id)
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(self.sql["job_explain"], {"id": jid, "now": self.clock.now()})
            row = await cur.fetchone()
        if row is None:
            raise JobNotFound(f"job {jid} not found")
        return diagnose(row)

    async def stats(self, queue: str | None = None) -> list[QueueStats]:
        """Counts by state per queue (one queue, or all)."""
        if queue is not None:
            validate_queue_name(queue)
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                self.sql["queue_stats"], {"name": queue, "now": self.clock.now()}
            )
            rows = await cur.fetchall()
        if queue is not None and not rows:
            raise QueueNotFound(f"queue {queue!r} does not exist")
        return [QueueStats(*row) for row in rows]

    # -- job events and dead letters -----------------------------------------------------

    async def job_events(self, job_id: uuid.UUID | str, *, limit: int = 1000) -> list[JobEvent]:
        """A job's recorded state changes, oldest first (failures always; every transition
        when its queue has ``events`` on). Raises JobNotFound when the job does not exist
        (its events are deleted with it)."""
        jid = as_uuid(job_id)
        integer("limit", limit, minimum=1, maximum=100_000)
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(self.sql["job_event_list_job"], {"job_id": jid, "limit": limit})
            rows = await cur.fetchall()
            if not rows:
                await cur.execute(self.sql["job_state_of"], {"id": jid})
                if await cur.fetchone() is None:
                    raise JobNotFound(f"job {jid} not found")
        return [JobEvent.from_row(r) for r in rows]

    async def queue_events(
        self, queue: str, since: datetime | None = None, *, limit: int = 100
    ) -> list[JobEvent]:
        """A queue's job events, oldest first: those at or after ``since`` (an aware
        datetime), or without it the latest ``limit``. To follow a queue, pass the last
        event's ``at`` as the next ``since`` and skip the ids already seen. Raises
        QueueNotFound."""
        validate_queue_name(queue)
        integer("limit", limit, minimum=1, maximum=10_000)
        if since is not None and (not isinstance(since, datetime) or since.tzinfo is None):
            raise InvalidOption(f"since must be a timezone-aware datetime, got {since!r}")
        statement = "job_event_list_queue_latest" if since is None else "job_event_list_queue"
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(self.sql[statement], {"queue": queue, "since": since, "limit": limit})
            rows = await cur.fetchall()
        if not rows:
            await self.get_queue(queue)
        return [JobEvent.from_row(r) for r in rows]

    async def redrive(
        self, dead_letter_queue: str, ids: Iterable[uuid.UUID | str] | None = None
    ) -> int:
        """Move dead-letter copies back to the queues they failed in; returns how many.

        Without ``ids``, every copy in ``dead_letter_queue`` that is not active moves (in
        batches; copies whose source queue was deleted stay). With ``ids``, exactly those
        move, or nothing does: an id that is not a copy in that queue, is active, or whose
        source queue is gone raises (JobNotFound, InvalidJobState, QueueNotFound). A moved
        job keeps its id and data and is queued at once under its source queue's current
        policy, with a fresh retry budget; it records a ``redriven`` event when that queue
        has events on."""
        validate_queue_name(dead_letter_queue)
        await self.get_queue(dead_letter_queue)
        params: dict[str, Any] = {
            "queue": dead_letter_queue,
            "ids": None,
            "limit": _REDRIVE_BATCH,
            "now": self.clock.now(),
            "channel": self.channel,
        }
        if ids is None:
            total = 0
            while True:
                async with self._pool.connection() as conn:
                    cur = await conn.execute(self.sql["job_redrive_many"], params)
                    row = await cur.fetchone()
                moved = int(row[0]) if row else 0
                total += moved
                if moved < _REDRIVE_BATCH:
                    return total
        wanted = list(dict.fromkeys(as_uuid(i) for i in ids))
        if not wanted:
            return 0
        params.update(ids=wanted, limit=len(wanted))
        async with self._pool.connection() as conn, conn.transaction():
            cur2 = conn.cursor(row_factory=dict_row)
            await cur2.execute(self.sql["job_redrive_lock"], {"ids": wanted})
            found = {r["id"]: r for r in await cur2.fetchall()}
            for jid in wanted:
                _check_redrivable(jid, found.get(jid), dead_letter_queue)
            cur = await conn.execute(self.sql["job_redrive_many"], params)
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    # -- workers -------------------------------------------------------------------------

    async def work(
        self,
        queue: str,
        handler: Handler,
        *,
        concurrency: int = 10,
        batch_size: int | None = None,
        poll_interval: float = 1.0,
        shutdown_grace: float = 30.0,
    ) -> Worker:
        """Start a worker calling ``handler(job)`` for jobs of ``queue``, up to
        ``concurrency`` at once, and return it (it runs until :meth:`close` or
        ``worker.stop()``). See :class:`Worker` for the guarantees."""
        await self.get_queue(queue)
        worker = Worker(
            self,
            queue,
            handler,
            concurrency=concurrency,
            batch_size=batch_size,
            poll_interval=poll_interval,
            shutdown_grace=shutdown_grace,
        )
        self._workers.append(worker)
        await self._listener.start()
        if self._run_maintenance:
            await self._maintenance.start()
        await worker.start()
        return worker

    def _on_notify(self, queue: str | None) -> None:
        for worker in self._workers:
            if queue is None or worker.queue == queue:
                worker.wake()

    async def expire_leases(self, limit: int = 1000) -> int:
        """Retry (or fail) active jobs whose lease ran out; returns how many. Maintenance
        calls this; it is public for tests and operators."""
        return await self._maintenance.expire_leases(limit=limit)

    # -- cron schedules (see patchbay.queue.schedules) -----------------------------------

    @cached_property
    def schedules(self) -> Schedules:
        """The cron schedules service of this client's schema."""
        return Schedules(self)

    async def schedule(
        self,
        name: str,
        cron: str,
        queue: str,
        data: Any = None,
        *,
        tz: str = "UTC",
        catch_up: bool = False,
        **options: Unpack[SendOptions],
    ) -> ScheduleInfo:
        """Create or update a cron schedule; see :meth:`Schedules.schedule`."""
        return await self.schedules.schedule(
            name, cron, queue, data, tz=tz, catch_up=catch_up, **options
        )

    async def unschedule(self, name: str) -> None:
        """Delete a cron schedule; raises ScheduleNotFound."""
        await self.schedules.unschedule(name)

    async def list_schedules(self) -> list[ScheduleInfo]:
        """All cron schedules, by name."""
        return await self.schedules.list()

    async def preview_schedule(
        self, name: str | None = None, n: int = 10, *, cron: str | None = None, tz: str = "UTC"
    ) -> list[datetime]:
        """The next ``n`` fire times of the schedule ``name``, or of ``cron`` in ``tz``."""
        return await self.schedules.preview(name, n, cron=cron, tz=tz)


_REDRIVE_BATCH = 1000


def _check_redrivable(jid: uuid.UUID, row: dict[str, Any] | None, queue: str) -> None:
    """Raise unless the ``job_redrive_lock`` row says job ``jid`` can be redriven."""
    if row is None:
        raise JobNotFound(f"job {jid} not found")
    if row["queue"] != queue:
        raise InvalidJobState(f"cannot redrive job {jid}: it is in queue {row['queue']!r}")
    if row["origin_queue"] is None:
        raise InvalidJobState(
            f"cannot redrive job {jid}: it is not a dead-letter copy; use retry to run a "
            "failed job again"
        )
    if row["state"] == "active":
        raise InvalidJobState(
            f"cannot redrive job {jid}: a worker of {queue!r} is running it; try again "
            "when it has finished"
        )
    if not row["origin_exists"]:
        raise QueueNotFound(
            f"cannot redrive job {jid}: its source queue {row['origin_queue']!r} no longer "
            "exists; create it again first"
        )


async def _configure_session(conn: psycopg.AsyncConnection[Any]) -> None:
    # JIT compilation costs 100+ ms per execution once the planner's estimates pass
    # jit_above_cost, which the fetch statements' do on big tables; queue statements are
    # short and frequent, so compiling them never pays off.
    await conn.execute("set jit = off")
