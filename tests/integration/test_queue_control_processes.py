"""Group limits and fairness hold across worker processes, not only inside one."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections import defaultdict

import psycopg
import pytest
from psycopg import sql

from patchbay.queue import Job, JobSpec, QueueClient

GROUPS = 12
JOBS = 240


def _work_until_drained(url: str, schema: str, queue: str, total: int) -> None:
    async def main() -> None:
        async def handler(job: Job) -> dict[str, float]:
            started = time.time()
            await asyncio.sleep(0.005 + (hash(str(job.id)) % 10) / 1000)
            return {"start": started, "end": time.time()}

        async with QueueClient(url, schema=schema, maintenance_interval=0.5) as client:
            await client.work(queue, handler, concurrency=16, poll_interval=0.05)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                stats = (await client.stats(queue))[0]
                if stats.completed >= total:
                    break
                await asyncio.sleep(0.05)

    asyncio.run(main())


def _max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    best = current = 0
    for _, delta in events:
        current += delta
        best = max(best, current)
    return best


async def test_group_limit_is_never_exceeded_across_four_processes(
    database_url: str, schema: str
) -> None:
    async with QueueClient(database_url, schema=schema) as client:
        await client.create_queue("grouped", group_limit=1)
        await client.set_group_limit("grouped", "g0", 3)
        for start in range(0, JOBS, 60):
            await client.send_many(
                "grouped",
                [JobSpec({"g": f"g{i % GROUPS}"}) for i in range(start, start + 60)],
            )
        # send_many has no per-job group: give each job its group in SQL.
        async with client.pool.connection() as conn:
            await conn.execute(
                sql.SQL("update {}.job set group_key = data->>'g'").format(sql.Identifier(schema))
            )

    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_work_until_drained, args=(database_url, schema, "grouped", JOBS))
        for _ in range(4)
    ]
    for proc in procs:
        proc.start()
    violations = 0
    samples = 0
    query = sql.SQL(
        "select group_key, count(*) from {}.job where state = 'active' and group_key is not null"
        " group by group_key"
    ).format(sql.Identifier(schema))
    with psycopg.connect(database_url, autocommit=True) as conn:
        while any(p.is_alive() for p in procs):
            for group, active in conn.execute(query):
                if active > (3 if group == "g0" else 1):
                    violations += 1
            samples += 1
            await asyncio.sleep(0.002)
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0

    async with QueueClient(database_url, schema=schema) as client:
        assert (await client.stats("grouped"))[0].completed == JOBS
        intervals: dict[str, list[tuple[float, float]]] = defaultdict(list)
        cursor = None
        while True:
            page = await client.list_jobs(queue="grouped", limit=500, cursor=cursor)
            for job in page.jobs:
                intervals[job.data["g"]].append((job.output["start"], job.output["end"]))
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
    assert samples > 20
    assert violations == 0
    assert _max_overlap(intervals["g0"]) <= 3
    assert _max_overlap(intervals["g0"]) >= 2  # the override was used, not just limit 1
    for group in range(1, GROUPS):
        assert _max_overlap(intervals[f"g{group}"]) == 1


@pytest.mark.parametrize("processes", [2])
async def test_fair_dispatch_across_processes(
    database_url: str, schema: str, processes: int
) -> None:
    async with QueueClient(database_url, schema=schema) as client:
        await client.create_queue("fair", fair=True)
        await client.send_many("fair", [{"t": "big"} for _ in range(2000)], fairness_key="big")
        small = await client.send_many("fair", [{"t": "s"} for _ in range(40)], fairness_key="s")
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_work_until_drained, args=(database_url, schema, "fair", 2040))
        for _ in range(processes)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=90)
        assert proc.exitcode == 0
    async with QueueClient(database_url, schema=schema) as client:
        started = sorted([(await client.get_job(i)).started_at for i in small])
        # The small tenant's 40 jobs all started before the big tenant's backlog was a
        # tenth done: its last start is earlier than the 300th start overall.
        async with client.pool.connection() as conn:
            cur = await conn.execute(
                sql.SQL(
                    "select started_at from {}.job where queue = 'fair'"
                    " order by started_at offset 300 limit 1"
                ).format(sql.Identifier(schema))
            )
            row = await cur.fetchone()
        assert row is not None
        assert started[-1] <= row[0]
