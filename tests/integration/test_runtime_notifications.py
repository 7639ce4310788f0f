"""Notifications reach every channel once per incident transition, each channel retried on
its own: a real HTTP receiver (Slack-compatible) and a real SMTP server on localhost."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import uuid
from collections.abc import Iterator
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from conftest import Eventually

from patchbay.queue import QueueClient
from patchbay.runtime.failure_policy import NOTIFY_QUEUE
from patchbay.runtime.notifications import (
    DELIVER_QUEUE,
    EmailChannel,
    LogChannel,
    Notification,
    Notifier,
    SlackChannel,
)


class _Receiver(BaseHTTPRequestHandler):
    bodies: list[dict[str, Any]]
    fail_first: list[bool]

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        if self.fail_first and self.fail_first.pop():
            self.send_response(503)
        else:
            self.bodies.append(body)
            self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def slack() -> Iterator[tuple[str, list[dict[str, Any]], list[bool]]]:
    bodies: list[dict[str, Any]] = []
    fail_first: list[bool] = []
    handler = type("Handler", (_Receiver,), {"bodies": bodies, "fail_first": fail_first})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", bodies, fail_first
    server.shutdown()


class _Mailbox:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope.content)
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[int, _Mailbox]]:
    box = _Mailbox()
    with socket.socket() as probe:  # a free port: the controller checks it can connect
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield port, box
    controller.stop()


def _note_data(transition: str = "opened", tenant: str = "acme") -> dict[str, Any]:
    return {
        "incident": str(uuid.uuid4()),
        "transition": transition,
        "scope": "integration",
        "level": "attention",
        "title": "integration crm of tenant acme needs attention: AuthError: 401",
        "tenant": tenant,
        "integration": "crm",
        "connector": "contacts",
        "last_error": {"type": "AuthError", "message": "401 Unauthorized"},
        "failure_count": 1,
        "first_failure_at": "2026-11-27T09:14:00+00:00",
        "last_failure_at": "2026-11-27T09:14:00+00:00",
    }


@pytest.mark.smoke
async def test_each_channel_gets_each_transition_once(
    client: QueueClient,
    slack: tuple[str, list[dict[str, Any]], list[bool]],
    smtp: tuple[int, _Mailbox],
    eventually: Eventually,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url, bodies, fail_first = slack
    port, box = smtp
    fail_first.append(True)  # the Slack receiver fails once: only Slack is retried
    notifier = Notifier(
        client,
        [
            LogChannel(),
            EmailChannel("127.0.0.1", "patchbay@example.com", ["oncall@example.com"], port=port),
        ],
        tenant_channels={"acme": [SlackChannel(url)]},
    )
    await notifier.ensure_queues()
    await client.update_queue(DELIVER_QUEUE, retry_delay=0.0)
    data = _note_data()
    note_job = uuid.uuid4()
    await client.send(NOTIFY_QUEUE, data, id=note_job)
    await client.send(NOTIFY_QUEUE, data, id=note_job)  # the same transition again
    with caplog.at_level(logging.WARNING, logger="patchbay.attention"):
        workers = await notifier.start(concurrency=2)
        await eventually(lambda: notifier.delivered == 3, within=20)
        await asyncio.gather(*(w.drain() for w in workers))
    assert len(bodies) == 1 and "needs attention" in bodies[0]["text"]
    assert "[OPEN]" in bodies[0]["text"] and "since 2026-11-27T09:14:00" in bodies[0]["text"]
    assert len(box.messages) == 1
    mail = message_from_bytes(box.messages[0])
    assert mail["To"] == "oncall@example.com" and "AuthError" in mail.get_payload()
    assert sum("needs attention" in r.getMessage() for r in caplog.records) == 1
    stats = (await client.stats(DELIVER_QUEUE))[0]
    assert stats.completed == 3 and stats.failed == 0


async def test_other_tenants_do_not_get_a_tenants_channel(
    client: QueueClient,
    slack: tuple[str, list[dict[str, Any]], list[bool]],
    eventually: Eventually,
) -> None:
    url, bodies, _ = slack
    notifier = Notifier(client, [LogChannel()], tenant_channels={"acme": [SlackChannel(url)]})
    await notifier.ensure_queues()
    await client.send(NOTIFY_QUEUE, _note_data(tenant="globex"))
    await notifier.start()
    await eventually(lambda: notifier.delivered == 1)
    assert bodies == []


def test_summary_reads_well() -> None:
    note = Notification.from_payload(_note_data("resolved"))
    assert note.summary.startswith("[RESOLVED] integration crm of tenant acme")
