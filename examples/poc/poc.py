"""The one-day proof of concept: what a team evaluating patchbay wants to see, in one run.

    .venv/bin/python examples/poc/poc.py

It uses the public API only (``patchbay.runtime``, ``patchbay.queue``), a fake of the
example ``contacts`` API and two local receivers (a customer's webhook endpoint and a team
chat), and prints an account of what happened:

1. a tenant's ``sync_all`` cron schedule fires (the real minute tick: up to a minute's
   wait) and fans out one sync per integration;
2. the provider answers 500 to the first sync: the job fails, is retried after the
   queue's backoff, and succeeds;
3. a business transaction sends a ``contact.exported`` event with the write that caused
   it; a rolled-back one sends nothing; the endpoint answers 503 once, the signed delivery
   is retried on the Standard Webhooks schedule and accepted;
4. the tenant's token is revoked: the next sync fails with 401, the integration turns
   ``needs_attention`` and the chat receives one notification;
5. the integration's audit stream (lifecycle and job events) is read back, and the copy
   exported to a JSON-lines file is counted.

Database: ``PATCHBAY_DATABASE_URL``, else the embedded Postgres. The run uses a schema of
its own, ``$PATCHBAY_POC_SCHEMA`` (default ``patchbay_poc``), emptied at the start so
every run tells the same story. Exit code 0 when every step happened as described.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
from patchbay_example_contacts import ContactsConnector
from patchbay_example_contacts.fake_api import FakeContactsApi
from psycopg import sql

from patchbay.runtime import (
    AuditLog,
    Daemon,
    DaemonSettings,
    Registry,
    SlackChannel,
    resolve_database_url,
)

TENANT = "acme"
INTEGRATION = "acme-crm"
TOKEN_NAME = "contacts/token"
STEP_TIMEOUT = 90.0  # seconds any one step may take before the run reports a failure


def say(text: str = "") -> None:
    print(text, flush=True)


class Receiver:
    """A local HTTP server that records the JSON bodies POSTed to it; the first
    ``fail_first`` requests get 503 (a receiver having a bad moment)."""

    def __init__(self, name: str, *, fail_first: int = 0) -> None:
        self.name = name
        self.requests: list[tuple[int, dict[str, str], bytes]] = []
        self._fail_first = fail_first
        self._arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with receiver._arrived:
                    status = 503 if len(receiver.requests) < receiver._fail_first else 200
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    receiver.requests.append((status, headers, body))
                    receiver._arrived.notify_all()
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/{name}"

    def accepted(self) -> list[tuple[dict[str, str], bytes]]:
        return [(h, b) for status, h, b in self.requests if status == 200]

    def stop(self) -> None:
        self._server.shutdown()


def verify_signature(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The receiver's side of Standard Webhooks: HMAC-SHA256 of ``id.timestamp.body``
    with the endpoint's ``whsec_`` secret, compared in constant time."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    offered = [part.split(",", 1)[1] for part in headers["webhook-signature"].split()]
    return any(hmac.compare_digest(expected, value) for value in offered)


async def until(what: str, check: Callable[[], Awaitable[bool]], within: float) -> None:
    """Wait for ``check`` to hold (polled), or fail the run naming ``what``."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise SystemExit(f"FAILED: {what} did not happen within {within:g} s")
        await asyncio.sleep(0.2)


def clock(moment: datetime, start: datetime) -> str:
    """``HH:MM:SS.mmm (+s.s s)``: the wall time and the time since ``start``."""
    offset = (moment - start).total_seconds()
    return f"{moment.astimezone(UTC):%H:%M:%S}.{moment.microsecond // 1000:03d} (+{offset:5.1f} s)"


def _lines_of(path: Path, integration: str | None) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [e for e in lines if integration is None or e.get("integration_id") == integration]


def reset_schema(url: str, schema: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(schema)))


