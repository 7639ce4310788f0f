"""Runtime benchmarks: the tenant-aware fan-out.

``fanout``: 1,000 tenants x 10 active integrations; 1,000 ``integration.sync_all`` jobs
are queued (as one tick of their schedules would), then the scheduler's worker fans them
out: seconds from the worker's start to the last of the 10,000 sync jobs committed.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import psycopg
from psycopg import sql

from bench import benchmark
from bench._support import temp_schema
from patchbay.connectors import Connector, ConnectorConfig, ConnectorExecutor, JobContext, sync
from patchbay.queue import JobSpec, QueueClient
from patchbay.runtime.scheduler import SYNC_ALL_QUEUE, TenantScheduler
from patchbay.runtime.settings import DaemonSettings

TENANTS = 1_000
PER_TENANT = 10


class _Config(ConnectorConfig):
    region: str = "eu"


class _Noop(Connector[_Config]):
    name = "noop"
    version = "1.0.0"
    config_model = _Config

    @sync(every="*/15 * * * *")
    async def records(self, ctx: JobContext[_Config]) -> None:
        return None


def _populate(url: str, schema: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        s = sql.Identifier(schema)
        conn.execute(
            sql.SQL(
                "insert into {}.tenant (id, name) select 't' || g, 'Tenant ' || g"
                " from generate_series(1, %s) g"
            ).format(s),
            (TENANTS,),
        )
        conn.execute(
            sql.SQL(
                "insert into {}.integration (id, tenant_id, connector, config)"
                " select 't' || t || '-i' || i, 't' || t, 'noop', %s::jsonb"
                " from generate_series(1, %s) t, generate_series(1, %s) i"
            ).format(s),
            (json.dumps({"region": "eu"}), TENANTS, PER_TENANT),
        )
        conn.execute(sql.SQL("vacuum analyze {}.integration").format(s))


@benchmark("fanout")
async def fanout(url: str) -> list[dict[str, Any]]:
    """1,000 tenants x 10 integrations fanned out by the sync_all worker."""
    results: list[dict[str, Any]] = []
    # The daemon's default number of fan-outs at once.
    for concurrency in (DaemonSettings.model_fields["scheduler_concurrency"].default,):
        async with temp_schema(url, "bench_rt") as schema:
            await asyncio.to_thread(_populate, url, schema)
            async with QueueClient(url, schema=schema, maintenance=False, pool_max=20) as client:
                executor = ConnectorExecutor(client, [_Noop()])
                scheduler = TenantScheduler(client, executor)
                await scheduler.ensure_queues()
                await client.send_many(
                    SYNC_ALL_QUEUE,
                    [JobSpec({"tenant": f"t{t}"}) for t in range(1, TENANTS + 1)],
                )
                started = time.perf_counter()
                worker = await scheduler.start(concurrency=concurrency)
                total = TENANTS * PER_TENANT
                while (await client.stats("noop.records"))[0].queued < total:
                    await asyncio.sleep(0.02)
                elapsed = time.perf_counter() - started
                await worker.stop()
            results.append(
                {
                    "seconds": round(elapsed, 3),
                    "jobs_per_s": round(total / elapsed),
                    "tenants": TENANTS,
                    "integrations": total,
                    "concurrency": concurrency,
                }
            )
    return results
