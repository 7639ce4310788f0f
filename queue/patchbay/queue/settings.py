"""Queue settings and send options, validated at the edge.

Durations are seconds (``float``) or :class:`datetime.timedelta`; both are accepted
everywhere a duration is, and stored as seconds.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any, TypedDict

from .errors import InvalidName, InvalidOption

__all__ = [
    "JobOptions",
    "QueueSettings",
    "SendOptions",
    "validate_queue_name",
    "validate_schema_name",
]

_QUEUE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_\-.:/]{0,199}$")
# 54, not 63: the NOTIFY channel "patchbay:<schema>" must fit Postgres's 63-byte names.
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,53}$")

Duration = float | int | timedelta


def validate_queue_name(name: object) -> str:
    """Return ``name`` if it is a valid queue name, else raise :class:`InvalidName`."""
    if not isinstance(name, str) or not _QUEUE_NAME.match(name):
        raise InvalidName(
            f"invalid queue name {name!r}: use 1-200 characters of letters, digits and "
            "'_ - . : /', starting with a letter, digit or '_'"
        )
    return name


def validate_schema_name(name: object) -> str:
    """Return ``name`` if it is a valid schema name (lower-case SQL identifier)."""
    if not isinstance(name, str) or not _SCHEMA_NAME.match(name):
        raise InvalidName(
            f"invalid schema name {name!r}: use a lower-case identifier "
            "(letters, digits, '_'; at most 54 characters)"
        )
    return name


def validate_key(option: str, value: object) -> str:
    """Validate a key (group, fairness or rate key): a string of 1-200 characters."""
    if not isinstance(value, str) or not 1 <= len(value) <= 200 or "\x00" in value:
        raise InvalidOption(f"{option} must be a string of 1-200 characters, got {value!r}")
    return value


def seconds(option: str, value: object, *, allow_zero: bool = True) -> float:
    """Validate a duration option and return it in seconds."""
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidOption(f"{option} must be a number of seconds or a timedelta, got {value!r}")
    result = float(value)
    if not math.isfinite(result) or result < 0 or (result == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise InvalidOption(f"{option} must be finite and {bound} seconds, got {value!r}")
    return result


def integer(option: str, value: object, *, minimum: int = 0, maximum: int = 2**31 - 1) -> int:
    """Validate an integer option within ``[minimum, maximum]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidOption(f"{option} must be an integer, got {value!r}")
    if not minimum <= value <= maximum:
        raise InvalidOption(f"{option} must be between {minimum} and {maximum}, got {value}")
    return value


