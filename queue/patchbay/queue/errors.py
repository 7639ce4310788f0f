"""Errors raised by ``patchbay.queue``.

Every error the queue raises derives from :class:`QueueError`, so callers can catch the
whole room at once::

    QueueError
    ├── DatabaseUnavailable      the database could not be reached or started
    ├── MigrationError           a migration failed; nothing of that step was applied
    ├── InvalidInput             bad input; nothing was written
    │   ├── InvalidName          a queue name that is not allowed
    │   ├── InvalidOption        an unknown option, or a value out of range
    │   ├── InvalidPayload       data that is not JSON, or not storable in Postgres
    │   ├── InvalidSchedule      a cron expression or time zone that is not valid
    │   └── PayloadTooLarge      data over the client's ``max_payload_bytes``
    ├── QueueNotFound            the queue does not exist
    ├── QueueAlreadyExists       ``create_queue`` of an existing name, with other settings
    ├── JobNotFound              no job with that id
    ├── ScheduleNotFound         no schedule with that name
    └── InvalidJobState          the job is not in a state that allows the operation

Not an error: a handler raises :class:`Snooze` to put its job back for a while without
spending an attempt (e.g. a provider said "retry after 30 s").
"""

from __future__ import annotations

__all__ = [
    "DatabaseUnavailable",
    "InvalidInput",
    "InvalidJobState",
    "InvalidName",
    "InvalidOption",
    "InvalidPayload",
    "InvalidSchedule",
    "JobNotFound",
    "MigrationError",
    "PayloadTooLarge",
    "QueueAlreadyExists",
    "QueueError",
    "QueueNotFound",
    "ScheduleNotFound",
]


class QueueError(Exception):
    """Base class of every error raised by ``patchbay.queue``."""


class DatabaseUnavailable(QueueError):
    """The database could not be reached or started. Check ``PATCHBAY_DATABASE_URL``."""


class MigrationError(QueueError):
    """A migration step failed and was rolled back; fix the cause and run migrate again."""


class InvalidInput(QueueError, ValueError):
    """The call's input is invalid. Nothing was written; correct the input and call again."""


class InvalidName(InvalidInput):
    """A queue name may hold letters, digits and ``_ - . : /``, 1 to 200 characters."""


class InvalidOption(InvalidInput):
    """An option is unknown or its value is out of range; the message names it."""


class InvalidPayload(InvalidInput):
    """Job data must be JSON-serialisable and storable as ``jsonb`` (no NaN, no NUL, valid
    UTF-8)."""


class InvalidSchedule(InvalidInput):
    """A cron expression that is not five valid fields (or never fires), or a time zone
    that is not an IANA name; the message says which."""


class PayloadTooLarge(InvalidInput):
    """Job data is larger than the client's ``max_payload_bytes``. Store large blobs
    elsewhere and send a reference."""


class QueueNotFound(QueueError, LookupError):
    """The queue does not exist. Create it first with ``create_queue``."""


class QueueAlreadyExists(QueueError):
    """A queue of that name already exists with different settings; use ``update_queue``."""


class JobNotFound(QueueError, LookupError):
    """No job has that id (it may have been deleted by retention)."""


class ScheduleNotFound(QueueError, LookupError):
    """No schedule has that name; ``list_schedules`` shows the ones that exist."""


class InvalidJobState(QueueError):
    """The job's state does not allow the operation (e.g. retrying a job that is active)."""


class Snooze(Exception):
    """Raised by a handler: put this job back in the queue to run again after ``delay``
    seconds, without spending an attempt and without recording a failure."""

    def __init__(self, delay: float, reason: str = "") -> None:
        if not delay >= 0:
            raise InvalidOption(f"snooze delay must be >= 0 seconds, got {delay!r}")
        super().__init__(reason or f"snoozed for {delay:g}s")
        self.delay = float(delay)
