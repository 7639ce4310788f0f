"""What the queue hands back: job records, the handler's view of a job, queue stats."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .settings import QueueSettings

__all__ = ["Job", "JobPage", "JobRecord", "JobState", "QueueInfo", "QueueStats"]


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
    retried.
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

    async def heartbeat(self) -> bool:
        """Extend this job's lease; returns False if the lease was already lost."""
        return await self._heartbeat(self)

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
