"""The audit stream: an integration's lifecycle and job events read as one timeline
(Python and ``patchbay integrations events --jobs``), and exported at least once to a real
local HTTP receiver and to a file, across late commits, rollbacks and two daemons."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import Eventually
from psycopg import sql

from patchbay.connectors import (
    AuthError,
    Connector,
    ConnectorConfig,
    ConnectorExecutor,
    JobContext,
    sync,
)
from patchbay.queue import QueueClient
from patchbay.runtime.audit import (
    AuditEntry,
    AuditExporter,
    AuditLog,
    FileSink,
    HttpSink,
    worker_identity,
)
from patchbay.runtime.failure_policy import FailureTracker
from patchbay.runtime.registry import Registry

PATCHBAY = str(Path(sys.executable).parent / "patchbay")


class PulseConfig(ConnectorConfig):
    mode: str = "ok"


class Pulse(Connector[PulseConfig]):
    name = "pulse"
    version = "1.0.0"
    config_model = PulseConfig

    @sync(every="*/5 * * * *")
    async def items(self, ctx: JobContext[PulseConfig]) -> None:
        if ctx.config.mode == "auth":
            raise AuthError("401 Unauthorized: token revoked")
        if ctx.config.mode == "boom":
            raise RuntimeError("upstream exploded")
        ctx.emit("items", [{"id": "1"}, {"id": "2"}])


class Runtime:
    """A registry, a queue client, and the connector executor with the failure policy."""

    def __init__(self, client: QueueClient, registry: Registry, executor: ConnectorExecutor):
        self.client, self.registry, self.executor = client, registry, executor

    async def sync_and_wait(self, integration: str) -> None:
        """Enqueue a sync and wait until its job finished (its events are written by then:
        the failure policy's hooks run before the job's result)."""
        (job_id,) = await self.registry.sync_now(integration, self.executor)
        assert job_id is not None
        await _job_finished(self.client, job_id)


async def _job_finished(client: QueueClient, job_id: Any, within: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while (await client.get_job(job_id)).state.value not in ("completed", "failed"):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"job {job_id} did not finish within {within}s")
        await asyncio.sleep(0.02)


@pytest.fixture
async def runtime(database_url: str, schema: str) -> AsyncIterator[Runtime]:
    async with QueueClient(database_url, schema=schema, maintenance_interval=0.2) as client:
        tracker = FailureTracker(client)
        await tracker.ensure_queue()
        executor = ConnectorExecutor(client, [Pulse()], hooks=tracker)
        await executor.ensure_queues()
        # Every job transition recorded, and the first failure is final.
        await client.update_queue("pulse.items", events=True, retry_limit=0)
        await executor.start(concurrency=2, poll_interval=0.05)
        async with Registry(
            database_url,
            schema=schema,
            connectors={"pulse": Pulse},
            on_resume=tracker.on_resume,
            pool_size=2,
        ) as registry:
            await registry.add_tenant("acme")
            yield Runtime(client, registry, executor)


async def test_timeline_holds_lifecycle_and_job_events_in_time_order(
    runtime: Runtime, eventually: Eventually
) -> None:
    registry = runtime.registry
    await registry.add_integration("acme-crm", tenant="acme", connector="pulse", config={})
    await runtime.sync_and_wait("acme-crm")
    await registry.pause("acme-crm", reason="maintenance", actor="ops")
    await registry.resume("acme-crm", actor="ops")
    await registry.update_integration("acme-crm", config={"mode": "auth"})
    await runtime.sync_and_wait("acme-crm")
    assert (await registry.get_integration("acme-crm")).status == "needs_attention"
    await registry.update_integration("acme-crm", config={"mode": "ok"})
    await registry.resume("acme-crm", actor="support")

    entries = await AuditLog(runtime.client).timeline("acme-crm")
    lifecycle = [e.kind for e in entries if e.source == "integration"]
    assert lifecycle == [
        "created",
        "sync_requested",
        "synced",
        "paused",
        "resumed",
        "config_changed",
        "sync_requested",
        "needs_attention",
        "config_changed",
        "resumed",
        "resolved",
    ]
    jobs = [(e.kind, e.to_state) for e in entries if e.source == "job"]
    assert jobs == [
        ("created", "queued"),
        ("started", "active"),
        ("completed", "completed"),
        ("created", "queued"),
        ("started", "active"),
        ("failed", "failed"),
    ]
    assert [e.at for e in entries] == sorted(e.at for e in entries)
    assert {e.integration_id for e in entries} == {"acme-crm"}
    assert {e.tenant_id for e in entries} == {"acme"}
    # The sync's counts, which job it was and which process ran it.
    synced = next(e for e in entries if e.kind == "synced")
    assert synced.data["records"] == {"items": 2}
    assert synced.data["worker"] == worker_identity()
    first_job = next(e for e in entries if e.source == "job")
    assert synced.data["job_id"] == str(first_job.job_id)
    # The failed job's error, without its traceback; the incident the resume resolved.
    failed = next(e for e in entries if e.kind == "failed")
    assert failed.data["error"]["message"] == "401 Unauthorized: token revoked"
    assert "traceback" not in failed.data["error"]
    attention = next(e for e in entries if e.kind == "needs_attention")
    resolved = next(e for e in entries if e.kind == "resolved")
    assert resolved.data == {"incident": attention.data["incident"], "by": "support"}

    # Filters: lifecycle only; since a moment; a limit keeps the oldest.
    only = await AuditLog(runtime.client).timeline("acme-crm", jobs=False)
    assert [e.kind for e in only] == lifecycle
    later = await AuditLog(runtime.client).timeline("acme-crm", since=attention.at)
    assert later[0].at >= attention.at and later[-1].kind == "resolved"
    assert [e.key for e in await AuditLog(runtime.client).timeline("acme-crm", limit=3)] == [
        e.key for e in entries[:3]
    ]
    assert await AuditLog(runtime.client).timeline("nobody") == []


async def test_a_warning_that_resolves_itself_is_in_the_stream(
    runtime: Runtime, eventually: Eventually
) -> None:
    registry = runtime.registry
    await registry.add_integration("acme-erp", tenant="acme", connector="pulse", config={})
    await registry.update_integration("acme-erp", config={"mode": "boom"})
    await runtime.sync_and_wait("acme-erp")
    await registry.update_integration("acme-erp", config={"mode": "ok"})
    await runtime.sync_and_wait("acme-erp")
    kinds = [e.kind for e in await AuditLog(runtime.client).timeline("acme-erp", jobs=False)]
    assert kinds[-2:] == ["synced", "resolved"]
    resolved = (await AuditLog(runtime.client).timeline("acme-erp", jobs=False))[-1]
    assert resolved.data["by"] == "success" and resolved.data["level"] == "warning"


def test_cli_prints_the_timeline_with_job_events(
    database_url: str, schema: str, runtime_events: str
) -> None:
    base = [PATCHBAY, "--database-url", database_url, "--schema", schema, "integrations"]
    shown = subprocess.run(
        [*base, "events", runtime_events, "--jobs", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    # The job is sent in the sync request's transaction (same time: lifecycle first); the
    # synced event is written by the handler, before the job's completion.
    assert [(e["source"], e["kind"]) for e in doc] == [
        ("integration", "created"),
        ("integration", "sync_requested"),
        ("job", "created"),
        ("job", "started"),
        ("integration", "synced"),
        ("job", "completed"),
    ]
    assert all(e["integration_id"] == runtime_events for e in doc)
    table = subprocess.run(
        [*base, "events", runtime_events, "--jobs"], capture_output=True, text=True, timeout=60
    )
    assert table.returncode == 0, table.stderr
    assert "completed" in table.stdout and "synced" in table.stdout
    # Without --jobs the registry's own listing, as before.
    plain = subprocess.run(
        [*base, "events", runtime_events, "--json"], capture_output=True, text=True, timeout=60
    )
    assert {e["kind"] for e in json.loads(plain.stdout)} == {"created", "sync_requested", "synced"}
    refused = subprocess.run(
        [*base, "events", runtime_events, "--jobs", "--since-id", "3"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0 and "--since" in refused.stderr
    unknown = subprocess.run(
        [*base, "events", "nobody", "--jobs"], capture_output=True, text=True, timeout=60
    )
    assert unknown.returncode != 0 and "nobody" in unknown.stderr


@pytest.fixture
def runtime_events(database_url: str, schema: str) -> str:
    """An integration with one completed sync, made in a loop of its own."""

    async def make() -> None:
        async with QueueClient(database_url, schema=schema) as client:
            tracker = FailureTracker(client)
            executor = ConnectorExecutor(client, [Pulse()], hooks=tracker)
            await executor.ensure_queues()
            await client.update_queue("pulse.items", events=True)
            async with Registry(
                database_url, schema=schema, connectors={"pulse": Pulse}, pool_size=2
            ) as registry:
                await registry.add_tenant("acme")
                await registry.add_integration(
                    "acme-cli", tenant="acme", connector="pulse", config={}
                )
                (job_id,) = await registry.sync_now("acme-cli", executor)
                await executor.start(concurrency=1, poll_interval=0.05)
                await _job_finished(client, job_id)

    asyncio.run(make())
    return "acme-cli"


# -- export ----------------------------------------------------------------------------------


class Receiver:
    """A real local HTTP endpoint that records the batches it accepts; ``fail`` makes it
    answer 500 to that many requests first."""

    def __init__(self) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.fail = 0
        self.requests = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.requests += 1
                if receiver.fail > 0:
                    receiver.fail -= 1
                    self.send_response(500)
                else:
                    receiver.batches.append(json.loads(body)["entries"])
                    self.send_response(204)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/audit"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def keys(self) -> list[str]:
        return [entry["key"] for batch in self.batches for entry in batch]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.server.shutdown()
    found.server.server_close()


def _event(conn: psycopg.Connection[Any], schema: str, kind: str) -> int:
    row = conn.execute(
        sql.SQL(
            "insert into {}.integration_event (integration_id, tenant_id, kind, data)"
            " values ('acme-crm', 'acme', %s, '{{}}') returning id"
        ).format(sql.Identifier(schema)),
        (kind,),
    ).fetchone()
    assert row is not None
    return int(row[0])


async def _stream_keys(client: QueueClient) -> set[str]:
    """Every entry the stream holds now (integration events and job events of
    integrations' jobs)."""
    keys = {e.key for e in await AuditLog(client).timeline("acme-crm", limit=10_000)}
    return keys


async def test_exporter_delivers_everything_at_least_once_over_http(
    runtime: Runtime, eventually: Eventually, receiver: Receiver
) -> None:
    registry = runtime.registry
    await registry.add_integration("acme-crm", tenant="acme", connector="pulse", config={})
    await runtime.sync_and_wait("acme-crm")
    await registry.pause("acme-crm")
    exporter = AuditExporter(
        runtime.client, HttpSink(receiver.url, timeout=5), name="siem", batch_size=3
    )
    # The receiver is down: the round raises and the position stays.
    receiver.fail = 1
    with pytest.raises(RuntimeError, match="answered 500"):
        await exporter.export_once()
    position = await exporter.position()
    assert position is not None
    assert (position["event_id"], position["job_event_id"], position["delivered"]) == (0, 0, 0)
    # Then it takes batches (of 3 per source) until the stream is drained.
    while await exporter.export_once():
        pass
    expected = await _stream_keys(runtime.client)
    assert len(expected) == 7  # created, sync_requested, synced, paused; 3 job events
    assert set(receiver.keys) == expected
    assert len(receiver.keys) == len(expected)  # nothing twice within one exporter
    first = receiver.batches[0]
    assert first[0]["kind"] == "created" and first[0]["source"] == "integration"
    assert all(len(batch) <= 6 for batch in receiver.batches)
    # New events later: only those are sent.
    await registry.resume("acme-crm")
    sent = len(receiver.keys)
    assert await exporter.export_once() == 1
    assert receiver.keys[sent:] == [
        e.key for e in (await AuditLog(runtime.client).timeline("acme-crm"))[-1:]
    ]
    position = await exporter.position()
    assert position is not None and position["delivered"] == len(receiver.keys)


async def test_a_late_commit_below_the_position_is_not_lost(
    runtime: Runtime, database_url: str, schema: str, receiver: Receiver
) -> None:
    exporter = AuditExporter(
        runtime.client, HttpSink(receiver.url, timeout=5), name="late", gap_grace=0
    )
    with (
        psycopg.connect(database_url) as slow,
        psycopg.connect(database_url, autocommit=True) as fast,
    ):
        early = _event(slow, schema, "early")  # its transaction stays open
        later = _event(fast, schema, "later")
        assert later > early
        await exporter.export_once()
        assert receiver.keys == [f"integration:{later}"]
        position = await exporter.position()
        assert position is not None and position["event_id"] < early
        slow.commit()
    # Once committed, the early event comes, and the position passes both.
    for _ in range(200):
        await exporter.export_once()
        position = await exporter.position()
        if position and position["event_id"] >= later:
            break
        await asyncio.sleep(0.05)
    assert sorted(receiver.keys) == sorted([f"integration:{early}", f"integration:{later}"])
    assert position is not None and position["event_id"] == later


async def test_a_rolled_back_id_is_passed_once_no_transaction_can_fill_it(
    runtime: Runtime, database_url: str, schema: str, tmp_path: Path
) -> None:
    sink = FileSink(tmp_path / "audit.jsonl")
    exporter = AuditExporter(runtime.client, sink, name="file", gap_grace=0)
    with psycopg.connect(database_url) as conn:
        lost = _event(conn, schema, "lost")
        conn.rollback()
        kept = _event(conn, schema, "kept")
        conn.commit()
    assert kept > lost
    position: dict[str, Any] | None = None
    # Other databases' transactions hold the cluster's xmin back a while: wait for them.
    for _ in range(600):
        await exporter.export_once()
        position = await exporter.position()
        if position and position["event_id"] >= kept:
            break
        await asyncio.sleep(0.1)
    assert position is not None and position["event_id"] == kept
    lines = [json.loads(line) for line in sink.path.read_text().splitlines()]
    assert [line["key"] for line in lines] == [f"integration:{kept}"]
    assert lines[0]["kind"] == "kept" and lines[0]["integration_id"] == "acme-crm"
    # A restarted exporter (another process) starts from the stored position.
    again = AuditExporter(runtime.client, sink, name="file")
    assert await again.export_once() == 0


async def test_two_daemons_exporting_together_miss_nothing(
    runtime: Runtime, database_url: str, schema: str, receiver: Receiver
) -> None:
    async with QueueClient(database_url, schema=schema, maintenance=False) as other:
        exporters = [
            AuditExporter(c, HttpSink(receiver.url, timeout=5), name="shared", batch_size=5)
            for c in (runtime.client, other)
        ]
        for exporter in exporters:
            exporter.poll_interval = 0.02
            exporter.start()
        written: list[int] = []
        with psycopg.connect(database_url, autocommit=True) as conn:
            for n in range(60):
                written.append(_event(conn, schema, f"step_{n}"))
                if n % 7 == 0:
                    await asyncio.sleep(0.01)
        expected = {f"integration:{i}" for i in written}
        for _ in range(500):
            if expected <= set(receiver.keys):
                break
            await asyncio.sleep(0.02)
        for exporter in exporters:
            await exporter.stop()
        assert expected <= set(receiver.keys)
        assert sum(e.delivered for e in exporters) == len(receiver.keys)
        # The position lock let one daemon deliver at a time: batches never interleave.
        assert all(e.rounds > 0 for e in exporters)


def test_entries_are_json_ready() -> None:
    from datetime import UTC, datetime

    entry = AuditEntry(
        source="integration",
        id=7,
        integration_id="i",
        tenant_id="t",
        at=datetime(2026, 1, 1, tzinfo=UTC),
        kind="synced",
        data={"records": {"x": 1}},
    )
    assert entry.key == "integration:7"
    assert json.loads(json.dumps(entry.to_json()))["at"] == "2026-01-01T00:00:00+00:00"


def test_daemon_settings_name_the_exporters(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from patchbay.runtime.daemon import exporters_from
    from patchbay.runtime.settings import DaemonSettings

    with pytest.raises(ValidationError, match="http"):
        DaemonSettings(audit_export_url="ftp://audit.example.com")
    settings = DaemonSettings(
        audit_export_url="https://audit.example.com/in", audit_export_file=str(tmp_path / "a")
    )
    client = QueueClient("postgresql://unused", schema="patchbay")
    exporters = exporters_from(settings, client)
    assert [(e.name, type(e.sink).__name__) for e in exporters] == [
        ("http", "HttpSink"),
        ("file", "FileSink"),
    ]
    assert exporters_from(DaemonSettings(), client) == []
