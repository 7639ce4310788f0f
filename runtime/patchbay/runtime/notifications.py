"""Notifications: telling people an incident opened, escalated or resolved.

Guarantee
    Each incident transition is one job on ``patchbay.notify`` (enqueued by the failure
    policy in the transaction that made the transition, with an id derived from it, so a
    transition is never notified twice). The notifier turns it into one delivery job per
    channel on ``patchbay.notify.deliver``, again with derived ids: each channel is
    retried on its own, and a channel that succeeded is not sent again when another fails.

Channels: :class:`LogChannel` (the log), :class:`SlackChannel` (a Slack-compatible
incoming webhook: ``{"text": ...}``), :class:`EmailChannel` (SMTP), and
:class:`WebhookChannel` (a signed webhook through patchbay's own webhook delivery, with its
retry schedule). Channels are configured per deployment and, added to those, per tenant.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any, Protocol

import httpx

from patchbay.queue import InvalidOption, Job, QueueClient, QueueNotFound, Worker

from .failure_policy import NOTIFY_QUEUE

__all__ = [
    "DELIVER_QUEUE",
    "Channel",
    "EmailChannel",
    "LogChannel",
    "Notification",
    "Notifier",
    "SlackChannel",
    "WebhookChannel",
]

log = logging.getLogger("patchbay.runtime.notifications")

DELIVER_QUEUE = "patchbay.notify.deliver"
_DELIVERY_NAMESPACE = uuid.UUID("0f1d1a43-9c33-4d55-8f0e-6c4f3f7f2d10")


@dataclass(frozen=True, slots=True)
class Notification:
    """One incident transition, as channels receive it."""

    incident: str
    transition: str
    scope: str
    level: str
    title: str
    tenant: str | None
    integration: str | None
    connector: str | None
    last_error: Mapping[str, Any] | None
    failure_count: int
    first_failure_at: str | None
    last_failure_at: str | None

    @classmethod
    def from_payload(cls, data: Mapping[str, Any]) -> Notification:
        """From a ``patchbay.notify`` job's data."""
        return cls(
            incident=str(data["incident"]),
            transition=str(data["transition"]),
            scope=str(data.get("scope", "integration")),
            level=str(data.get("level", "attention")),
            title=str(data.get("title", "")),
            tenant=data.get("tenant"),
            integration=data.get("integration"),
            connector=data.get("connector"),
            last_error=data.get("last_error"),
            failure_count=int(data.get("failure_count") or 0),
            first_failure_at=data.get("first_failure_at"),
            last_failure_at=data.get("last_failure_at"),
        )

    @property
    def summary(self) -> str:
        """One line for people: what happened and since when."""
        verb = {"opened": "OPEN", "escalated": "ESCALATED", "resolved": "RESOLVED"}.get(
            self.transition, self.transition.upper()
        )
        since = f" since {self.first_failure_at}" if self.first_failure_at else ""
        if self.transition == "resolved":
            return f"[{verb}] {self.title}"
        return f"[{verb}] {self.title}{since} ({self.failure_count} failure(s))"

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {name: getattr(self, name) for name in self.__slots__}


class Channel(Protocol):
    """Somewhere notifications go. ``name`` must be unique among a notifier's channels."""

    name: str

    async def send(self, note: Notification) -> None:
        """Deliver one notification; raise to have it retried."""
        ...


@dataclass(slots=True)
class LogChannel:
    """Writes notifications to the ``patchbay.attention`` logger (WARNING; INFO when
    resolved)."""

    name: str = "log"
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("patchbay.attention"))

    async def send(self, note: Notification) -> None:
        """Log the summary."""
        level = logging.INFO if note.transition == "resolved" else logging.WARNING
        self.logger.log(level, "%s", note.summary)


@dataclass(slots=True)
class SlackChannel:
    """Posts ``{"text": summary}`` to a Slack-compatible incoming-webhook URL (Slack,
    Mattermost, Rocket.Chat, ...). ``transport`` lets deployments pass the SSRF-guarded
    transport of patchbay's webhooks."""

    url: str
    name: str = "slack"
    timeout: float = 10.0
    transport: httpx.AsyncBaseTransport | None = None

    async def send(self, note: Notification) -> None:
        """POST the message; a non-2xx answer raises (and is retried)."""
        async with httpx.AsyncClient(timeout=self.timeout, transport=self.transport) as http:
            response = await http.post(self.url, json={"text": note.summary})
        if not response.is_success:
            raise RuntimeError(f"{self.name}: the webhook answered {response.status_code}")