async def run(url: str, schema: str, workdir: Path) -> list[str]:
    """Run the story; returns the account's summary lines."""
    summary: list[str] = []
    token = f"acme-token-{int(time.time())}"
    api = FakeContactsApi(contacts=120, tokens={token}).start()
    endpoint = Receiver("hooks/acme", fail_first=1)
    chat = Receiver("chat")
    audit_file = workdir / "audit.jsonl"
    say(f"fake contacts API {api.url}; customer endpoint {endpoint.url}; team chat {chat.url}")
    settings = DaemonSettings(
        database_url=url,
        PATCHBAY_SCHEMA=schema,
        mode="development",
        poll_interval=0.2,
        maintenance_interval=0.5,
        shutdown_grace=5.0,
        notify_log=False,
        # The customer's endpoint is on this machine: let deliveries reach loopback.
        webhook_allowed_networks=["127.0.0.1/32"],
        audit_export_file=str(audit_file),
    )
    daemon = Daemon(
        settings,
        connectors={"contacts": ContactsConnector},
        channels=[SlackChannel(chat.url, name="team-chat")],
        announce=lambda text: say(f"   daemon: {text}"),
    )
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    try:
        await asyncio.wait_for(daemon.ready.wait(), timeout=60)
        parts = daemon.parts
        assert parts is not None
        client, webhooks = parts.client, parts.webhooks
        assert webhooks is not None
        sync_queue = ContactsConnector().queue_name("contacts")
        # A short retry delay so the backoff shows within the run (the default is 10 s,
        # doubled per retry); events on, so every transition reaches the audit stream.
        await client.update_queue(sync_queue, retry_delay=2.0, retry_backoff=True, events=True)

        say("\n== 0. register a tenant and its integration")
        async with Registry(
            url,
            schema=schema,
            connectors={"contacts": ContactsConnector},
            vault=parts.vault,
            on_resume=parts.tracker.on_resume,
        ) as registry:
            await registry.add_tenant(TENANT, name="Acme", sync_schedule="* * * * *")
            stored = await parts.vault.put(TENANT, TOKEN_NAME, token)
            await registry.add_integration(
                INTEGRATION,
                tenant=TENANT,
                connector="contacts",
                config={"base_url": api.url, "token": str(stored.ref)},
                check=True,
            )
            say(f"   tenant {TENANT}, integration {INTEGRATION}: config checked against the API")
            say(f"   the token lives in the vault; the config holds {stored.ref}")

            await daemon.reconcile_schedules()
            fires = await client.schedules.preview(f"sync_all:{TENANT}", 3)
            say(
                f"\n== 1. scheduled sync: schedule sync_all:{TENANT} fires at "
                + ", ".join(f"{f:%H:%M}" for f in fires)
            )
            say("   the provider will answer 500 to the first sync's requests (a bad deploy)")
            # The SDK's HTTP client tries a request 4 times in place before the job fails.
            api.fail(500, times=4)
            say(f"   waiting for the {fires[0]:%H:%M:%S} fire (the real minute tick)...")

            async def synced() -> bool:
                info = await registry.get_integration(INTEGRATION)
                return info.last_success_at is not None

            await until("the scheduled sync", synced, 60 + STEP_TIMEOUT)
            [fire] = (await client.schedules.fires(f"sync_all:{TENANT}", limit=1))[:1]
            jobs = (await client.list_jobs(queue=sync_queue)).jobs
            sync_job = jobs[-1]
            events = await client.job_events(sync_job.id)
            start = events[0].at
            say(f"   fire {fire.fire_at:%H:%M:%S} -> sync_all job -> sync job {sync_job.id}")
            for event in events:
                error = (event.data or {}).get("error") or {}
                detail = f"  {error.get('type')}: {error.get('message')}" if error else ""
                say(
                    f"   {clock(event.at, start)}  attempt {event.attempt}  "
                    f"{event.from_state or '-':>9} -> {event.to_state}{detail}"
                )
            retried = [e for e in events if e.to_state == "retrying"]
            completed = [e for e in events if e.to_state == "completed"]
            if not retried or not completed:
                raise SystemExit("FAILED: the sync was expected to fail once, then complete")
            again = next(e for e in events if e.to_state == "active" and e.attempt == 2)
            wait = (again.at - retried[0].at).total_seconds()
            say(
                f"   retried {wait:.1f} s after the failure (retry_delay 2 s +-20% jitter); "
                f"{api.requests} API requests in all"
            )
            summary.append(
                f"scheduled sync: fired by cron, failed with 500, retried after {wait:.1f} s, "
                "completed"
            )

            say("\n== 2. webhook delivery from a business transaction")
            added = await webhooks.add_endpoint(TENANT, endpoint.url, event_types=["contact.*"])
            secret = await webhooks.reveal_secret(added.id)
            async with await psycopg.AsyncConnection.connect(url) as conn:
                await conn.execute(
                    sql.SQL(
                        "create table if not exists {}.poc_export (id serial, at timestamptz)"
                    ).format(sql.Identifier(schema))
                )
                await conn.commit()
                async with conn.transaction(force_rollback=True):
                    await conn.execute(
                        sql.SQL("insert into {}.poc_export (at) values (now())").format(
                            sql.Identifier(schema)
                        )
                    )
                    await webhooks.send_event(TENANT, "contact.exported", {"n": 0}, conn=conn)
                say(
                    "   a transaction that rolled back sent nothing: "
                    f"{len(await webhooks.list_messages(TENANT))} message(s)"
                )
                async with conn.transaction():
                    await conn.execute(
                        sql.SQL("insert into {}.poc_export (at) values (now())").format(
                            sql.Identifier(schema)
                        )
                    )
                    sent = await webhooks.send_event(
                        TENANT, "contact.exported", {"contacts": 120}, conn=conn
                    )
            say(f"   committed with its business write: message {sent.message_id}")

            async def delivered() -> bool:
                return bool(endpoint.accepted())

            await until("the webhook delivery", delivered, STEP_TIMEOUT)
            for attempt in await webhooks.attempts(sent.message_id):
                after = (
                    f"; next attempt {attempt.next_attempt_at:%H:%M:%S}"
                    if attempt.next_attempt_at
                    else ""
                )
                say(
                    f"   attempt {attempt.attempt} at {attempt.attempted_at:%H:%M:%S}: "
                    f"HTTP {attempt.status}{after}"
                )
            headers, body = endpoint.accepted()[0]
            valid = verify_signature(secret, headers, body)
            say(f"   the endpoint got {json.loads(body)['type']!r}, signature valid: {valid}")
            if not valid:
                raise SystemExit("FAILED: the delivery's signature did not verify")
            summary.append(
                f"webhook: sent in the business transaction, {len(endpoint.requests)} attempts "
                "(503 then 200), signature verified"
            )

            say("\n== 3. the provider revokes the token")
            api.revoke(token)
            await registry.sync_now(INTEGRATION, parts.executor, actor="poc")

            async def noticed() -> bool:
                return bool(chat.accepted())

            await until("the attention notification", noticed, STEP_TIMEOUT)
            info = await registry.get_integration(INTEGRATION)
            note = json.loads(chat.accepted()[0][1])["text"]
            say(
                f"   {INTEGRATION} is now {info.status!r}: {(info.last_error or {}).get('message')}"
            )
            say(f"   team chat received: {note}")
            if info.status != "needs_attention":
                raise SystemExit(f"FAILED: expected needs_attention, got {info.status}")
            summary.append(f"revoked token: {INTEGRATION} needs_attention, 1 notification")

        say(f"\n== 4. the audit stream of {INTEGRATION}")
        entries = await AuditLog(client).timeline(INTEGRATION, limit=1000)
        for entry in entries:
            states = f" {entry.from_state or '-'} -> {entry.to_state}" if entry.to_state else ""
            say(f"   {entry.at:%H:%M:%S}  {entry.source:<11} {entry.kind:<18}{states}")
        summary.append(f"audit stream: {len(entries)} entries for {INTEGRATION}")
        [exporter] = parts.exporters

        async def exported_all() -> bool:
            # The exporter holds back the newest entries for a moment (it passes an id
            # gap only once no transaction can still fill it): at least once, in order.
            exporter.wake()
            return len(_lines_of(audit_file, INTEGRATION)) >= len(entries)

        await until("the audit export", exported_all, STEP_TIMEOUT)
    finally:
        stop.set()
        await task
        for receiver in (endpoint, chat):
            receiver.stop()
        api.stop()
    exported = _lines_of(audit_file, None)
    say(f"   exported to {audit_file}: {len(exported)} JSON lines")
    summary.append(f"audit export: {len(exported)} JSON lines in {audit_file.name}")
    if len(chat.accepted()) != 1:
        raise SystemExit(f"FAILED: expected 1 notification, got {len(chat.accepted())}")
    return summary


def main() -> int:
    url = resolve_database_url()
    schema = os.environ.get("PATCHBAY_POC_SCHEMA", "patchbay_poc")
    reset_schema(url, schema)
    say(f"patchbay proof of concept on schema {schema!r}")
    with tempfile.TemporaryDirectory(prefix="patchbay-poc-") as folder:
        summary = asyncio.run(run(url, schema, Path(folder)))
    say("\nwhat happened:")
    for line in summary:
        say(f" - {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
