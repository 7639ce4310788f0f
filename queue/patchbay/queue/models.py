"""What the queue hands back: job records, the handler's view of a job, queue stats."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .settings import QueueSettings

__all__ = [
    "Job",
    "JobEvent",
    "JobEventKind",
    "JobPage",
    "JobRecord",
    "JobState",
    "QueueInfo",
    "QueueStats",
]


class JobState(enum.StrEnum):
    """The states of a job; see docs/job-states.md for the transitions."""

    QUEUED = "queued"
    RETRYING = "retrying"
    ACTIVE = "active"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(slots=True, eq=False)
class Job:
    """The job a handler is called with.

    ``attempt`` counts from 1. ``heartbeat()`` extends the lease by the job's ``expire_in``;
    a handler that runs longer than its lease without heartbeating is cancelled and the job
    retried. ``progress(value)`` reports how far the handler got (see
    :attr:`JobRecord.progress`).
    """

    id: uuid.UUID
    queue: str
    data: Any
    attempt: int
    priority: int
    retry_limit: int
    expire_in: float
    created_at: datetime
    _heartbeat: Callable[[Job], Awaitable[bool]] = field(repr=False)
    _progress: Callable[[Job, Any], Awaitable[None]] | None = field(default=None, repr=False)

    async def heartbeat(self) -> bool:
        """Extend this job's lease; returns False if the lease was already lost."""
        return await self._heartbeat(self)

    async def progress(self, value: Any) -> None:
        """Report progress: any JSON value (a fraction, a count, a dict), stored on the job
        and shown by ``get_job`` and ``patchbay jobs show``.

        Call it as often as you like: writes are throttled (at most about one per second
        per job, the latest value wins and is written even if the handler returns first).
        Raises InvalidPayload or PayloadTooLarge (over 64 KiB) for a value it cannot
        store. Progress does not extend the lease; call :meth:`heartbeat` for that."""
        if self._progress is not None:
            await self._progress(self, value)

    @property
    def is_last_attempt(self) -> bool:
        """True when a failure now moves the job to failed instead of retrying."""
        return self.attempt > self.retry_limit


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A job row as stored."""

    id: uuid.UUID
    queue: str
    state: JobState
    priority: int
    data: Any
    output: Any
    error: dict[str, Any] | None
    attempt: int
    retry_limit: int
    retry_delay: float
    retry_backoff: bool
    retry_delay_max: float | None
    expire_in: float
    dead_letter: str | None
    start_after: datetime
    lease_expires_at: datetime | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    progress: Any = None
    origin_queue: str | None = None
    origin_id: uuid.UUID | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> JobRecord:
        """Build from a ``job_get``/``job_list`` row."""
        return cls(
            id=row["id"],
            queue=row["queue"],
            state=JobState(row["state"]),
            priority=row["priority"],
            data=row["data"],
            output=row["output"],
            error=row["error"],
            attempt=row["attempt"],
            retry_limit=row["retry_limit"],
            retry_delay=row["retry_delay_s"],
            retry_backoff=row["retry_backoff"],
            retry_delay_max=row["retry_delay_max_s"],
            expire_in=row["expire_in_s"],
            dead_letter=row["dead_letter"],
            start_after=row["start_after"],
            lease_expires_at=row["lease_expires_at"],
            created_at=row["created_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            progress=row.get("progress"),
            origin_queue=row.get("origin_queue"),
            origin_id=row.get("origin_id"),
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (ids and times as strings)."""
        out: dict[str, Any] = {}
        for name in self.__slots__:
            value = getattr(self, name)
            if isinstance(value, uuid.UUID | datetime):
                value = str(value) if isinstance(value, uuid.UUID) else value.isoformat()
            out[name] = value
        return out


class JobEventKind(enum.StrEnum):
    """What a job event records. Failures (``retrying``, ``failed``, ``expired``) are
    always recorded; the others only for queues whose ``events`` setting is on."""

    CREATED = "created"
    """Sent (or copied to a dead-letter queue: ``data`` names the origin)."""
    STARTED = "started"
    """A worker claimed it; ``from_state`` is not recorded (queued or retrying)."""
    COMPLETED = "completed"
    """The handler returned."""
    RETRYING = "retrying"
    """An attempt failed (``data.error``) and the job will run again."""
    FAILED = "failed"
    """The last attempt failed (``data.error``; ``data.dead_letter`` if copied)."""
    EXPIRED = "expired"
    """It waited longer than its queue's ``max_queued_age`` and failed without running."""
    CANCELLED = "cancelled"
    """Cancelled by a caller."""
    REQUEUED = "requeued"
    """Resumed (from cancelled) or retried (from failed) by a caller."""
    RELEASED = "released"
    """Put back in the queue by a worker shutting down, its attempt not spent."""
    REDRIVEN = "redriven"
    """Moved from a dead-letter queue (``data.from_queue``) back to its source queue."""


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One state change of a job, as recorded in the job-events log.

    ``queue`` is the queue the job was in; ``from_state``/``to_state`` are None where not
    recorded; ``attempt`` is the job's attempt counter after the change; ``data`` holds
    details (``error``, ``dead_letter``, ``origin_queue``...) or None."""

    id: int
    job_id: uuid.UUID
    queue: str
    at: datetime
    kind: str
    from_state: JobState | None
    to_state: JobState | None
    attempt: int
    data: dict[str, Any] | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> JobEvent:
        """Build from a ``job_event_list_*`` row."""
        return cls(
            id=row["id"],
            job_id=row["job_id"],
            queue=row["queue"],
            at=row["at"],
            kind=row["kind"],
            from_state=None if row["from_state"] is None else JobState(row["from_state"]),
            to_state=None if row["to_state"] is None else JobState(row["to_state"]),
            attempt=row["attempt"],
            data=row["data"],
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (ids and times as strings)."""
        return {
            "id": self.id,
            "job_id": str(self.job_id),
            "queue": self.queue,
            "at": self.at.isoformat(),
            "kind": self.kind,
            "from_state": None if self.from_state is None else self.from_state.value,
            "to_state": None if self.to_state is None else self.to_state.value,
            "attempt": self.attempt,
            "data": self.data,
        }


@dataclass(frozen=True, slots=True)
class JobPage:
    """One page of :meth:`QueueClient.list_jobs`; pass ``next_cursor`` to get the next."""

    jobs: list[JobRecord]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """A queue and its settings; ``info.retry_limit`` etc. read ``info.settings``."""

    name: str
    settings: QueueSettings
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> QueueInfo:
        """Build from a ``queue_get`` row."""
        return cls(
            name=row["name"],
            settings=QueueSettings.from_columns(row),
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )

    def __getattr__(self, name: str) -> Any:
        # Convenience: the settings' fields read as the queue's own attributes.
        return getattr(self.settings, name)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: name, times and every setting."""
        return {
            "name": self.name,
            **{f: getattr(self.settings, f) for f in self.settings.__slots__},
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Counts of a queue's jobs by state. ``queued`` counts runnable jobs; ``deferred``
    queued jobs whose start time is still ahead; ``oldest_queued_age`` is seconds since the
    oldest runnable job became runnable (None when there is none)."""

    queue: str
    queued: int
    deferred: int
    retrying: int
    active: int
    completed: int
    failed: int
    cancelled: int
    oldest_queued_age: float | None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {name: getattr(self, name) for name in self.__slots__}
