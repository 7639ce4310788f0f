"""Validation and parameters of ``send``/``send_many``, shared by the async and sync
clients: everything is checked before any SQL runs, so bad input writes nothing.

A send runs one statement, :attr:`SendPlan.statement`: ``job_insert_many``;
``job_insert_singleton`` when a job has a singleton key (same insert, and the holders of
refused keys); ``job_insert_debounced`` for debounced sends. With singleton keys it may need
a second, ``job_find_singleton`` (see :meth:`SendPlan.results`); the clients run both the
same way.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from ._ids import uuid7, uuid7_batch
from ._payload import encode_payload
from .clock import Clock
from .errors import InvalidOption, QueueNotFound
from .settings import (
    SEND_OPTION_NAMES,
    SendOptions,
    integer,
    seconds,
    validate_key,
    validate_queue_name,
)

__all__ = ["JobSpec", "SendBuilder", "SendPlan", "as_uuid", "check_inserted"]

_INT32_MIN = -(2**31)

# Longest throttle or debounce window: ten years.
MAX_WINDOW_S = 10 * 365.25 * 24 * 3600

# Columns of the row the insert statements return (job_insert_many stops after _REFUSED).
_QUEUE_FOUND, _INSERTED, _NOTIFIED, _REFUSED, _POLICY, _WINDOW, _SINGLETON_IDS = range(7)


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One job of ``send_many`` with its own id, priority, start time, singleton key, or
    group, fairness and rate keys (each overrides the call's option of the same name)."""

    data: Any = None
    id: uuid.UUID | str | None = None
    priority: int | None = None
    start_after: float | timedelta | datetime | None = None
    singleton_key: str | None = None
    group: str | None = None
    fairness_key: str | None = None
    rate_key: str | None = None


def as_uuid(value: object) -> uuid.UUID:
    """``value`` as a UUID, or InvalidOption."""
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError as exc:
        raise InvalidOption(f"id must be a UUID, got {value!r}") from exc


def start_time(value: object) -> tuple[float, datetime | None]:
    """``start_after`` as (delay in seconds, absolute time or None)."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise InvalidOption("start_after datetime must be timezone-aware")
        return 0.0, value
    return seconds("start_after", value), None


def check_inserted(queue: str, row: tuple[Any, ...] | None) -> None:
    """Raise QueueNotFound when the insert found no such queue, and InvalidOption when it
    refused singleton keys that the queue's policy gives no meaning."""
    if row is None or row[_QUEUE_FOUND] == 0:
        raise QueueNotFound(f"queue {queue!r} does not exist; create it with create_queue")
    if len(row) > _REFUSED and row[_REFUSED]:
        raise InvalidOption(
            f"queue {queue!r} has policy 'standard', where a singleton_key only keys a "
            "throttle or debounce window: pass throttle= or debounce=, or give the queue a "
            "policy (short, singleton, stately, exclusive); nothing was sent"
        )


class SendPlan(NamedTuple):
    """A validated send: the ids its jobs get if inserted, and the statement's parameters
    (unpacks as ``ids, params``)."""

    ids: list[uuid.UUID]
    params: dict[str, Any]

    @property
    def statement(self) -> str:
        """The name of the statement that runs this send."""
        if self.params["debounce_s"] is not None:
            return "job_insert_debounced"
        if self.params["singleton_keys"] is not None:
            return "job_insert_singleton"
        return "job_insert_many"

    def results(
        self, queue: str, row: tuple[Any, ...] | None
    ) -> tuple[list[uuid.UUID | None], dict[str, Any] | None]:
        """The id each job ended up as (its own, or that of the job holding its singleton
        key's place), and the ``job_find_singleton`` parameters for the holders the insert
        could not see (None when there are none). Raises as :func:`check_inserted`."""
        check_inserted(queue, row)
        assert row is not None
        keys: list[str | None] | None = self.params["singleton_keys"]
        if keys is None:
            return list(self.ids), None
        found: list[uuid.UUID | None] = list(row[_SINGLETON_IDS])
        missing = [i for i, job_id in enumerate(found) if job_id is None]
        if not missing:
            return found, None
        lookup = {
            "queue": queue,
            "policy": row[_POLICY],
            "singleton_on": row[_WINDOW],
            "singleton_keys": [keys[i] for i in missing],
        }
        return found, lookup

    @staticmethod
    def fill(
        found: list[uuid.UUID | None], lookup: dict[str, Any], row: tuple[Any, ...] | None
    ) -> list[uuid.UUID | None]:
        """Put the holders ``job_find_singleton`` read (``row``) in their places."""
        holders = row[0] if row is not None and row[0] is not None else []
        missing = [i for i, job_id in enumerate(found) if job_id is None]
        for index, holder in zip(missing, holders, strict=False):
            found[index] = holder
        return found


