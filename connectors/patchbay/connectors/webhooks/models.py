"""What the webhook service hands back: endpoints, messages, deliveries, attempts.

None of them holds a signing secret: endpoints carry vault references only.
"""

from __future__ import annotations

import enum
import json
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Protocol

__all__ = [
    "Attempt",
    "AttemptOutcome",
    "Delivery",
    "DeliveryState",
    "Endpoint",
    "EndpointDisabledHook",
    "Message",
    "SentMessage",
]


def _jsonable(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple):
        return list(value)
    return value


class _ToJson:
    __slots__ = ()

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (ids and times as strings)."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]


def matches(event_types: tuple[str, ...] | None, event_type: str) -> bool:
    """Whether an endpoint filter takes ``event_type`` (None: every type; ``a.*``: every
    type starting with ``a.``)."""
    if event_types is None:
        return True
    for pattern in event_types:
        if pattern == event_type:
            return True
        if pattern.endswith(".*") and event_type.startswith(pattern[:-1]):
            return True
    return False


@dataclass(frozen=True, slots=True)
class Endpoint(_ToJson):
    """A tenant's webhook endpoint. ``event_types`` None receives every event type;
    ``secret_ref`` (and ``previous_secret_ref`` while a rotation's grace period lasts,
    until ``previous_secret_expires_at``) point at the signing secrets in the vault.
    ``failing_since`` is when the current run of failed attempts began (None after a
    success)."""

    id: uuid.UUID
    tenant: str
    url: str
    description: str
    event_types: tuple[str, ...] | None
    secret_ref: str
    previous_secret_ref: str | None
    previous_secret_expires_at: datetime | None
    enabled: bool
    disabled_reason: str | None
    disabled_at: datetime | None
    failing_since: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Endpoint:
        """Build from a ``webhook_endpoint`` row."""
        types = row["event_types"]
        return cls(
            id=row["id"],
            tenant=row["tenant"],
            url=row["url"],
            description=row["description"],
            event_types=None if types is None else tuple(types),
            secret_ref=row["secret_ref"],
            previous_secret_ref=row["previous_secret_ref"],
            previous_secret_expires_at=row["previous_secret_expires_at"],
            enabled=row["enabled"],
            disabled_reason=row["disabled_reason"],
            disabled_at=row["disabled_at"],
            failing_since=row["failing_since"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )

    def accepts(self, event_type: str) -> bool:
        """Whether this endpoint's filter takes ``event_type``."""
        return matches(self.event_types, event_type)


@dataclass(frozen=True, slots=True)
class Message(_ToJson):
    """An event as sent: ``body`` is the exact JSON text POSTed and signed,
    ``{"type": ..., "timestamp": ..., "data": payload}``."""

    id: uuid.UUID
    tenant: str
    event_type: str
    body: str
    created_at: datetime

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Message:
        """Build from a ``webhook_message`` row."""
        return cls(row["id"], row["tenant"], row["event_type"], row["body"], row["created_at"])

    @property
    def payload(self) -> Any:
        """The payload given to ``send_event`` (the body's ``data``)."""
        return json.loads(self.body)["data"]


class DeliveryState(enum.StrEnum):
    """Where a delivery of a message to an endpoint stands."""

    PENDING = "pending"
    """Waiting for its next attempt."""
    SUCCEEDED = "succeeded"
    """An attempt got a 2xx answer."""
    FAILED = "failed"
    """Every attempt of the schedule failed, or the endpoint answered 410 Gone."""
    CANCELLED = "cancelled"
    """Its endpoint was disabled before it succeeded."""


@dataclass(frozen=True, slots=True)
class Delivery(_ToJson):
    """One delivery of a message to one endpoint (its id is its job's id). ``replay`` is
    true for deliveries made by a replay."""

    id: uuid.UUID
    message_id: uuid.UUID
    endpoint_id: uuid.UUID
    state: DeliveryState
    attempts: int
    next_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    replay: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Delivery:
        """Build from a ``webhook_delivery`` row."""
        return cls(
            id=row["id"],
            message_id=row["message_id"],
            endpoint_id=row["endpoint_id"],
            state=DeliveryState(row["state"]),
            attempts=row["attempts"],
            next_attempt_at=row["next_attempt_at"],
            last_status=row["last_status"],
            last_error=row["last_error"],
            replay=row["replay"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )


class AttemptOutcome(enum.StrEnum):
    """How one attempt ended."""

    SUCCEEDED = "succeeded"
    """A 2xx answer."""
    FAILED = "failed"
    """Another answer, or no answer (connection refused, reset, TLS error...)."""
    TIMEOUT = "timeout"
    """No complete answer within the timeout."""
    REFUSED = "refused"
    """Not sent: the host resolved to an address that is not allowed."""
    GONE = "gone"
    """410 Gone: the endpoint was disabled at once."""


@dataclass(frozen=True, slots=True)
class Attempt(_ToJson):
    """One recorded attempt: when, the HTTP ``status`` (None without an answer), how long
    it took, the answer's headers and body (cut at the configured limit;
    ``body_truncated`` says so), the ``error`` when there was no good answer, and when the
    next attempt is due (None when none follows)."""

    id: int
    delivery_id: uuid.UUID
    message_id: uuid.UUID
    endpoint_id: uuid.UUID
    attempt: int
    attempted_at: datetime
    url: str
    outcome: AttemptOutcome
    status: int | None
    duration_ms: float
    response_headers: dict[str, str] | None
    response_body: str | None
    body_truncated: bool
    error: str | None
    next_attempt_at: datetime | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Attempt:
        """Build from a ``webhook_attempt`` row."""
        return cls(
            id=row["id"],
            delivery_id=row["delivery_id"],
            message_id=row["message_id"],
            endpoint_id=row["endpoint_id"],
            attempt=row["attempt"],
            attempted_at=row["attempted_at"],
            url=row["url"],
            outcome=AttemptOutcome(row["outcome"]),
            status=row["status"],
            duration_ms=row["duration_ms"],
            response_headers=row["response_headers"],
            response_body=row["response_body"],
            body_truncated=row["body_truncated"],
            error=row["error"],
            next_attempt_at=row["next_attempt_at"],
        )


@dataclass(frozen=True, slots=True)
class SentMessage(_ToJson):
    """What ``send_event`` returns: the message's id and one delivery (job) id per
    endpoint it goes to. ``created`` is false when a message of that id already existed
    (nothing new was sent)."""

    message_id: uuid.UUID
    delivery_ids: tuple[uuid.UUID, ...]
    created: bool = True


class EndpointDisabledHook(Protocol):
    """Called when the service disables an endpoint by itself (410 Gone, or failing for
    ``disable_after``), after the change is committed: the runtime's failure policy
    raises attention with it. May be sync or async; its errors are logged, not raised."""

    def __call__(self, endpoint: Endpoint, reason: str, /) -> Awaitable[None] | None: ...
