"""The README demo (``patchbay run --demo``): the whole runtime on one machine.

It starts a fake of the example contacts API, uses the embedded Postgres (or the database
given), registers two tenants with integrations of the example ``contacts`` connector
(tokens in the vault, configs holding references), runs the daemon, syncs them, then
revokes one tenant's token at the API: that integration fails with AuthError, turns
``needs_attention``, and a local receiver prints the notification it gets. It says what it
does at every step.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from psycopg import sql

from .daemon import Daemon
from .notifications import SlackChannel
from .settings import DaemonSettings

__all__ = ["run_demo"]

TENANTS = {"acme": ["acme-crm", "acme-eu"], "globex": ["globex-crm"]}
REVOKED = "globex"


class _Receiver:
    """A local HTTP server standing in for a team's chat: prints what it receives."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.received: list[str] = []
        self.got_one = asyncio.Event()
        loop = asyncio.get_running_loop()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                receiver.received.append(body["text"])
                say(f"  >> notification received: {body['text']}")
                loop.call_soon_threadsafe(receiver.got_one.set)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hooks/attention"

    def stop(self) -> None:
        self._server.shutdown()


async def run_demo(url: str, schema: str, *, duration: float | None) -> int:
    """Run the demo until SIGINT/SIGTERM or ``duration`` seconds; returns an exit code."""

    def say(text: str) -> None:
        print(text, flush=True)

    from .registry import Registry  # SQLAlchemy loads only when the demo runs

    try:
        from patchbay_example_contacts import ContactsConnector
        from patchbay_example_contacts.fake_api import FakeContactsApi
    except ImportError:
        say("the demo needs the example connector: pip install -e examples/contacts")
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if duration is not None:
        loop.call_later(duration, stop.set)

    tokens = {tenant: f"{tenant}-token-{int(time.time())}" for tenant in TENANTS}
    api = FakeContactsApi(contacts=300, tokens=set(tokens.values())).start()
    receiver = _Receiver(say)
    say(f"1. fake contacts API at {api.url} (300 contacts); chat receiver at {receiver.url}")
    settings = DaemonSettings(
        database_url=url,
        PATCHBAY_SCHEMA=schema,
        mode="development",
        poll_interval=0.2,
        maintenance_interval=1.0,
        shutdown_grace=5.0,
        notify_log=False,
    )
    daemon = Daemon(
        settings,
        connectors={"contacts": ContactsConnector},
        channels=[SlackChannel(receiver.url, name="demo-chat")],
        announce=lambda text: say(f"   {text}"),
    )
    say("2. starting the daemon (workers, scheduler, failure policy, notifications)")
    task = asyncio.create_task(daemon.run(stop))
    try:
        await asyncio.wait_for(daemon.ready.wait(), timeout=60)
        parts = daemon.parts
        assert parts is not None
        say(
            "3. registering tenants and integrations; tokens go to the vault, configs "
            "hold secret:// references"
        )
        async with Registry(
            url,
            schema=schema,
            connectors={"contacts": ContactsConnector},
            vault=parts.vault,
            on_resume=parts.tracker.on_resume,
        ) as registry:
            for tenant, integrations in TENANTS.items():
                if not any(t.id == tenant for t in await registry.list_tenants()):
                    await registry.add_tenant(tenant, name=tenant.title())
                await parts.vault.put(tenant, "contacts/token", tokens[tenant])
                existing = {i.id for i in await registry.list_integrations(tenant=tenant)}
                for integration in integrations:
                    config = {"base_url": api.url, "token": f"secret://{tenant}/contacts/token"}
                    if integration in existing:
                        await registry.update_integration(integration, config=config)
                        await registry.resume(integration, actor="demo")
                    else:
                        await registry.add_integration(
                            integration,
                            tenant=tenant,
                            connector="contacts",
                            config=config,
                            check=True,
                        )
                    say(f"   {tenant}/{integration}: config checked against the API")
        await daemon.reconcile_schedules()
        say("4. first sync of every tenant (the scheduler fans out one sync per integration)")
        for tenant in TENANTS:
            fan = await parts.scheduler.fan_out(tenant)
            say(f"   {tenant}: {fan.sent} sync job(s) sent")
        await _wait_synced(parts.client, schema, [i for v in TENANTS.values() for i in v], stop)
        await _print_status(parts.client, schema, say)
        say(f"5. the API revokes {REVOKED}'s token; its next sync fails with 401")
        api.revoke(tokens[REVOKED])
        async with parts.client.pool.connection() as conn:
            await conn.execute(
                sql.SQL(
                    "update {}.integration set last_scheduled_at = null where tenant_id = %s"
                ).format(sql.Identifier(schema)),
                (REVOKED,),
            )
        await parts.scheduler.fan_out(REVOKED)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(receiver.got_one.wait(), timeout=60)
        await _print_status(parts.client, schema, say)
        say(
            "6. running on schedule; Ctrl-C stops (support would fix the token and run "
            "`patchbay integrations resume globex-crm`)"
        )
        await stop.wait()
    finally:
        stop.set()
        await task
        receiver.stop()
        api.stop()
    say(f"done: {len(receiver.received)} notification(s) received")
    return 0


async def _wait_synced(
    client: Any, schema: str, integrations: list[str], stop: asyncio.Event
) -> None:
    query = sql.SQL(
        "select count(*) from {}.integration where id = any(%s) and last_success_at is not null"
    ).format(sql.Identifier(schema))
    deadline = time.monotonic() + 60
    while not stop.is_set() and time.monotonic() < deadline:
        async with client.pool.connection() as conn:
            cur = await conn.execute(query, (integrations,))
            row = await cur.fetchone()
        if row and row[0] == len(integrations):
            return
        await asyncio.sleep(0.2)


async def _print_status(client: Any, schema: str, say: Callable[[str], None]) -> None:
    query = sql.SQL(
        "select i.id, i.status, i.consecutive_failures, "
        "(select count(*) from {s}.connector_record r where r.integration_id = i.id) "
        "from {s}.integration i order by i.id"
    ).format(s=sql.Identifier(schema))
    async with client.pool.connection() as conn:
        cur = await conn.execute(query)
        rows = await cur.fetchall()
    for ident, status, failures, records in rows:
        say(f"   {ident:<12} {status:<16} records={records:<5} failures={failures}")
