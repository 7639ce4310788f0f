"""Webhook benchmarks: ``webhook_deliver``, signed deliveries per second to a local
receiver.

A backlog of events is sent first (``send_event``, one transaction each: message, one
delivery per endpoint, jobs), reported as ``mode: send`` in events/s. Then one worker
delivers the backlog (``mode: deliver``; ``cpu_ms_per_delivery`` is the worker process's
CPU time per delivery, which a busy machine disturbs less than the rate): per delivery, one
read joining delivery, message and endpoint, the secret from the vault's cache, HMAC
signing, an HTTP POST over a kept-alive connection, and one statement recording the
attempt; the queue's fetch and completion are batched. The receiver (the asyncio one of
``patchbay.connectors.webhooks.testing``) runs in a separate process, so it does not share
the worker's interpreter lock, and answers 200 at once.

A schema of its own (``bench_webhooks_<pid>``) is migrated and dropped at the end. Sizes
can be changed through ``PATCHBAY_BENCH_WEBHOOKS_*`` environment variables.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

import psycopg
from psycopg import sql

from bench import benchmark
from patchbay.connectors.webhooks import Webhooks
from patchbay.queue import QueueClient, migrate_sync
from patchbay.secrets import LocalKeyProvider, Vault, generate_master_key


def _int(name: str, default: int) -> int:
    return int(os.environ.get(f"PATCHBAY_BENCH_WEBHOOKS_{name}", str(default)))


EVENTS = _int("EVENTS", 3_000)
TENANTS = _int("TENANTS", 10)
CONCURRENCY = _int("CONCURRENCY", 20)


# The receiver process: prints its port, then serves until killed.
_SERVE = (
    "from patchbay.connectors.webhooks.testing import Receiver\n"
    "import threading\n"
    "receiver = Receiver().start()\n"
    "print(receiver.port, flush=True)\n"
    "threading.Event().wait()\n"
)


async def _succeeded(conn: psycopg.AsyncConnection[Any], schema: str) -> int:
    cur = await conn.execute(
        sql.SQL("select count(*) from {}.webhook_delivery where state = 'succeeded'").format(
            sql.Identifier(schema)
        )
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


@benchmark("webhook_deliver")
async def webhook_deliver(url: str) -> list[dict[str, Any]]:
    """Events sent per second, and signed deliveries per second to a local receiver."""
    schema = f"bench_webhooks_{os.getpid()}"
    migrate_sync(url, schema)
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _SERVE, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert server.stdout is not None
        port = int(await server.stdout.readline())
        keys = LocalKeyProvider([generate_master_key("bench")])
        async with (
            Vault(url, schema=schema, keys=keys) as vault,
            QueueClient(url, schema=schema, pool_max=16, redact=vault.redactor) as client,
            Webhooks(
                client,
                vault,
                allowed_networks=["127.0.0.1/32"],
                max_connections=CONCURRENCY,
            ) as webhooks,
        ):
            await webhooks.setup()
            tenants = [f"tenant-{t:03d}" for t in range(TENANTS)]
            for tenant in tenants:
                await webhooks.add_endpoint(tenant, f"http://127.0.0.1:{port}/{tenant}")
            payload = {"id": "evt", "object": "invoice", "amount": 4200, "note": "x" * 300}

            started = time.perf_counter()
            for n in range(EVENTS):
                await webhooks.send_event(tenants[n % TENANTS], "invoice.paid", payload)
            send_s = time.perf_counter() - started

            watch = await psycopg.AsyncConnection.connect(url, autocommit=True)
            started = time.perf_counter()
            cpu_started = time.process_time()
            worker = await webhooks.work(concurrency=CONCURRENCY, poll_interval=0.05)
            while await _succeeded(watch, schema) < EVENTS:
                await asyncio.sleep(0.05)
            deliver_s = time.perf_counter() - started
            cpu_s = time.process_time() - cpu_started
            await worker.stop()
            await watch.close()
        common = {"events": EVENTS, "tenants": TENANTS}
        return [
            {"mode": "send", "events_per_s": round(EVENTS / send_s, 1), **common},
            {
                "mode": "deliver",
                "deliveries_per_s": round(EVENTS / deliver_s, 1),
                # This process's CPU per delivery: steadier than the rate on a busy machine.
                "cpu_ms_per_delivery": round(cpu_s * 1000 / EVENTS, 2),
                "concurrency": CONCURRENCY,
                **common,
            },
        ]
    finally:
        server.terminate()
        await server.wait()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(schema)))