class SendBuilder:
    """Turns a send call into a :class:`SendPlan`."""

    def __init__(self, channel: str, max_payload_bytes: int, clock: Clock) -> None:
        self.channel = channel
        self.limit = max_payload_bytes
        self.clock = clock

    def one(self, queue: str, data: Any, options: SendOptions) -> SendPlan:
        """The plan of one job."""
        params = self._common(queue, options)
        debounced = params["debounce_s"] is not None
        if debounced and "id" in options:
            raise InvalidOption(
                "a debounced send joins its window's job and cannot choose its id; drop id"
            )
        job_id = as_uuid(options["id"]) if "id" in options else uuid7()
        delay, at = start_time(options.get("start_after", 0.0))
        key: str | None = params.pop("singleton_key")
        if key is None and (debounced or params["throttle_s"] is not None):
            raise InvalidOption(_WINDOW_NEEDS_KEY)
        params.update(
            ids=[job_id],
            data=[encode_payload(data, limit=self.limit)],
            priorities=[None],
            start_afters=[at],
            delay_s=delay,
            singleton_keys=None if key is None else [key],
            group_keys=None,
            fairness_keys=None,
            rate_keys=None,
        )
        return SendPlan([job_id], params)

    def many(self, queue: str, items: Iterable[Any], options: SendOptions) -> SendPlan:
        """The plan of a batch, ids in the items' order."""
        if "id" in options:
            raise InvalidOption("send_many takes ids per job: pass JobSpec(data, id=...)")
        params = self._common(queue, options)
        debounced = params["debounce_s"] is not None
        windowed = debounced or params["throttle_s"] is not None
        delay, at = start_time(options.get("start_after", 0.0))
        default_key: str | None = params.pop("singleton_key")
        batch = list(items)
        ids = uuid7_batch(len(batch))
        limit = self.limit
        payloads: list[str] = []
        priorities: list[int | None] = [None] * len(batch)
        starts: list[datetime | None] = [at] * len(batch)
        keys: list[str | None] = [default_key] * len(batch)
        groups: list[str | None] = [None] * len(batch)
        fairness: list[str | None] = [None] * len(batch)
        rates: list[str | None] = [None] * len(batch)
        for index, item in enumerate(batch):
            if isinstance(item, JobSpec):
                if item.id is not None:
                    if debounced:
                        raise InvalidOption(
                            f"item {index}: a debounced send joins its window's job and "
                            "cannot choose its id"
                        )
                    ids[index] = as_uuid(item.id)
                if item.priority is not None:
                    priorities[index] = integer("priority", item.priority, minimum=_INT32_MIN)
                if item.start_after is not None:
                    if debounced:
                        raise InvalidOption(
                            f"item {index}: a debounced job starts when its window ends; "
                            "drop start_after"
                        )
                    item_delay, item_at = start_time(item.start_after)
                    base = self.clock.now() or datetime.now(UTC)
                    starts[index] = item_at or base + timedelta(seconds=item_delay)
                if item.singleton_key is not None:
                    keys[index] = validate_key(f"item {index}: singleton_key", item.singleton_key)
                for column, value in (
                    (groups, item.group),
                    (fairness, item.fairness_key),
                    (rates, item.rate_key),
                ):
                    if value is not None:
                        column[index] = validate_key(f"item {index}: key", value)
                item = item.data
            if windowed and keys[index] is None:
                raise InvalidOption(f"item {index}: {_WINDOW_NEEDS_KEY}")
            payloads.append(encode_payload(item, limit=limit, what=f"item {index}"))
        params.update(
            ids=ids,
            data=payloads,
            priorities=priorities,
            start_afters=starts,
            delay_s=delay,
            singleton_keys=keys if any(k is not None for k in keys) else None,
            group_keys=_column(groups),
            fairness_keys=_column(fairness),
            rate_keys=_column(rates),
        )
        return SendPlan(ids, params)

    def _common(self, queue: str, options: SendOptions) -> dict[str, Any]:
        validate_queue_name(queue)
        unknown = set(options) - SEND_OPTION_NAMES
        if unknown:
            raise InvalidOption(
                f"unknown send option(s) {', '.join(sorted(unknown))}; "
                f"known: {', '.join(sorted(SEND_OPTION_NAMES))}"
            )
        get = options.get
        retry_limit = get("retry_limit")
        retry_backoff = get("retry_backoff")
        if retry_backoff is not None and not isinstance(retry_backoff, bool):
            raise InvalidOption(f"retry_backoff must be true or false, got {retry_backoff!r}")
        priority = get("priority")
        dead_letter = get("dead_letter")
        throttle = _opt_window(options, "throttle")
        debounce = _opt_window(options, "debounce")
        if throttle is not None and debounce is not None:
            raise InvalidOption("pass throttle or debounce, not both")
        if debounce is not None and get("start_after") is not None:
            raise InvalidOption("a debounced job starts when its window ends; drop start_after")
        return {
            "queue": queue,
            "channel": self.channel,
            "now": self.clock.now(),
            "priority": None
            if priority is None
            else integer("priority", priority, minimum=_INT32_MIN),
            "retry_limit": None
            if retry_limit is None
            else integer("retry_limit", retry_limit, maximum=1_000_000),
            "retry_delay_s": _opt_seconds(options, "retry_delay"),
            "retry_backoff": retry_backoff,
            "retry_delay_max_s": _opt_seconds(options, "retry_delay_max"),
            "expire_in_s": _opt_seconds(options, "expire_in", allow_zero=False),
            "dead_letter": None if dead_letter is None else validate_queue_name(dead_letter),
            "group_key": _opt_key(options, "group"),
            "fairness_key": _opt_key(options, "fairness_key"),
            "rate_key": _opt_key(options, "rate_key"),
            "singleton_key": _opt_key(options, "singleton_key"),
            "throttle_s": throttle,
            "debounce_s": debounce,
        }


_WINDOW_NEEDS_KEY = (
    "throttle and debounce apply per singleton_key: pass singleton_key= (one constant key "
    "covers the whole queue)"
)


def _opt_seconds(options: SendOptions, name: str, *, allow_zero: bool = True) -> float | None:
    value: object = options.get(name)
    return None if value is None else seconds(name, value, allow_zero=allow_zero)


def _opt_window(options: SendOptions, name: str) -> float | None:
    value = _opt_seconds(options, name, allow_zero=False)
    if value is not None and value > MAX_WINDOW_S:
        raise InvalidOption(f"{name} must be at most ten years ({MAX_WINDOW_S:g} s), got {value}")
    return value


def _opt_key(options: SendOptions, name: str) -> str | None:
    value: object = options.get(name)
    return None if value is None else validate_key(name, value)


def _column(values: list[str | None]) -> list[str | None] | None:
    """A per-job key array, or None when no job has its own key (the call's applies)."""
    return values if any(v is not None for v in values) else None
