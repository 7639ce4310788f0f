"""Several clients on one queue, as several daemons would be: every job is handled once
(SKIP LOCKED), and maintenance passes never overlap."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable

import psycopg

from patchbay.queue import Job, JobState, QueueClient
from patchbay.queue._maintenance import _lock_key


async def wait_until(predicate: Callable[[], bool], within: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.01)


async def test_workers_in_several_clients_handle_each_job_once(
    database_url: str, schema: str
) -> None:
    clients = 3
    seen: collections.Counter[int] = collections.Counter()

    async def handler(job: Job) -> None:
        seen[job.data] += 1
        await asyncio.sleep(0)

    opened = [
        await QueueClient(database_url, schema=schema, pool_max=4).open() for _ in range(clients)
    ]
    try:
        await opened[0].create_queue("q")
        workers = [await c.work("q", handler, concurrency=8) for c in opened]
        ids = await opened[0].send_many("q", list(range(600)))
        await wait_until(lambda: sum(w.completed for w in workers) == 600)
        assert all(w.completed > 0 for w in workers), [w.completed for w in workers]
        assert sorted(seen) == list(range(600))
        assert set(seen.values()) == {1}
        assert sum(w.stale_writes for w in workers) == 0
        job = await opened[1].get_job(ids[-1])
        assert (job.state, job.attempt) == (JobState.COMPLETED, 1)
    finally:
        for c in opened:
            await c.close()


async def test_a_maintenance_pass_is_skipped_while_another_holds_the_lock(
    client: QueueClient, database_url: str
) -> None:
    await client.maintenance.stop()
    async with await psycopg.AsyncConnection.connect(database_url) as other:
        # Another daemon's pass in progress (same transaction-level advisory lock).
        await other.execute("select pg_advisory_xact_lock(%s)", (_lock_key(client.schema),))
        assert await client.maintenance.run_once() is False
        await other.rollback()
    assert await client.maintenance.run_once() is True
