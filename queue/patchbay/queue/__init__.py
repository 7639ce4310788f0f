"""patchbay.queue: a Postgres job queue, usable on its own (like pg-boss, for Python).

async with QueueClient(url) as client:
    await client.create_queue("emails", retry_limit=3)
    await client.send("emails", {"to": "a@example.com"})
    await client.work("emails", handler, concurrency=20)
"""

from ._sql import Statements
from ._worker import Handler, Worker
from .client import JobSpec, QueueClient
from .clock import Clock, FrozenClock, SystemClock
from .diagnosis import JobDiagnosis
from .errors import (
    DatabaseUnavailable,
    InvalidInput,
    InvalidJobState,
    InvalidName,
    InvalidOption,
    InvalidPayload,
    InvalidSchedule,
    JobNotFound,
    MigrationError,
    PayloadTooLarge,
    QueueAlreadyExists,
    QueueError,
    QueueNotFound,
    ScheduleNotFound,
    Snooze,
)
from .migrate import migrate, migrate_sync
from .models import (
    Job,
    JobEvent,
    JobEventKind,
    JobPage,
    JobRecord,
    JobState,
    QueueInfo,
    QueueStats,
)
from .schedules import ScheduleFire, ScheduleInfo, Schedules, TickResult
from .settings import QueueSettings, SendOptions
from .sync import SyncQueueClient

__all__ = [
    "Clock",
    "DatabaseUnavailable",
    "FrozenClock",
    "Handler",
    "InvalidInput",
    "InvalidJobState",
    "InvalidName",
    "InvalidOption",
    "InvalidPayload",
    "InvalidSchedule",
    "Job",
    "JobDiagnosis",
    "JobEvent",
    "JobEventKind",
    "JobNotFound",
    "JobPage",
    "JobRecord",
    "JobSpec",
    "JobState",
    "MigrationError",
    "PayloadTooLarge",
    "QueueAlreadyExists",
    "QueueClient",
    "QueueError",
    "QueueInfo",
    "QueueNotFound",
    "QueueSettings",
    "QueueStats",
    "ScheduleFire",
    "ScheduleInfo",
    "ScheduleNotFound",
    "Schedules",
    "SendOptions",
    "Snooze",
    "Statements",
    "SyncQueueClient",
    "SystemClock",
    "TickResult",
    "Worker",
    "migrate",
    "migrate_sync",
]
