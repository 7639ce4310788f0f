"""LISTEN/NOTIFY wakes idle workers as soon as a runnable job commits; polling is only the
fallback; a dropped listener connection reconnects and polls once."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

import psycopg
import pytest
from psycopg import sql

from patchbay.queue import Job, QueueClient, SyncQueueClient, migrate_sync

POLL = 30.0  # far longer than any wait below: a job that starts in time was notified


async def wait_until(predicate: Callable[[], bool], within: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.005)


class Recorder:
    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.event = asyncio.Event()

    async def __call__(self, job: Job) -> None:
        self.started[job.data["name"]] = time.monotonic()
        self.event.set()


async def idle_worker(client: QueueClient, recorder: Recorder) -> None:
    worker = await client.work("q", recorder, poll_interval=POLL)
    await wait_until(lambda: worker.fetches >= 1 and client.listener.connected.is_set())
    await asyncio.sleep(0.05)  # now surely waiting in its poll sleep


@pytest.mark.smoke
async def test_notify_wakes_an_idle_worker_at_once(client: QueueClient) -> None:
    await client.create_queue("q")
    recorder = Recorder()
    await idle_worker(client, recorder)
    sent = time.monotonic()
    await client.send("q", {"name": "a"})
    await asyncio.wait_for(recorder.event.wait(), 1.0)
    assert recorder.started["a"] - sent < 1.0


async def test_sync_client_and_caller_transactions_wake_on_commit(
    client: QueueClient, database_url: str
) -> None:
    await client.create_queue("q")
    recorder = Recorder()
    await idle_worker(client, recorder)
    with SyncQueueClient(database_url, schema=client.schema) as queues:
        queues.send("q", {"name": "sync"})
        await wait_until(lambda: "sync" in recorder.started, within=1.0)
        with psycopg.connect(database_url) as conn:
            queues.send("q", {"name": "tx"}, conn=conn)
            await asyncio.sleep(0.2)
            assert "tx" not in recorder.started  # not committed: invisible, not notified
            committed = time.monotonic()
            conn.commit()
        await wait_until(lambda: "tx" in recorder.started, within=1.0)
        assert recorder.started["tx"] - committed < 1.0


async def test_notifications_for_other_queues_and_deferred_jobs_do_not_wake(
    client: QueueClient,
) -> None:
    await client.create_queue("q")
    await client.create_queue("other")
    worker = await client.work("q", Recorder(), poll_interval=POLL)
    await wait_until(lambda: worker.fetches >= 1)
    await asyncio.sleep(0.05)
    fetches = worker.fetches
    await client.send("other", {"name": "x"})
    await client.send("q", {"name": "later"}, start_after=3600)
    await asyncio.sleep(0.3)
    assert worker.fetches == fetches


async def test_listener_reconnects_and_polls_once(client: QueueClient, database_url: str) -> None:
    await client.create_queue("q")
    recorder = Recorder()
    await idle_worker(client, recorder)
    listener = client.listener
    old_pid = listener.backend_pid
    assert old_pid is not None and listener.reconnects == 0

    # A job that commits without a notification (as if sent while the listener was away):
    # only a poll finds it, and the next poll is 30 s off.
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "insert into {}.job (id, queue, data, retry_limit, retry_delay_s,"
                " retry_backoff, expire_in_s, start_after, created_at)"
                " values (gen_random_uuid(), 'q', '{{\"name\": \"silent\"}}', 0, 0, true, 60,"
                " now(), now())"
            ).format(sql.Identifier(client.schema))
        )
        await asyncio.sleep(0.2)
        assert "silent" not in recorder.started
        conn.execute("select pg_terminate_backend(%s)", (old_pid,))

    await wait_until(lambda: listener.reconnects == 1, within=5.0)
    assert listener.backend_pid != old_pid
    # The reconnect polled once: the silent job ran without waiting for the poll interval.
    await wait_until(lambda: "silent" in recorder.started, within=2.0)
    # And notifications flow again on the new connection.
    sent = time.monotonic()
    await client.send("q", {"name": "after"})
    await wait_until(lambda: "after" in recorder.started, within=1.0)
    assert recorder.started["after"] - sent < 1.0


async def test_the_longest_schema_name_still_notifies(database_url: str) -> None:
    schema = f"s{uuid.uuid4().hex}".ljust(54, "x")  # the longest name allowed
    migrate_sync(database_url, schema)
    try:
        async with QueueClient(database_url, schema=schema) as client:
            await client.create_queue("q")
            recorder = Recorder()
            await idle_worker(client, recorder)
            await client.send("q", {"name": "long"})
            await asyncio.wait_for(recorder.event.wait(), 1.0)
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("drop schema {} cascade").format(sql.Identifier(schema)))