@dataclass(slots=True)
class EmailChannel:
    """Sends an email over SMTP (STARTTLS when ``starttls``; login when ``username``)."""

    host: str
    sender: str
    recipients: Sequence[str]
    port: int = 25
    name: str = "email"
    starttls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 30.0

    def __post_init__(self) -> None:
        if not self.recipients:
            raise InvalidOption("an email channel needs at least one recipient")

    async def send(self, note: Notification) -> None:
        """Send the message (in a thread: smtplib blocks)."""
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = ", ".join(self.recipients)
        message["Subject"] = note.summary[:200]
        error = dict(note.last_error or {})
        lines = [note.summary, ""]
        if error:
            lines.append(f"Last error: {error.get('type', '')}: {error.get('message', '')}")
        lines += [
            f"Tenant: {note.tenant or '-'}",
            f"Integration: {note.integration or '-'}",
            f"Connector: {note.connector or '-'}",
            f"Incident: {note.incident}",
        ]
        message.set_content("\n".join(lines))
        await asyncio.to_thread(self._send, message)

    def _send(self, message: EmailMessage) -> None:
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
            if self.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if self.username:
                smtp.login(self.username, self.password or "")
            smtp.send_message(message)


@dataclass(slots=True)
class WebhookChannel:
    """Sends the notification as a signed webhook event (``incident.<transition>``) through
    patchbay's webhook delivery: ``send_event(tenant, event_type, payload)`` is the
    webhooks service's method (its endpoints of ``tenant`` that accept the event type get
    it, with signatures and retries)."""

    send_event: Callable[[str, str, Mapping[str, Any]], Awaitable[Any]]
    tenant: str
    name: str = "webhook"

    async def send(self, note: Notification) -> None:
        """Enqueue the event for delivery."""
        await self.send_event(self.tenant, f"incident.{note.transition}", note.to_json())


class Notifier:
    """Works ``patchbay.notify`` (fan-out to channels) and ``patchbay.notify.deliver``
    (one channel each). ``channels`` apply to every notification; ``tenant_channels[t]``
    to incidents of tenant ``t`` as well."""

    def __init__(
        self,
        queue: QueueClient,
        channels: Iterable[Channel] = (),
        *,
        tenant_channels: Mapping[str, Iterable[Channel]] | None = None,
    ) -> None:
        self.queue = queue
        self.channels = {c.name: c for c in channels}
        self.tenant_channels = {
            t: {c.name: c for c in cs} for t, cs in (tenant_channels or {}).items()
        }
        for tenant, named in self.tenant_channels.items():
            clash = set(named) & set(self.channels)
            if clash:
                raise InvalidOption(
                    f"tenant {tenant!r} channel name(s) {', '.join(sorted(clash))} are "
                    "already deployment channels; give them other names"
                )
        self.delivered = 0

    async def ensure_queues(self) -> None:
        """Create the two notification queues if missing."""
        for name, settings in (
            (NOTIFY_QUEUE, {"retry_limit": 10, "retry_delay": 5.0}),
            (DELIVER_QUEUE, {"retry_limit": 12, "retry_delay": 10.0, "retry_delay_max": 3600.0}),
        ):
            try:
                await self.queue.get_queue(name)
            except QueueNotFound:
                await self.queue.create_queue(name, **settings)

    def _channels_for(self, tenant: str | None) -> dict[str, Channel]:
        found = dict(self.channels)
        if tenant is not None:
            found.update(self.tenant_channels.get(tenant, {}))
        return found

    async def start(self, *, concurrency: int = 4) -> list[Worker]:
        """Start both workers."""
        await self.ensure_queues()
        return [
            await self.queue.work(NOTIFY_QUEUE, self._fan_out, concurrency=concurrency),
            await self.queue.work(DELIVER_QUEUE, self._deliver, concurrency=concurrency),
        ]

    async def _fan_out(self, job: Job) -> dict[str, Any]:
        note = Notification.from_payload(job.data)
        names = sorted(self._channels_for(note.tenant))
        for name in names:
            delivery_id = uuid.uuid5(_DELIVERY_NAMESPACE, f"{job.id}:{name}")
            await self.queue.send(
                DELIVER_QUEUE, {"channel": name, "note": job.data}, id=delivery_id
            )
        return {"channels": names}

    async def _deliver(self, job: Job) -> None:
        note = Notification.from_payload(job.data["note"])
        channel = self._channels_for(note.tenant).get(job.data["channel"])
        if channel is None:
            log.warning(
                "notification channel %r is no longer configured; dropping %s",
                job.data["channel"],
                note.incident,
            )
            return
        await channel.send(note)
        self.delivered += 1
