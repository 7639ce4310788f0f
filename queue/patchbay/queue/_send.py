"""Validation and parameters of ``send``/``send_many``, shared by the async and sync
clients: everything is checked before any SQL runs, so bad input writes nothing."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

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

__all__ = ["JobSpec", "SendBuilder", "as_uuid", "check_inserted"]

_INT32_MIN = -(2**31)


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One job of ``send_many`` with its own id, priority or start time."""

    data: Any = None
    id: uuid.UUID | str | None = None
    priority: int | None = None
    start_after: float | timedelta | datetime | None = None


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
    """Raise QueueNotFound when ``job_insert_many`` found no such queue."""
    if row is None or row[0] == 0:
        raise QueueNotFound(f"queue {queue!r} does not exist; create it with create_queue")


class SendBuilder:
    """Turns a send call into ``job_insert_many`` parameters."""

    def __init__(self, channel: str, max_payload_bytes: int, clock: Clock) -> None:
        self.channel = channel
        self.limit = max_payload_bytes
        self.clock = clock

    def one(
        self, queue: str, data: Any, options: SendOptions
    ) -> tuple[list[uuid.UUID], dict[str, Any]]:
        """Parameters for one job; returns ([id], params)."""
        params = self._common(queue, options)
        job_id = as_uuid(options["id"]) if "id" in options else uuid7()
        delay, at = start_time(options.get("start_after", 0.0))
        params.update(
            ids=[job_id],
            data=[encode_payload(data, limit=self.limit)],
            priorities=[None],
            start_afters=[at],
            delay_s=delay,
        )
        return [job_id], params

    def many(
        self, queue: str, items: Iterable[Any], options: SendOptions
    ) -> tuple[list[uuid.UUID], dict[str, Any]]:
        """Parameters for a batch; returns (ids in order, params)."""
        if "id" in options:
            raise InvalidOption("send_many takes ids per job: pass JobSpec(data, id=...)")
        params = self._common(queue, options)
        delay, at = start_time(options.get("start_after", 0.0))
        batch = list(items)
        ids = uuid7_batch(len(batch))
        limit = self.limit
        payloads: list[str] = []
        priorities: list[int | None] = [None] * len(batch)
        starts: list[datetime | None] = [at] * len(batch)
        for index, item in enumerate(batch):
            if isinstance(item, JobSpec):
                if item.id is not None:
                    ids[index] = as_uuid(item.id)
                if item.priority is not None:
                    priorities[index] = integer("priority", item.priority, minimum=_INT32_MIN)
                if item.start_after is not None:
                    item_delay, item_at = start_time(item.start_after)
                    base = self.clock.now() or datetime.now(UTC)
                    starts[index] = item_at or base + timedelta(seconds=item_delay)
                item = item.data
            payloads.append(encode_payload(item, limit=limit, what=f"item {index}"))
        params.update(
            ids=ids, data=payloads, priorities=priorities, start_afters=starts, delay_s=delay
        )
        return ids, params

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
            "singleton_keys": None,
            "throttle_s": None,
            "debounce_s": None,
        }


def _opt_seconds(options: SendOptions, name: str, *, allow_zero: bool = True) -> float | None:
    value: object = options.get(name)
    return None if value is None else seconds(name, value, allow_zero=allow_zero)


def _opt_key(options: SendOptions, name: str) -> str | None:
    value: object = options.get(name)
    return None if value is None else validate_key(name, value)
