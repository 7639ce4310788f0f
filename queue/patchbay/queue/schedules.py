"""Cron schedules: a job sent to a queue at each fire time of a five-field cron expression in
an IANA time zone, exactly once per fire however many daemons run.

::

    await client.schedule("nightly", "0 3 * * *", "sync", {"full": True}, tz="Europe/Berlin")
    await client.preview_schedule("nightly", 5)      # the next five fire times
    await client.unschedule("nightly")

Guarantee. Each (schedule, fire time) is enqueued at most once: the ``schedule_fire`` row
of the fire, whose primary key is (schedule, fire_at), is inserted in the same transaction
as the job (sent with ``client.send(..., conn=)``, so queue policies and job events apply),
and the job's id is derived from the pair (UUID version 5), so a repeated enqueue is a
no-op both at the fire and at the job level. This holds for any number of
daemons ticking at once, with or without the maintenance lock (which only spares them the
same work). Each fire is enqueued at least once if some daemon ticks within
``misfire_grace`` of it; fires older than that follow the catch-up rule below.

Fire times come from the database clock (``coalesce(%(now)s, now())``; the client's
:class:`~patchbay.queue.clock.FrozenClock` in tests), never from a daemon's own clock.

The DST rule. The cron expression matches wall-clock times in the schedule's zone; each
matching wall-clock time fires at the first instant at which the zone's clocks read that
time or later. Hence:

- a time that does not exist (in the gap of a spring-forward transition) fires once, at the
  first instant after the gap: in Europe/Berlin, ``30 2 * * *`` fires at 03:00 CEST on the
  last Sunday of March; in Australia/Lord_Howe (a 30-minute shift), ``15 2 * * *`` fires at
  02:30 on the first Sunday of October;
- a time that occurs twice (in the overlap of a fall-back transition) fires once, at its
  first occurrence (the summer-time one); the repeated part fires nothing: in Berlin,
  ``*/30 * * * *`` fires at 02:00 and 02:30 CEST, then at 03:00 CET, an hour later;
- matching times that land on the same instant are one fire: ``*/30 * * * *`` fires once at
  03:00 CEST for 02:00 and 02:30 (in the gap) and 03:00.

So no matching wall-clock time is skipped and none fires twice. Property tests check this
over whole years in Europe/Berlin, America/New_York, Australia/Lord_Howe and others.

Missed fires and catch-up. A tick enqueues the latest fire that is due. Without catch-up it
does so only if that fire is at most ``misfire_grace`` old (default: 60 seconds, or three
maintenance intervals if longer); older fires were missed while no daemon ran and are
skipped (recorded in ``schedule_fire`` with no job). Earlier due fires are never sent one by
one: with ``catch_up=True`` a tick after downtime sends exactly one job for all the fires
missed, keyed on the latest of them (its ``schedule_fire`` row's ``covers_from`` is the
earliest).

Edits. ``schedule()`` on an existing name updates it and bumps its ``revision``; a tick
claims a fire by compare-and-set on (revision, next fire), so a tick that read the row
before the edit does nothing after it. Changing only the data, queue, options or catch-up
keeps the pending next fire (re-applying a schedule at every deploy loses nothing). A new
cron expression or zone takes effect from the edit time: the next fire is the first one
after it, and a fire of the old expression that was due but not yet enqueued is dropped. A
fire time already enqueued is never enqueued again, whatever the edits.

State model. A ``schedule`` row holds the definition, ``next_fire_at`` (the first fire not
yet handled), ``last_fire_at``/``last_job_id`` and ``revision``; a ``schedule_fire`` row per
handled fire, pruned after ``fire_retention``. :class:`Schedules` counts ``ticks``,
``enqueued``, ``skipped`` and ``claims_lost`` (to another tick or an edit) and sets
``tick_done`` after each tick (test signals).

How it fails. Each fire is one transaction (a savepoint inside the maintenance pass): a
crash before commit leaves the fire due for the next tick, after commit it is done. A
schedule whose job cannot be sent (its stored options no longer valid, its queue deleted
mid-tick) is logged at each tick and left due, so fixing it resumes it, its missed fires
following the catch-up rule. Losing the database ends the tick; the next one carries on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Unpack, cast

import psycopg
from psycopg.rows import dict_row

from ._cron import CronSchedule
from ._send import SendBuilder
from .errors import (
    InvalidName,
    InvalidOption,
    InvalidSchedule,
    QueueError,
    QueueNotFound,
    ScheduleNotFound,
)
from .settings import SendOptions, integer, seconds

if TYPE_CHECKING:
    from .client import QueueClient

__all__ = ["ScheduleFire", "ScheduleInfo", "Schedules", "TickResult", "fire_job_id"]

log = logging.getLogger("patchbay.queue.schedules")

_SCHEDULE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_\-.:/]{0,199}$")
_FIRE_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "patchbay:schedule-fire")
# A lost claim means another tick or an edit moved the row; re-reading it a few times is
# enough for the tick to end with the schedule handled up to its clock.
_CLAIM_ATTEMPTS = 5
_PRUNE_EVERY_S = 60.0
_CRON_CACHE_SIZE = 4096
_ANY_ID = uuid.UUID(int=0)


def validate_schedule_name(name: object) -> str:
    """Return ``name`` if it is a valid schedule name, else raise :class:`InvalidName`."""
    if not isinstance(name, str) or not _SCHEDULE_NAME.match(name):
        raise InvalidName(
            f"invalid schedule name {name!r}: use 1-200 characters of letters, digits and "
            "'_ - . : /', starting with a letter, digit or '_'"
        )
    return name


def fire_job_id(schedule: str, fire_at: datetime) -> uuid.UUID:
    """The id of the job a schedule sends for a fire time (the same in every process)."""
    stamp = fire_at.astimezone(UTC).isoformat(timespec="microseconds")
    return uuid.uuid5(_FIRE_NAMESPACE, f"{schedule}\x00{stamp}")


@dataclass(frozen=True, slots=True)
class ScheduleInfo:
    """A schedule as stored; ``options`` are its send options (durations in seconds)."""

    name: str
    cron: str
    tz: str
    queue: str
    data: Any
    options: dict[str, Any]
    catch_up: bool
    next_fire_at: datetime
    last_fire_at: datetime | None
    last_job_id: uuid.UUID | None
    revision: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ScheduleInfo:
        """Build from a ``schedule`` row."""
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (times as ISO 8601, ids as strings)."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, datetime):
                out[key] = value.isoformat()
            elif isinstance(value, uuid.UUID):
                out[key] = str(value)
        return out


@dataclass(frozen=True, slots=True)
class ScheduleFire:
    """A handled fire of a schedule; ``job_id`` is None when it was skipped as missed, and
    ``covers_from`` is the earliest fire it stands for (``fire_at`` unless some were
    missed)."""

    schedule: str
    fire_at: datetime
    covers_from: datetime
    job_id: uuid.UUID | None
    fired_at: datetime


@dataclass(slots=True)
class TickResult:
    """What one tick did: schedules found due, fires enqueued or skipped as missed, and
    schedules that failed (logged, left due)."""

    due: int = 0
    enqueued: int = 0
    skipped: int = 0
    failed: int = 0
    fires: list[ScheduleFire] = field(default_factory=list)


class Schedules:
    """The cron schedules of one schema; see the module docstring for the guarantees.

    Settings: ``misfire_grace`` seconds, how late a fire may be enqueued without catch-up
    (default: 60, or three maintenance intervals if longer; shorter skips more fires after
    a stall, longer sends later ones); ``fire_retention`` seconds the ``schedule_fire``
    rows are kept (default 7 days; a fire older than this is no longer guarded against a
    repeat by its row, only by its job's id while the job exists); ``batch_size``, the due
    schedules one tick handles (default 500; the rest wait for the next tick).
    """

    def __init__(
        self,
        client: QueueClient,
        *,
        misfire_grace: float | timedelta | None = None,
        fire_retention: float | timedelta = 7 * 24 * 3600.0,
        batch_size: int = 500,
    ) -> None:
        self._client = client
        if misfire_grace is None:
            misfire_grace = max(60.0, 3 * client.maintenance.interval)
        self.misfire_grace = seconds("misfire_grace", misfire_grace)
        self.fire_retention = seconds("fire_retention", fire_retention, allow_zero=False)
        self.batch_size = integer("batch_size", batch_size, minimum=1, maximum=100_000)
        self._sends = SendBuilder(client.channel, client.max_payload_bytes, client.clock)
        self._crons: dict[tuple[str, str], CronSchedule] = {}
        self._last_prune = float("-inf")
        self.ticks = 0
        self.enqueued = 0
        self.skipped = 0
        self.claims_lost = 0
        self.tick_done = asyncio.Event()

    # -- definitions ---------------------------------------------------------------------

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
        """Create or update the schedule ``name``: send ``data`` to ``queue`` at each fire
        of ``cron`` (five fields, or ``@daily`` and the like) in the zone ``tz``.

        ``options`` are send options (priority, retries, expire_in, group, singleton_key,
        a ``start_after`` delay, ...), validated as ``send`` validates them; each fire is
        sent with them, so the queue's policies apply. Not allowed: ``id`` (each fire's job
        id is derived from the schedule and fire time) and ``debounce``. Raises
        InvalidName, InvalidSchedule, InvalidOption, InvalidPayload or QueueNotFound, and
        then writes nothing."""
        validate_schedule_name(name)
        spec = CronSchedule(cron, tz)
        if not isinstance(catch_up, bool):
            raise InvalidOption(f"catch_up must be true or false, got {catch_up!r}")
        payload, stored = self._validate_send(queue, data, dict(options))
        client = self._client
        sql = client.sql
        async with client.pool.connection() as conn, conn.transaction():
            now = await self._now(conn)
            cur = await conn.execute(sql["schedule_lock"], {"name": name})
            current = await cur.fetchone()
            next_fire: datetime | None = None
            if current is not None and self._same_times(current[0], current[1], spec):
                next_fire = current[2]
            if next_fire is None:
                next_fire = spec.next_after(now)
            params = {
                "name": name,
                "cron": " ".join(cron.split()),
                "tz": spec.zone.key,
                "queue": queue,
                "data": payload,
                "options": json.dumps(stored, allow_nan=False, sort_keys=True),
                "catch_up": catch_up,
                "next_fire_at": next_fire,
                "now": now,
            }
            try:
                await conn.execute(sql["schedule_upsert"], params)
            except psycopg.errors.ForeignKeyViolation as exc:
                raise QueueNotFound(
                    f"queue {queue!r} does not exist; create it with create_queue"
                ) from exc
        return await self.get(name)

    def _validate_send(
        self, queue: str, data: Any, options: dict[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        if "id" in options:
            raise InvalidOption(
                "a schedule's jobs get their id from the schedule and the fire time; "
                "id is not allowed"
            )
        if options.get("debounce") is not None:
            raise InvalidOption(
                "a schedule's fires cannot be debounced (each fire is its own job); use "
                "throttle or a singleton_key to keep fires from piling up"
            )
        if isinstance(options.get("start_after"), datetime):
            raise InvalidOption(
                "a schedule's start_after must be a delay (seconds or a timedelta), not a datetime"
            )
        stored = {
            key: value.total_seconds() if isinstance(value, timedelta) else value
            for key, value in options.items()
            if value is not None
        }
        # The same validation as the send of each fire (unknown options, ranges, queue
        # name, payload), with the kind of id the fires get.
        _, params = self._sends.one(queue, data, cast(SendOptions, {**stored, "id": _ANY_ID}))
        return str(params["data"][0]), stored

    def _same_times(self, cron: str, tz: str, spec: CronSchedule) -> bool:
        try:
            return self._cron(cron, tz).key == spec.key
        except InvalidSchedule:
            return False

    def _cron(self, cron: str, tz: str) -> CronSchedule:
        key = (cron, tz)
        spec = self._crons.get(key)
        if spec is None:
            if len(self._crons) >= _CRON_CACHE_SIZE:
                self._crons.clear()
            spec = self._crons[key] = CronSchedule(cron, tz)
        return spec

    async def _now(self, conn: psycopg.AsyncConnection[Any]) -> datetime:
        cur = await conn.execute(
            self._client.sql["schedule_now"], {"now": self._client.clock.now()}
        )
        row = await cur.fetchone()
        assert row is not None
        now: datetime = row[0]
        return now

    async def unschedule(self, name: str) -> None:
        """Delete a schedule; fires already enqueued stay. Raises ScheduleNotFound."""
        validate_schedule_name(name)
        async with self._client.pool.connection() as conn:
            cur = await conn.execute(self._client.sql["schedule_delete"], {"name": name})
            if await cur.fetchone() is None:
                raise ScheduleNotFound(f"schedule {name!r} does not exist")

    async def get(self, name: str) -> ScheduleInfo:
        """One schedule; raises ScheduleNotFound."""
        validate_schedule_name(name)
        async with self._client.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(self._client.sql["schedule_get"], {"name": name})
            row = await cur.fetchone()
        if row is None:
            raise ScheduleNotFound(f"schedule {name!r} does not exist")
        return ScheduleInfo.from_row(row)

    async def preview(
        self,
        name: str | None = None,
        n: int = 10,
        *,
        cron: str | None = None,
        tz: str = "UTC",
    ) -> list[datetime]:
        """The next ``n`` fire times after now (database clock), in the schedule's zone:
        of the schedule ``name``, or of ``cron`` in ``tz``."""
        integer("n", n, minimum=1, maximum=10_000)
        if (name is None) == (cron is None):
            raise InvalidOption("preview takes a schedule name or a cron expression, not both")
        if name is not None:
            info = await self.get(name)
            spec = self._cron(info.cron, info.tz)
        else:
            spec = CronSchedule(str(cron), tz)
        async with self._client.pool.connection() as conn:
            now = await self._now(conn)
        return spec.preview(now, n)

    async def fires(self, name: str, limit: int = 100) -> list[ScheduleFire]:
        """The schedule's handled fires, newest first (kept for ``fire_retention``)."""
        validate_schedule_name(name)
        integer("limit", limit, minimum=1, maximum=10_000)
        async with self._client.pool.connection() as conn:
            cur = await conn.execute(
                self._client.sql["schedule_fire_list"], {"name": name, "limit": limit}
            )
            return [ScheduleFire(*row) for row in await cur.fetchall()]

    # -- ticks ---------------------------------------------------------------------------

    async def tick(self, *, conn: psycopg.AsyncConnection[Any] | None = None) -> TickResult:
        """Enqueue the due fires of every schedule, now (database clock).

        Safe to run in any number of processes at once. With ``conn``, runs on that
        connection, each fire in a savepoint of its open transaction (maintenance does
        this under its lock); otherwise each fire commits on its own."""
        if conn is None:
            async with self._client.pool.connection() as own:
                return await self._tick(own)
        return await self._tick(conn)

    async def _tick(self, conn: psycopg.AsyncConnection[Any]) -> TickResult:
        client = self._client
        result = TickResult()
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(
            client.sql["schedule_list_due"],
            {"now": client.clock.now(), "limit": self.batch_size},
        )
        due = await cur.fetchall()
        result.due = len(due)
        for row in due:
            await self._handle(conn, row, result)
        if time.monotonic() - self._last_prune >= _PRUNE_EVERY_S:
            await conn.execute(
                client.sql["schedule_fire_prune"],
                {"now": client.clock.now(), "retention_s": self.fire_retention, "limit": 10_000},
            )
            self._last_prune = time.monotonic()
        self.ticks += 1
        self.enqueued += result.enqueued
        self.skipped += result.skipped
        self.tick_done.set()
        return result

    async def _handle(
        self, conn: psycopg.AsyncConnection[Any], row: dict[str, Any], result: TickResult
    ) -> None:
        name = row["name"]
        for _ in range(_CLAIM_ATTEMPTS):
            try:
                if await self._claim(conn, row, result):
                    return
            except (psycopg.OperationalError, psycopg.InterfaceError):
                raise
            except (QueueError, psycopg.Error, ValueError, RuntimeError) as exc:
                # ValueError covers croniter's errors (an expression that stopped matching).
                # One broken schedule must not stop the others; it stays due.
                result.failed += 1
                log.error("schedule %r: cannot enqueue its fire: %s", name, exc)
                return
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                self._client.sql["schedule_get_due"], {"name": name, "now": row["now"]}
            )
            again = await cur.fetchone()
            if again is None:
                return
            row = again
        log.warning("schedule %r: claim lost %d times in one tick", name, _CLAIM_ATTEMPTS)

    async def _claim(
        self, conn: psycopg.AsyncConnection[Any], row: dict[str, Any], result: TickResult
    ) -> bool:
        """Handle the schedule's due fires; returns False if another tick or an edit changed
        the row first."""
        now: datetime = row["now"]
        spec = self._cron(row["cron"], row["tz"])
        expected: datetime = row["next_fire_at"]
        latest = spec.last_at_or_before(now)
        fire_at = latest if latest is not None and latest >= expected else expected
        on_time = (now - fire_at).total_seconds() <= self.misfire_grace
        job_id = fire_job_id(row["name"], fire_at) if on_time or row["catch_up"] else None
        params = {
            "name": row["name"],
            "revision": row["revision"],
            "expected_next_fire_at": expected,
            "next_fire_at": spec.next_after(now),
            "fire_at": fire_at,
            "covers_from": min(expected, fire_at),
            "job_id": job_id,
            "now": now,
        }
        sql = self._client.sql
        async with conn.transaction():
            cur = await conn.execute(sql["schedule_claim_fire"], params)
            counts = await cur.fetchone()
            assert counts is not None
            claimed, recorded = counts
            if not claimed:
                self.claims_lost += 1
                return False
            if recorded and job_id is not None:
                # A fire is a send, in this transaction: the queue's policies, singleton
                # keys and job events apply as to any other send.
                options = cast(SendOptions, {**row["options"], "id": job_id})
                await self._client.send(row["queue"], row["data"], conn=conn, **options)
        if recorded:
            fire = ScheduleFire(row["name"], fire_at, params["covers_from"], job_id, now)
            result.fires.append(fire)
            if job_id is None:
                result.skipped += 1
                log.info(
                    "schedule %r: skipped fire(s) %s..%s, missed while no daemon ran",
                    row["name"],
                    params["covers_from"].isoformat(),
                    fire_at.isoformat(),
                )
            else:
                result.enqueued += 1
        return True

    # Last, so that ``list`` in the annotations above is the builtin.
    async def list(self) -> list[ScheduleInfo]:
        """All schedules, by name."""
        async with self._client.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(self._client.sql["schedule_list"])
            return [ScheduleInfo.from_row(r) for r in await cur.fetchall()]
