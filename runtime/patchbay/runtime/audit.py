"""The audit stream of integrations: what happened to each one, readable and exportable.

What it holds
    An integration's lifecycle events (``integration_event``: created, paused, resumed,
    needs_attention, resolved, synced with its counts, config_changed, ...; written by the
    registry and the failure policy in the transactions that made the change) and the job
    events of its jobs (``job_event``: failures always, every transition on queues whose
    ``events`` setting is on). :class:`AuditLog` reads both as one time-ordered list of
    :class:`AuditEntry`; ``patchbay integrations events <id> --jobs`` prints it.

Export guarantee
    :class:`AuditExporter` delivers every entry of the stream to an :class:`AuditSink`
    (a file of JSON lines, an HTTP endpoint, or your own) at least once, in batches, each
    batch in id order per source. Its position is a row of ``audit_export_cursor``: it
    moves only after the sink accepted a batch, in the transaction holding the row's lock,
    so any number of daemons may run the same exporter and one delivers at a time. An
    entry may come twice (a crash after the sink accepted and before the position moved,
    or a daemon taking over), never zero times: sinks dedupe on :attr:`AuditEntry.key`.

State model
    Event ids are handed out at insert, not at commit: a transaction that commits late
    makes an id below one already delivered appear. The exporter therefore moves its
    position only over ids it has seen, and over a gap only once every transaction that
    was running when the gap was first seen has ended (the snapshot's ``xmin`` passed the
    ``xmax`` of the read that found it) and ``gap_grace`` seconds passed; entries above a
    gap are delivered meanwhile and remembered, so they are not sent again by this process.
    So a writing transaction left open anywhere on the server (the snapshot's ``xmin`` is
    the server's) holds the position back, and delivery with it once ``batch_size``
    entries wait above the gap, until it ends; read-only transactions (pg_dump) do not.

How it fails
    A sink that raises (or times out) is logged; the batch is retried after ``retry_delay``
    seconds, doubling up to ``retry_delay_max``. A database error is logged and retried the
    same way. Nothing is lost while the rows exist: ``integration_event`` is kept; job
    events go with their job (queue retention), so an exporter stopped for longer than
    the retention misses the job events of deleted jobs, never lifecycle events.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import httpx
from psycopg.rows import dict_row

from patchbay.queue import InvalidOption, QueueClient, Statements

__all__ = [
    "AuditEntry",
    "AuditExporter",
    "AuditLog",
    "AuditSink",
    "FileSink",
    "HttpSink",
    "worker_identity",
]

log = logging.getLogger("patchbay.runtime.audit")

Source = Literal["integration", "job"]

_MAX_LIMIT = 10_000
_identity: tuple[int, str] | None = None


def worker_identity() -> str:
    """Who runs this process, ``<host>:<pid>``: recorded in ``synced`` events and fan-out
    outputs, so the audit stream says which daemon did the work."""
    global _identity
    pid = os.getpid()
    if _identity is None or _identity[0] != pid:  # recomputed in a forked child
        _identity = (pid, f"{socket.gethostname()}:{pid}")
    return _identity[1]


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One entry of the audit stream. ``source`` says which log it comes from
    (``integration``: a lifecycle event; ``job``: a job event, with ``job_id``, ``queue``,
    ``attempt`` and the states); ``id`` is its id within that log; ``data`` holds details
    (never a secret value; a job error's traceback is left out)."""

    source: Source
    id: int
    integration_id: str
    tenant_id: str | None
    at: datetime
    kind: str
    data: Mapping[str, Any]
    job_id: uuid.UUID | None = None
    queue: str | None = None
    attempt: int | None = None
    from_state: str | None = None
    to_state: str | None = None

    @property
    def key(self) -> str:
        """Unique in the stream (``integration:<id>`` or ``job:<id>``): what sinks dedupe
        on."""
        return f"{self.source}:{self.id}"

    @classmethod
    def from_integration_row(cls, row: Mapping[str, Any]) -> AuditEntry:
        """From an ``integration_event`` row."""
        return cls(
            source="integration",
            id=row["id"],
            integration_id=row["integration_id"],
            tenant_id=row["tenant_id"],
            at=row["at"],
            kind=row["kind"],
            data=dict(row["data"] or {}),
        )

    @classmethod
    def from_job_row(cls, row: Mapping[str, Any]) -> AuditEntry:
        """From a ``job_event`` row joined with its job's integration and tenant."""
        data = dict(row["data"] or {})
        error = data.get("error")
        if isinstance(error, dict) and "traceback" in error:
            data["error"] = {k: v for k, v in error.items() if k != "traceback"}
        return cls(
            source="job",
            id=row["id"],
            integration_id=row["integration_id"],
            tenant_id=row["tenant_id"],
            at=row["at"],
            kind=row["kind"],
            data=data,
            job_id=row["job_id"],
            queue=row["queue"],
            attempt=row["attempt"],
            from_state=row["from_state"],
            to_state=row["to_state"],
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (job fields only for job events)."""
        doc: dict[str, Any] = {
            "key": self.key,
            "source": self.source,
            "id": self.id,
            "integration_id": self.integration_id,
            "tenant_id": self.tenant_id,
            "at": self.at.isoformat(),
            "kind": self.kind,
            "data": dict(self.data),
        }
        if self.source == "job":
            doc.update(
                job_id=str(self.job_id),
                queue=self.queue,
                attempt=self.attempt,
                from_state=self.from_state,
                to_state=self.to_state,
            )
        return doc


def _order(entry: AuditEntry) -> tuple[datetime, int, int]:
    return entry.at, 0 if entry.source == "integration" else 1, entry.id


def _limit(limit: object) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= _MAX_LIMIT:
        raise InvalidOption(f"limit must be 1-{_MAX_LIMIT}, got {limit!r}")
    return limit


class AuditLog:
    """Reads the audit stream of one integration (the queue client gives the database)."""

    def __init__(self, queue: QueueClient) -> None:
        self.queue = queue
        self._sql = Statements(queue.schema, package="patchbay.runtime")

    async def timeline(
        self,
        integration: str,
        *,
        since: datetime | None = None,
        limit: int = 100,
        jobs: bool = True,
    ) -> list[AuditEntry]:
        """The integration's lifecycle events and (``jobs``) its job events at or after
        ``since`` (timezone-aware; None: from the start), oldest first, at most ``limit``
        (1-10000). An unknown integration has none."""
        limit = _limit(limit)
        if since is not None and since.tzinfo is None:
            raise InvalidOption("since must be timezone-aware")
        params = {"integration": integration, "since": since, "limit": limit}
        async with self.queue.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(self._sql["integration_event_list_timeline"], params)
            entries = [AuditEntry.from_integration_row(r) for r in await cur.fetchall()]
            if jobs:
                await cur.execute(self._sql["job_event_list_timeline"], params)
                entries += [AuditEntry.from_job_row(r) for r in await cur.fetchall()]
        entries.sort(key=_order)
        return entries[:limit]


# -- export ----------------------------------------------------------------------------------


class AuditSink(Protocol):
    """Where exported entries go. Called with a batch (never empty); returning means the
    batch is accepted, raising means it is sent again later. Make it idempotent on
    :attr:`AuditEntry.key`: an entry may come twice."""

    async def __call__(self, entries: Sequence[AuditEntry], /) -> None:
        """Deliver one batch."""
        ...


@dataclass(slots=True)
class FileSink:
    """Appends each entry as one JSON line to ``path`` and syncs the file before returning
    (so an accepted batch survives a crash)."""

    path: Path

    async def __call__(self, entries: Sequence[AuditEntry], /) -> None:
        """Append the batch."""
        text = "".join(json.dumps(e.to_json(), sort_keys=True) + "\n" for e in entries)
        await asyncio.to_thread(self._append, text)

    def _append(self, text: str) -> None:
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())


@dataclass(slots=True)
class HttpSink:
    """POSTs ``{"entries": [...]}`` (JSON) to ``url``; a 2xx answer accepts the batch,
    anything else (or no answer within ``timeout`` seconds) has it sent again.
    ``headers`` go with every request (e.g. an ``Authorization``)."""

    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 10.0
    transport: httpx.AsyncBaseTransport | None = None

    async def __call__(self, entries: Sequence[AuditEntry], /) -> None:
        """POST the batch."""
        body = {"entries": [e.to_json() for e in entries]}
        async with httpx.AsyncClient(timeout=self.timeout, transport=self.transport) as http:
            response = await http.post(self.url, json=body, headers=dict(self.headers))
        if not response.is_success:
            raise RuntimeError(f"audit sink {self.url} answered {response.status_code}")


@dataclass(slots=True)
class _Gap:
    upto: int  # the highest id seen when the gap was found
    xmax: int  # the snapshot's xmax then: transactions that could fill the gap are below
    seen: float  # monotonic time it was found


@dataclass(slots=True)
class _Horizon:
    """The position of one source: every id up to ``settled`` that will ever be visible has
    been delivered; ``sent`` holds delivered ids above it."""

    settled: int
    gap_grace: float
    sent: set[int] = field(default_factory=set)
    gap: _Gap | None = None

    def reset(self, settled: int) -> None:
        if settled != self.settled:
            self.settled, self.sent, self.gap = settled, set(), None

    def advance(
        self, ids: Sequence[int], xmin: int, xmax: int, now: float, *, truncated: bool
    ) -> int:
        """The settled position after a read that saw ``ids`` (sorted, all above the
        position) with a snapshot of bounds ``xmin``/``xmax``; ``truncated``: the read
        stopped at its limit, so it says nothing of ids above its last."""
        pos = self.settled
        gap = self.gap
        if gap is not None and xmin >= gap.xmax and now - gap.seen >= self.gap_grace:
            # Every transaction that could have held an id up to gap.upto has ended, and
            # this read started after that: ids up to there that it did not see never come.
            reach = min(gap.upto, ids[-1]) if truncated and ids else gap.upto
            pos = max(pos, reach)
            if reach >= gap.upto:
                self.gap = None
        for event_id in ids:
            if event_id <= pos:
                continue
            if event_id != pos + 1:
                break
            pos = event_id
        if ids and ids[-1] > pos and self.gap is None:
            self.gap = _Gap(upto=ids[-1], xmax=xmax, seen=now)
        return pos

    def commit(self, settled: int, delivered: Sequence[int]) -> None:
        self.sent.update(delivered)
        self.settled = settled
        self.sent = {i for i in self.sent if i > settled}


class AuditExporter:
    """Delivers the audit stream to ``sink`` (see the module docstring for the guarantee).

    ``name`` keys its position (one row of ``audit_export_cursor``; a new name starts at
    the beginning of the stream, or after what exists with ``from_end=True``).
    ``batch_size`` (default 500) entries per source per round; ``poll_interval`` seconds
    (default 1.0) between rounds that found nothing; ``sink_timeout`` seconds (default 30)
    a delivery may take (the position row stays locked meanwhile); ``retry_delay`` /
    ``retry_delay_max`` seconds (default 1 / 60) after a failure; ``gap_grace`` seconds
    (default 2) before an id gap may be passed (see the module docstring).
    """

    def __init__(
        self,
        queue: QueueClient,
        sink: AuditSink,
        *,
        name: str = "default",
        from_end: bool = False,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        sink_timeout: float = 30.0,
        retry_delay: float = 1.0,
        retry_delay_max: float = 60.0,
        gap_grace: float = 2.0,
    ) -> None:
        if not name or len(name) > 200:
            raise InvalidOption("an exporter's name must be 1-200 characters")
        if not 1 <= batch_size <= _MAX_LIMIT:
            raise InvalidOption(f"batch_size must be 1-{_MAX_LIMIT}")
        for label, value in (
            ("poll_interval", poll_interval),
            ("sink_timeout", sink_timeout),
            ("retry_delay", retry_delay),
            ("retry_delay_max", retry_delay_max),
        ):
            if not value > 0:
                raise InvalidOption(f"{label} must be > 0 seconds")
        if gap_grace < 0:
            raise InvalidOption("gap_grace must be >= 0 seconds")
        self.queue = queue
        self.sink = sink
        self.name = name
        self.from_end = from_end
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.sink_timeout = sink_timeout
        self.retry_delay = retry_delay
        self.retry_delay_max = retry_delay_max
        self._sql = Statements(queue.schema, package="patchbay.runtime")
        self._events = _Horizon(0, gap_grace)
        self._jobs = _Horizon(0, gap_grace)
        self._created = False
        self._more = False
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        #: Test signals: entries delivered by this process, rounds run, failures.
        self.delivered = 0
        self.rounds = 0
        self.failures = 0
        self.round_done = asyncio.Event()

    async def export_once(self) -> int:
        """One round: deliver what is new (if no other daemon holds the position); returns
        how many entries went to the sink. Raises what the sink or the database raised
        (the position then stays)."""
        if not self._created:
            async with self.queue.pool.connection() as conn:
                await conn.execute(
                    self._sql["audit_export_cursor_create"],
                    {"name": self.name, "from_end": self.from_end},
                )
            self._created = True
        async with self.queue.pool.connection() as conn, conn.transaction():
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(self._sql["audit_export_cursor_lock"], {"name": self.name})
            position = await cur.fetchone()
            if position is None:
                return 0  # another daemon is exporting
            # Another daemon may have moved the position since this one last held it.
            self._events.reset(position["event_id"])
            self._jobs.reset(position["job_event_id"])
            batch: list[AuditEntry] = []
            now = time.monotonic()
            await cur.execute(
                self._sql["integration_event_list_export"],
                {"after": self._events.settled, "limit": self.batch_size},
            )
            rows = await cur.fetchall()
            event_ids = [r["id"] for r in rows if r["id"] is not None]
            batch += [
                AuditEntry.from_integration_row(r)
                for r in rows
                if r["id"] is not None and r["id"] not in self._events.sent
            ]
            more = len(event_ids) >= self.batch_size
            events_to = self._events.advance(
                event_ids, rows[0]["xmin"], rows[0]["xmax"], now, truncated=more
            )
            await cur.execute(
                self._sql["job_event_list_export"],
                {"after": self._jobs.settled, "limit": self.batch_size},
            )
            rows = await cur.fetchall()
            job_ids = [r["id"] for r in rows if r["id"] is not None]
            batch += [
                AuditEntry.from_job_row(r)
                for r in rows
                if r["id"] is not None
                and r["integration_id"] is not None
                and r["id"] not in self._jobs.sent
            ]
            more = more or len(job_ids) >= self.batch_size
            jobs_to = self._jobs.advance(
                job_ids,
                rows[0]["xmin"],
                rows[0]["xmax"],
                now,
                truncated=len(job_ids) >= self.batch_size,
            )
            if batch:
                batch.sort(key=_order)
                async with asyncio.timeout(self.sink_timeout):
                    await self.sink(batch)
            moved = (events_to, jobs_to) != (self._events.settled, self._jobs.settled)
            if moved or batch:
                await cur.execute(
                    self._sql["audit_export_cursor_advance"],
                    {
                        "name": self.name,
                        "event_id": events_to,
                        "job_event_id": jobs_to,
                        "delivered": len(batch),
                    },
                )
        # Committed: the sink has the batch and the position moved with it.
        self._events.commit(events_to, [e.id for e in batch if e.source == "integration"])
        self._jobs.commit(jobs_to, [e.id for e in batch if e.source == "job"])
        self.delivered += len(batch)
        # More to read at once, unless the reads only met entries held above a gap.
        self._more = more and (moved or bool(batch))
        return len(batch)

    async def position(self) -> dict[str, Any] | None:
        """The stored position: ``event_id``, ``job_event_id``, ``delivered`` (all
        daemons), ``updated_at``; None before the first round."""
        async with self.queue.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(self._sql["audit_export_cursor_get"], {"name": self.name})
            return await cur.fetchone()

    def start(self) -> None:
        """Export in the background until :meth:`stop`."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"audit-export:{self.name}"
            )

    def wake(self) -> None:
        """Run the next round now instead of after the poll interval."""
        self._wake.set()

    async def stop(self) -> None:
        """Stop exporting (a batch being delivered is abandoned; it comes again later)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                await self.export_once()
                failures = 0
                # A read that stopped at its limit left more to do at once.
                delay = 0.0 if self._more else self.poll_interval
            except Exception as exc:
                failures += 1
                self.failures += 1
                delay = min(self.retry_delay_max, self.retry_delay * 2 ** (failures - 1))
                log.warning(
                    "audit export %r failed (%s: %s); retrying in %.1fs",
                    self.name,
                    type(exc).__name__,
                    exc,
                    delay,
                )
            self.rounds += 1
            self.round_done.set()
            if delay:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=delay)
