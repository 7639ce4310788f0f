"""Handler progress: ``await job.progress(value)``, throttled per job.

Guarantee: the latest value a handler reports is stored, with at most one write per
``interval`` per job: the first report is written at once (the handler awaits it), later
ones within the interval replace each other in memory and the newest is written when the
interval ends, even if the handler has returned by then. Every write is fenced by the
job's attempt (``job_progress_set``), so a late write never lands on a newer attempt.

State model: one entry per job attempt that reported within the last interval, holding
the value still to write and the timer that writes it; the entry goes away one quiet
interval after the last report. ``writes`` counts database writes (a test signal).

How it fails: a database error is logged and that value is dropped; the next report is
tried again. ``close()`` writes what is still pending, then forgets everything.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psycopg

from ._payload import encode_payload

if TYPE_CHECKING:
    from .client import QueueClient
    from .models import Job

__all__ = ["PROGRESS_LIMIT", "ProgressWriter"]

log = logging.getLogger("patchbay.queue.progress")

PROGRESS_LIMIT = 64 * 1024
"""Largest progress value, in bytes of JSON."""


@dataclass(slots=True)
class _Entry:
    job: Job
    pending: str | None = None
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)


class ProgressWriter:
    """Writes the progress of one worker's jobs, at most once per ``interval`` seconds per
    job (default 1 s: a handler reporting in a tight loop costs one write a second)."""

    def __init__(self, client: QueueClient, *, interval: float = 1.0) -> None:
        self._client = client
        self.interval = interval
        self.writes = 0
        self._entries: dict[tuple[uuid.UUID, int], _Entry] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def report(self, job: Job, value: Any) -> None:
        """Record ``value`` as ``job``'s progress (see the module docstring)."""
        encoded = encode_payload(value, limit=PROGRESS_LIMIT, what="progress")
        key = (job.id, job.attempt)
        entry = self._entries.get(key)
        if entry is not None:
            entry.pending = encoded
            return
        entry = self._entries[key] = _Entry(job)
        entry.timer = asyncio.get_running_loop().call_later(self.interval, self._tick, key)
        await self._write(job, encoded)

    def _tick(self, key: tuple[uuid.UUID, int]) -> None:
        entry = self._entries.get(key)
        if entry is None:
            return
        if entry.pending is None:
            del self._entries[key]
            return
        value, entry.pending = entry.pending, None
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._write(entry.job, value), name="progress")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        entry.timer = loop.call_later(self.interval, self._tick, key)

    async def _write(self, job: Job, encoded: str) -> None:
        client = self._client
        try:
            async with client.pool.connection() as conn:
                await conn.execute(
                    client.sql["job_progress_set"],
                    {"id": job.id, "attempt": job.attempt, "progress": encoded},
                )
            self.writes += 1
        except psycopg.Error as exc:
            log.warning("could not store the progress of job %s: %s", job.id, exc)

    async def close(self) -> None:
        """Write every pending value now and stop the timers."""
        entries = list(self._entries.values())
        self._entries.clear()
        for entry in entries:
            if entry.timer is not None:
                entry.timer.cancel()
        writes = [self._write(e.job, e.pending) for e in entries if e.pending is not None]
        await asyncio.gather(*writes, *self._tasks, return_exceptions=True)
