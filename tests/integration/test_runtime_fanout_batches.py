"""Fan-outs made together: the sync_all worker batches the tenants it holds at once; each
tenant's job still gets its own result, and one integration's stale config holds back
nobody else."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from patchbay.connectors import Connector, ConnectorConfig, ConnectorExecutor, JobContext, sync
from patchbay.queue import FrozenClock, JobSpec, QueueClient
from patchbay.runtime.audit import worker_identity
from patchbay.runtime.scheduler import SYNC_ALL_QUEUE, TenantScheduler


class TickConfig(ConnectorConfig):
    size: int = 1


class Tick(Connector[TickConfig]):
    name = "tick"
    version = "1.0.0"
    config_model = TickConfig

    @sync(every="*/5 * * * *")
    async def items(self, ctx: JobContext[TickConfig]) -> None:
        return None


def _populate(url: str, schema: str, tenants: int, per_tenant: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        s = sql.Identifier(schema)
        conn.execute(
            sql.SQL(
                "insert into {}.tenant (id, name) select 't' || g, 'T' || g"
                " from generate_series(1, %s) g"
            ).format(s),
            (tenants,),
        )
        conn.execute(
            sql.SQL(
                "insert into {}.integration (id, tenant_id, connector, config)"
                " select 't' || t || '-i' || i, 't' || t, 'tick', %s::jsonb"
                " from generate_series(1, %s) t, generate_series(1, %s) i"
            ).format(s),
            (json.dumps({"size": 1}), tenants, per_tenant),
        )


def _jobs(url: str, schema: str, queue: str) -> list[dict[str, Any]]:
    with psycopg.connect(url) as conn:
        cur = conn.cursor(row_factory=psycopg.rows.dict_row)
        cur.execute(
            sql.SQL("select * from {}.job where queue = %s").format(sql.Identifier(schema)),
            (queue,),
        )
        return cur.fetchall()


async def test_the_worker_fans_out_every_tenant_once_in_batches(
    database_url: str, schema: str
) -> None:
    _populate(database_url, schema, tenants=40, per_tenant=3)
    async with QueueClient(database_url, schema=schema, maintenance=False) as client:
        scheduler = TenantScheduler(client, ConnectorExecutor(client, [Tick()]))
        await scheduler.ensure_queues()
        await client.send_many(SYNC_ALL_QUEUE, [JobSpec({"tenant": f"t{n}"}) for n in range(1, 41)])
        worker = await scheduler.start(concurrency=16, batch_size=5, parallel=2)
        deadline = asyncio.get_running_loop().time() + 60
        while worker.completed < 40:
            assert asyncio.get_running_loop().time() < deadline, "fan-outs did not finish"
            await asyncio.sleep(0.02)
        await worker.stop()
    syncs = _jobs(database_url, schema, "tick.items")
    assert len(syncs) == 120
    assert len({job["singleton_key"] for job in syncs}) == 120
    outputs = {
        job["data"]["tenant"]: job["output"] for job in _jobs(database_url, schema, SYNC_ALL_QUEUE)
    }
    assert len(outputs) == 40
    assert all(o["sent"] == 3 and o["not_due"] == 0 for o in outputs.values())
    assert {o["tenant"] for o in outputs.values()} == set(outputs)
    assert {o["worker"] for o in outputs.values()} == {worker_identity()}


async def test_fan_out_many_counts_per_tenant_and_skips_a_stale_config(
    database_url: str, schema: str
) -> None:
    _populate(database_url, schema, tenants=3, per_tenant=2)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("update {}.integration set config = %s where id = 't2-i1'").format(
                sql.Identifier(schema)
            ),
            (json.dumps({"size": "many"}),),
        )
    async with QueueClient(database_url, schema=schema, maintenance=False) as client:
        # Frozen at 12:01: the connector's */5 cron does not fire again before 12:05.
        clock = FrozenClock(datetime(2026, 3, 2, 12, 1, tzinfo=UTC))
        scheduler = TenantScheduler(client, ConnectorExecutor(client, [Tick()]), clock=clock)
        await scheduler.ensure_queues()
        first = await scheduler.fan_out_many(["t1", "t2", "t1", "t3", "nobody"])
        again = await scheduler.fan_out_many(["t1", "t2", "t3"])
    assert [(f.tenant, f.sent, f.invalid_config) for f in first] == [
        ("t1", 2, 0),
        ("t2", 1, 1),
        ("t1", 0, 0),  # named twice: fanned out once
        ("t3", 2, 0),
        ("nobody", 0, 0),
    ]
    assert [(f.sent, f.not_due) for f in again] == [(0, 2), (0, 1), (0, 2)]
    syncs = _jobs(database_url, schema, "tick.items")
    assert sorted(job["singleton_key"] for job in syncs) == [
        "t1-i1",
        "t1-i2",
        "t2-i2",
        "t3-i1",
        "t3-i2",
    ]