@dataclass(frozen=True, slots=True)
class QueueSettings:
    """A queue's defaults, inherited by every job sent to it.

    - ``retry_limit``: retries after the first attempt (default 2, so 3 attempts in all).
    - ``retry_delay``: seconds before the first retry (default 0: at once).
    - ``retry_backoff``: double the delay on each further retry, with +-20% jitter (default
      true); ``retry_delay_max`` caps it (default none).
    - ``expire_in``: the lease, seconds a job may run before it is presumed lost and retried
      (default 900). Long handlers call ``job.heartbeat()`` to extend it.
    - ``retention``: seconds finished jobs are kept (default 14 days).
    - ``dead_letter``: queue that receives a copy of each job that failed for good.
    - ``group_limit``: jobs of one ``group`` that may be active at once (default 1);
      ``set_group_limit`` overrides it per group.
    - ``fair``: serve each ``fairness_key`` in turn (weighted by ``set_fairness_weight``)
      instead of strict dispatch order, so one key's backlog does not delay the others
      (default false; costs a skip scan over the keys per fetch).
    - ``max_queued_age``: seconds a job may wait to start once runnable (since it was sent,
      or since its start time or retry fell due); longer, maintenance fails it with a
      ``MaxQueuedAgeExceeded`` error and dead-letters it (default none: jobs wait forever).
    - ``events``: record every state change of the queue's jobs in the job-events log
      (default false; failures are always recorded). Costs one extra statement per send,
      fetch and completion batch while on; clients notice a change within seconds.
    - ``policy``: what a job's ``singleton_key`` means in this queue (default
      ``"standard"``), enforced by unique indexes across all senders and workers; a send
      the policy refuses returns the id of the job holding the key's place:

      - ``"standard"``: no per-key rule; a key only keys ``throttle``/``debounce`` windows
        (a key without a window is refused with InvalidOption).
      - ``"short"``: at most one queued job per key (sent, not yet started).
      - ``"singleton"``: at most one active job per key; the others wait, in order.
      - ``"stately"``: both: at most one queued and one active job per key.
      - ``"exclusive"``: at most one job per key queued, retrying or active.

      Retrying jobs do not count as queued. A changed policy applies to jobs sent after.

    Each field is stored in the ``queue`` table column of the same name, durations with
    an ``_s`` suffix (seconds); :meth:`to_columns` and :meth:`from_columns` map them.
    """

    retry_limit: int = 2
    retry_delay: float = 0.0
    retry_backoff: bool = True
    retry_delay_max: float | None = None
    expire_in: float = 900.0
    retention: float = 14 * 24 * 3600.0
    dead_letter: str | None = None
    group_limit: int = 1
    fair: bool = False
    max_queued_age: float | None = None
    events: bool = False
    policy: str = "standard"

    @classmethod
    def build(cls, **options: Any) -> QueueSettings:
        """Validate keyword options into settings; unknown names raise InvalidOption."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise InvalidOption(
                f"unknown queue option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        values = {**{f.name: getattr(cls(), f.name) for f in fields(cls)}, **options}
        backoff = _boolean("retry_backoff", values["retry_backoff"])
        dead_letter = values["dead_letter"]
        if dead_letter is not None:
            validate_queue_name(dead_letter)
        delay_max = values["retry_delay_max"]
        return cls(
            retry_limit=integer("retry_limit", values["retry_limit"], maximum=1_000_000),
            retry_delay=seconds("retry_delay", values["retry_delay"]),
            retry_backoff=backoff,
            retry_delay_max=None if delay_max is None else seconds("retry_delay_max", delay_max),
            expire_in=seconds("expire_in", values["expire_in"], allow_zero=False),
            retention=seconds("retention", values["retention"]),
            dead_letter=dead_letter,
            group_limit=integer("group_limit", values["group_limit"], minimum=1, maximum=100_000),
            fair=_boolean("fair", values["fair"]),
            max_queued_age=None
            if values["max_queued_age"] is None
            else seconds("max_queued_age", values["max_queued_age"], allow_zero=False),
            events=_boolean("events", values["events"]),
            policy=_policy(values["policy"]),
        )

    def to_columns(self) -> dict[str, Any]:
        """The ``queue`` table's column values for these settings."""
        return {_COLUMN.get(f.name, f.name): getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_columns(cls, row: Mapping[str, Any]) -> QueueSettings:
        """Settings from a ``queue`` row (extra keys are ignored)."""
        return cls(**{f.name: row[_COLUMN.get(f.name, f.name)] for f in fields(cls)})


# Settings whose column name differs from the field name: durations are stored in seconds.
_COLUMN = {
    "retry_delay": "retry_delay_s",
    "retry_delay_max": "retry_delay_max_s",
    "expire_in": "expire_in_s",
    "retention": "retention_s",
    "max_queued_age": "max_queued_age_s",
}


QUEUE_POLICIES = ("standard", "short", "singleton", "stately", "exclusive")


def _policy(value: object) -> str:
    if value not in QUEUE_POLICIES:
        raise InvalidOption(f"unknown queue policy {value!r}; known: {', '.join(QUEUE_POLICIES)}")
    return str(value)


def _boolean(option: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidOption(f"{option} must be true or false, got {value!r}")
    return value


class JobOptions(TypedDict, total=False):
    """The options of ``send`` and ``send_many`` that shape the job itself (all of
    :class:`SendOptions` but the uniqueness ones); each overrides the queue's default.

    - ``id``: a caller-chosen UUID; sending the same id again does not add a second job.
    - ``priority``: higher runs first (default 0).
    - ``start_after``: a delay in seconds / timedelta, or an aware datetime.
    - ``retry_limit``, ``retry_delay``, ``retry_backoff``, ``retry_delay_max``,
      ``expire_in``, ``dead_letter``: as in :class:`QueueSettings`.
    - ``group``: a concurrency group (e.g. an integration id): at most the group's limit
      of its jobs are active at once, across all workers.
    - ``fairness_key``: e.g. a tenant id; a ``fair`` queue serves its keys round-robin.
    - ``rate_key``: a rate limit (see ``set_rate_limit``) this job's start spends a token of.
    """

    id: Any
    priority: int
    start_after: float | int | timedelta | datetime
    retry_limit: int
    retry_delay: float | int | timedelta
    retry_backoff: bool
    retry_delay_max: float | int | timedelta
    expire_in: float | int | timedelta
    dead_letter: str
    group: str
    fairness_key: str
    rate_key: str


class SendOptions(JobOptions, total=False):
    """Options of ``send`` and ``send_many``: :class:`JobOptions`, and uniqueness.

    - ``singleton_key``: a key (1-200 characters) the queue's ``policy`` applies to; a
      send the policy refuses returns the id of the job holding the key's place (or None
      when that job could not be read). ``send_many`` items may carry their own
      (``JobSpec(singleton_key=...)``).
    - ``throttle``: seconds (> 0); at most one job per key per window of this length
      (windows are aligned on the Unix epoch). Sends in a window that has its job return
      that job's id. A cancelled job frees its window.
    - ``debounce``: seconds (> 0); the sends of a key in one window collapse into one job
      that starts when the window ends, with the data of the latest send. Not with ``id``,
      ``start_after`` or ``throttle``. On ``short``/``stately`` queues sends collapse into
      the key's one queued job; on ``exclusive`` ones a running job refuses them.
    """

    singleton_key: str
    throttle: float | int | timedelta
    debounce: float | int | timedelta


SEND_OPTION_NAMES = frozenset(SendOptions.__required_keys__ | SendOptions.__optional_keys__)
