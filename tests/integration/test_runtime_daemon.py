"""The daemon runs the whole loop in-process: schedules per tenant, fan-out, syncs, the
failure policy and notifications."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest
from conftest import Eventually
from test_runtime_scheduler_policy import Flaky, add_integration, add_tenant, integration_row

from patchbay.runtime.daemon import Daemon
from patchbay.runtime.notifications import Notification
from patchbay.runtime.settings import DaemonSettings
from patchbay.secrets import format_master_key, generate_master_key


class Inbox:
    name = "inbox"

    def __init__(self) -> None:
        self.notes: list[Notification] = []

    async def send(self, note: Notification) -> None:
        self.notes.append(note)


@pytest.fixture
def master_keys(monkeypatch: pytest.MonkeyPatch) -> str:
    value = format_master_key(generate_master_key("k1"))
    monkeypatch.setenv("PATCHBAY_MASTER_KEYS", value)
    monkeypatch.delenv("PATCHBAY_MASTER_KEY_FILE", raising=False)
    return value


async def test_daemon_syncs_tenants_and_tells_people_when_one_needs_attention(
    database_url: str, schema: str, master_keys: str, eventually: Eventually
) -> None:
    add_tenant(database_url, schema, "acme")
    add_integration(database_url, schema, "acme-ok", "acme", mode="ok")
    add_integration(database_url, schema, "acme-bad", "acme", mode="auth")
    inbox = Inbox()
    settings = DaemonSettings(
        database_url=database_url,
        PATCHBAY_SCHEMA=schema,
        poll_interval=0.05,
        maintenance_interval=0.2,
        notify_log=False,
        shutdown_grace=1.0,
    )
    daemon = Daemon(
        settings, connectors={"flaky": Flaky}, channels=[inbox], announce=lambda text: None
    )
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    await asyncio.wait_for(daemon.ready.wait(), timeout=30)
    parts = daemon.parts
    assert parts is not None
    schedules = {s.name for s in await parts.client.schedules.list()}
    assert "sync_all:acme" in schedules
    # Fan out now rather than waiting for the minute's tick.
    await parts.scheduler.fan_out("acme")
    await eventually(lambda: len(inbox.notes) == 1, within=30)
    assert inbox.notes[0].integration == "acme-bad" and inbox.notes[0].transition == "opened"
    await eventually(
        lambda: integration_row(database_url, schema, "acme-ok")["last_success_at"] is not None
    )
    assert integration_row(database_url, schema, "acme-bad")["status"] == "needs_attention"
    stop.set()
    await asyncio.wait_for(task, timeout=30)
    stats = {s.queue: s for s in await _stats(database_url, schema)}
    assert stats["flaky.items"].active == 0


async def _stats(database_url: str, schema: str):  # type: ignore[no-untyped-def]
    from patchbay.queue import QueueClient

    async with QueueClient(database_url, schema=schema) as client:
        return await client.stats()


def test_production_mode_refuses_to_start_without_master_keys(
    database_url: str, schema: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PATCHBAY_MASTER_KEY")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "patchbay.runtime.cli",
            "--database-url",
            database_url,
            "--schema",
            schema,
            "run",
            "--duration",
            "5",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 1
    assert "no master keys configured" in result.stderr


def test_tenant_channels_come_from_settings() -> None:
    from patchbay.runtime.daemon import DaemonConfigError, tenant_channels_from

    settings = DaemonSettings(
        notify_tenants={
            "acme": [
                {"type": "slack", "url": "https://hooks.example.com/x"},
                {
                    "type": "email",
                    "host": "smtp.example.com",
                    "sender": "pb@example.com",
                    "recipients": ["ops@acme.example"],
                },
            ]
        }
    )
    channels = tenant_channels_from(settings)
    assert [c.name for c in channels["acme"]] == ["acme:slack:0", "acme:email:1"]
    with pytest.raises(DaemonConfigError, match="unknown type"):
        tenant_channels_from(DaemonSettings(notify_tenants={"a": [{"type": "pager"}]}))
    with pytest.raises(DaemonConfigError, match="incomplete"):
        tenant_channels_from(DaemonSettings(notify_tenants={"a": [{"type": "slack"}]}))


async def test_a_disabled_webhook_endpoint_opens_one_incident(
    database_url: str, schema: str
) -> None:
    import types
    import uuid as uuid_module

    from patchbay.queue import QueueClient
    from patchbay.runtime.daemon import endpoint_disabled_hook
    from patchbay.runtime.failure_policy import FailureTracker

    async with QueueClient(database_url, schema=schema) as client:
        tracker = FailureTracker(client)
        await tracker.ensure_queue()
        hook = endpoint_disabled_hook(tracker)
        endpoint = types.SimpleNamespace(
            id=uuid_module.uuid4(), tenant="acme", url="https://hooks.acme.example/in"
        )
        await hook(endpoint, "410 Gone")  # type: ignore[arg-type]
        await hook(endpoint, "410 Gone")  # type: ignore[arg-type]
        [incident] = await tracker.incidents(status="open")
        assert incident["scope"] == "endpoint" and incident["tenant_id"] == "acme"
        assert "was disabled: 410 Gone" in incident["title"]
        assert incident["failure_count"] == 2
