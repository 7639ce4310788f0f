"""Throttle and debounce windows against a real Postgres, on a FrozenClock: windows are
aligned on the Unix epoch, throttle keeps the first job of a window, debounce runs one job
at the window's end with the latest data, and each follows the queue's policy."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

from patchbay.queue import FrozenClock, Job, JobSpec, JobState, QueueClient, SyncQueueClient

T0 = datetime(2031, 5, 4, 12, 0, tzinfo=UTC)  # a multiple of every window used here


def rows(url: str, schema: str, query: str, **params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql.SQL(query).format(s=sql.Identifier(schema)), params).fetchall()


def jobs_of(url: str, schema: str, key: str) -> list[tuple[Any, ...]]:
    """(id, state, data, start_after) of a key's jobs, oldest first."""
    return rows(
        url,
        schema,
        "select id, state::text, data, start_after from {s}.job where singleton_key = %(k)s"
        " order by created_at, id",
        k=key,
    )


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(T0)


@pytest.fixture
async def frozen(database_url: str, schema: str, clock: FrozenClock) -> AsyncIterator[QueueClient]:
    """A client on the frozen clock (no maintenance: nothing moves unless a test says so)."""
    async with QueueClient(database_url, schema=schema, clock=clock, maintenance=False) as c:
        yield c


# -- throttle ------------------------------------------------------------------------------


@pytest.mark.smoke
async def test_throttle_keeps_one_job_per_key_per_window(
    frozen: QueueClient, clock: FrozenClock, database_url: str, schema: str
) -> None:
    await frozen.create_queue("q")
    first = await frozen.send("q", 1, singleton_key="user-1", throttle=60)
    clock.advance(59.999)
    assert await frozen.send("q", 2, singleton_key="user-1", throttle=60) == first
    other = await frozen.send("q", 3, singleton_key="user-2", throttle=60)
    clock.advance(0.001)  # 12:01:00, the next window
    second = await frozen.send("q", 4, singleton_key="user-1", throttle=timedelta(minutes=1))
    assert len({first, other, second}) == 3
    user1 = jobs_of(database_url, schema, "user-1")
    assert [(r[2], r[3]) for r in user1] == [(1, T0), (4, T0 + timedelta(minutes=1))]


async def test_throttle_windows_are_aligned_on_the_epoch(
    frozen: QueueClient, clock: FrozenClock, database_url: str, schema: str
) -> None:
    await frozen.create_queue("q")
    clock.set(T0 + timedelta(seconds=7))
    first = await frozen.send("q", 1, singleton_key="k", throttle=10)
    clock.set(T0 + timedelta(seconds=9.5))
    assert await frozen.send("q", 2, singleton_key="k", throttle=10) == first
    clock.set(T0 + timedelta(seconds=10))
    assert await frozen.send("q", 3, singleton_key="k", throttle=10) != first
    windows = rows(database_url, schema, "select singleton_on from {s}.job order by singleton_on")
    assert [w[0] for w in windows] == [T0, T0 + timedelta(seconds=10)]


async def test_a_finished_job_still_holds_its_window_and_a_cancelled_one_frees_it(
    frozen: QueueClient, clock: FrozenClock, database_url: str, schema: str
) -> None:
    await frozen.create_queue("q")
    first = await frozen.send("q", 1, singleton_key="k", throttle=3600)
    assert first is not None
    done = asyncio.Event()

    async def handler(job: Job) -> None:
        done.set()

    worker = await frozen.work("q", handler, poll_interval=0.05)
    await asyncio.wait_for(done.wait(), 10)
    await worker.stop()
    assert (await frozen.get_job(first)).state is JobState.COMPLETED
    assert await frozen.send("q", 2, singleton_key="k", throttle=3600) == first

    clock.advance(3600)
    second = await frozen.send("q", 3, singleton_key="k", throttle=3600)
    assert second not in (None, first)
    await frozen.cancel(second)
    third = await frozen.send("q", 4, singleton_key="k", throttle=3600)
    assert third not in (None, first, second)
    assert [r[2] for r in jobs_of(database_url, schema, "k")] == [1, 3, 4]


async def test_throttle_follows_the_queue_policy_too(
    frozen: QueueClient, clock: FrozenClock, database_url: str, schema: str
) -> None:
    await frozen.create_queue("q", policy="short")
    first = await frozen.send("q", 1, singleton_key="k", throttle=60)
    clock.advance(60)
    # A new window, but the key's first job is still queued: the short policy refuses.
    assert await frozen.send("q", 2, singleton_key="k", throttle=60) == first
    assert len(jobs_of(database_url, schema, "k")) == 1


async def test_throttled_send_many_keeps_the_first_item_of_each_key(
    frozen: QueueClient, database_url: str, schema: str
) -> None:
    await frozen.create_queue("q")
    ids = await frozen.send_many(
        "q",
        [JobSpec("a1", singleton_key="a"), JobSpec("b1", singleton_key="b"), "a2"],
        singleton_key="a",
        throttle=60,
    )
    assert ids[0] == ids[2] != ids[1]
    assert [r[2] for r in jobs_of(database_url, schema, "a")] == ["a1"]
    assert [r[2] for r in jobs_of(database_url, schema, "b")] == ["b1"]


# -- debounce ------------------------------------------------------------------------------


