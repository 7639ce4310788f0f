"""Queue-control benchmarks: grouped and fair drains (as ratios to a plain drain measured
the same way in the same run), and fairness under a large backlog.

- ``drain_grouped``: 20,000 no-op jobs over 1,000 groups, group limit 1.
- ``drain_fair``: 20,000 no-op jobs over 100 fairness keys in a fair queue.
- ``fairness``: tenant A has 100,000 queued jobs; tenant B then sends 100; 8 workers;
  B's p95 wait from send to start.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from psycopg import sql

from bench import benchmark
from bench._support import temp_schema
from patchbay.queue import Job, JobSpec, QueueClient

JOBS = 20_000
CONCURRENCY = 500
ROUNDS = 3


async def _fill(client: QueueClient, queue: str, keys: int, column: str | None) -> None:
    """JOBS jobs; with ``column`` ("group" or "fairness_key"), job i gets key k<i % keys>."""
    for start in range(0, JOBS, 5_000):
        specs = [
            JobSpec({"i": i}, **({column: f"k{i % keys}"} if column else {}))
            for i in range(start, start + 5_000)
        ]
        await client.send_many(queue, specs)
    async with client.pool.connection() as conn:
        await conn.execute(sql.SQL("vacuum analyze {}.job").format(sql.Identifier(client.schema)))


async def _drain_rate(url: str, *, group_limit: int | None, fair: bool, keys: int) -> float:
    async with (
        temp_schema(url, "bench_ctl") as schema,
        QueueClient(url, schema=schema, maintenance=False) as c,
    ):
        settings: dict[str, Any] = {"fair": fair}
        if group_limit is not None:
            settings["group_limit"] = group_limit
        await c.create_queue("q", **settings)
        column = "group" if group_limit is not None else ("fairness_key" if fair else None)
        await _fill(c, "q", keys, column)

        handled = 0
        all_handled = asyncio.Event()

        async def noop(job: Job) -> None:
            nonlocal handled
            handled += 1
            if handled == JOBS:
                all_handled.set()

        started = time.perf_counter()
        worker = await c.work("q", noop, concurrency=CONCURRENCY, poll_interval=0.05)
        await all_handled.wait()
        await worker.drain()  # the last completions are committed
        elapsed = time.perf_counter() - started
        await worker.stop()
    return JOBS / elapsed


async def _ratio(url: str, name: str, **variant: Any) -> list[dict[str, Any]]:
    plain: list[float] = []
    other: list[float] = []
    for _ in range(ROUNDS):  # interleaved, so machine noise hits both alike
        plain.append(await _drain_rate(url, group_limit=None, fair=False, keys=1))
        other.append(await _drain_rate(url, **variant))
    p, o = statistics.median(plain), statistics.median(other)
    return [
        {
            "jobs_per_s": round(o),
            "plain_jobs_per_s": round(p),
            "ratio": round(o / p, 3),
            "jobs": JOBS,
            "keys": variant["keys"],
            "concurrency": CONCURRENCY,
            "rounds": ROUNDS,
        }
    ]


@benchmark("drain_grouped")
async def drain_grouped(url: str) -> list[dict[str, Any]]:
    """20,000 jobs over 1,000 groups of limit 1, as a ratio to a plain drain."""
    return await _ratio(url, "drain_grouped", group_limit=1, fair=False, keys=1_000)


@benchmark("drain_fair")
async def drain_fair(url: str) -> list[dict[str, Any]]:
    """20,000 jobs over 100 fairness keys of a fair queue, as a ratio to a plain drain."""
    return await _ratio(url, "drain_fair", group_limit=None, fair=True, keys=100)


@benchmark("fairness")
async def fairness(url: str) -> list[dict[str, Any]]:
    """Tenant A: 100,000 queued; tenant B then sends 100; 8 workers: B's waits."""
    async with (
        temp_schema(url, "bench_ctl") as schema,
        QueueClient(url, schema=schema, maintenance=False) as c,
    ):
        await c.create_queue("f", fair=True)
        for _ in range(20):
            await c.send_many("f", [{"t": "a"}] * 5_000, fairness_key="tenant-a")
        async with c.pool.connection() as conn:
            await conn.execute(sql.SQL("vacuum analyze {}.job").format(sql.Identifier(schema)))
        waits_ms: list[float] = []
        run_ms = 1.0
        all_b = asyncio.Event()

        async def handler(job: Job) -> None:
            if job.data["t"] == "b":
                waits_ms.append((time.time_ns() - job.data["sent_ns"]) / 1e6)
                if len(waits_ms) == 100:
                    all_b.set()
            await asyncio.sleep(run_ms / 1000)

        worker = await c.work("f", handler, concurrency=8, poll_interval=0.05)
        await asyncio.sleep(0.5)  # tenant A's backlog is being worked
        for _ in range(100):
            await c.send("f", {"t": "b", "sent_ns": time.time_ns()}, fairness_key="tenant-b")
        await asyncio.wait_for(all_b.wait(), timeout=60)
        await worker.stop(grace=1)
    waits_ms.sort()
    return [
        {
            "p50_ms": round(statistics.median(waits_ms), 2),
            "p95_ms": round(waits_ms[94], 2),
            "p99_ms": round(waits_ms[98], 2),
            "b_jobs": len(waits_ms),
            "a_backlog": 100_000,
            "workers": 8,
            "job_run_ms": run_ms,
        }
    ]