async def test_debounce_collapses_a_window_into_one_job_with_the_latest_data(
    frozen: QueueClient, clock: FrozenClock, database_url: str, schema: str
) -> None:
    await frozen.create_queue("q")
    clock.set(T0 + timedelta(seconds=3))
    first = await frozen.send("q", {"v": 1}, singleton_key="doc-7", debounce=30)
    clock.set(T0 + timedelta(seconds=17))
    assert await frozen.send("q", {"v": 2}, singleton_key="doc-7", debounce=30) == first
    clock.set(T0 + timedelta(seconds=29.9))
    assert await frozen.send("q", {"v": 3}, singleton_key="doc-7", debounce=30) == first
    assert [(r[2], r[3]) for r in jobs_of(database_url, schema, "doc-7")] == [
        ({"v": 3}, T0 + timedelta(seconds=30))
    ]
    clock.set(T0 + timedelta(seconds=30))  # the next window gets its own job
    later = await frozen.send("q", {"v": 4}, singleton_key="doc-7", debounce=30)
    assert later not in (None, first)
    assert jobs_of(database_url, schema, "doc-7")[1][3] == T0 + timedelta(seconds=60)


async def test_a_debounced_job_runs_once_at_the_windows_end_with_the_latest_data(
    frozen: QueueClient, clock: FrozenClock
) -> None:
    await frozen.create_queue("q")
    seen: list[Any] = []
    ran = asyncio.Event()

    async def handler(job: Job) -> None:
        seen.append(job.data)
        ran.set()

    worker = await frozen.work("q", handler, poll_interval=0.05)
    for n in range(5):
        await frozen.send("q", {"n": n}, singleton_key="k", debounce=10)
        clock.advance(1)
    await asyncio.sleep(0.3)
    assert seen == []  # the window (12:00:00-12:00:10) has not ended
    clock.set(T0 + timedelta(seconds=10))
    worker.wake()
    await asyncio.wait_for(ran.wait(), 10)
    await asyncio.sleep(0.2)  # a second run would show up here
    assert seen == [{"n": 4}]
    assert worker.completed == 1


async def test_debounced_send_many_lets_the_last_item_of_a_key_win(
    frozen: QueueClient, database_url: str, schema: str
) -> None:
    await frozen.create_queue("q")
    ids = await frozen.send_many(
        "q",
        [JobSpec(1, singleton_key="a"), JobSpec(2, singleton_key="b"), JobSpec(3)],
        singleton_key="a",
        debounce=60,
    )
    assert ids[0] == ids[2] != ids[1]
    assert [r[2] for r in jobs_of(database_url, schema, "a")] == [3]
    again = await frozen.send_many("q", [JobSpec(4, singleton_key="a")], debounce=60)
    assert again == [ids[0]]
    assert [r[2] for r in jobs_of(database_url, schema, "a")] == [4]


async def test_debounce_on_a_short_queue_collapses_into_the_keys_queued_job(
    frozen: QueueClient, clock: FrozenClock, database_url: str, schema: str
) -> None:
    await frozen.create_queue("q", policy="short")
    first = await frozen.send("q", 1, singleton_key="k", debounce=10)
    clock.advance(25)  # two windows later, the first job has not started yet
    assert await frozen.send("q", 2, singleton_key="k", debounce=10) == first
    assert [(r[1], r[2], r[3]) for r in jobs_of(database_url, schema, "k")] == [
        ("queued", 2, T0 + timedelta(seconds=10))
    ]


async def test_debounce_on_an_exclusive_queue_is_refused_while_the_job_runs(
    frozen: QueueClient, clock: FrozenClock, database_url: str, schema: str
) -> None:
    await frozen.create_queue("q", policy="exclusive")
    first = await frozen.send("q", "a", singleton_key="k", debounce=10)
    assert await frozen.send("q", "b", singleton_key="k", debounce=10) == first
    clock.advance(10)
    release = asyncio.Event()
    started = asyncio.Event()

    async def handler(job: Job) -> None:
        started.set()
        await release.wait()

    worker = await frozen.work("q", handler, poll_interval=0.05, shutdown_grace=1)
    await asyncio.wait_for(started.wait(), 10)
    # The job runs: the exclusive policy refuses the send, the running job keeps its data.
    assert await frozen.send("q", "c", singleton_key="k", debounce=10) == first
    assert [(r[1], r[2]) for r in jobs_of(database_url, schema, "k")] == [("active", "b")]
    release.set()
    await worker.stop()
    assert await frozen.send("q", "d", singleton_key="k", debounce=10) not in (None, first)


async def test_debounce_works_from_the_sync_client(
    database_url: str, schema: str, frozen: QueueClient, clock: FrozenClock
) -> None:
    await frozen.create_queue("q")
    with SyncQueueClient(database_url, schema=schema, clock=clock) as sync_client:
        first = sync_client.send("q", 1, singleton_key="k", debounce=5)
        assert sync_client.send("q", 2, singleton_key="k", debounce=5) == first
        assert sync_client.send_many("q", [3], singleton_key="k", debounce=5) == [first]
    assert [r[2] for r in jobs_of(database_url, schema, "k")] == [3]


async def test_a_rolled_back_debounced_send_leaves_the_committed_data(
    frozen: QueueClient, database_url: str, schema: str
) -> None:
    await frozen.create_queue("q")
    first = await frozen.send("q", "committed", singleton_key="k", debounce=60)
    conn = await psycopg.AsyncConnection.connect(database_url)
    async with conn, conn.transaction(force_rollback=True):
        rolled = await frozen.send("q", "rolled back", singleton_key="k", debounce=60, conn=conn)
        assert rolled == first
    assert [r[2] for r in jobs_of(database_url, schema, "k")] == ["committed"]
