"""Singleton keys and queue policies against a real Postgres: what each policy allows, what a
refused send returns, how sends, fetch, release and requeue interact with the unique indexes,
and bad input that raises a typed error and writes nothing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from psycopg import sql

from patchbay.queue import (
    FrozenClock,
    InvalidJobState,
    InvalidOption,
    Job,
    JobSpec,
    JobState,
    QueueClient,
    SyncQueueClient,
)

T0 = datetime(2031, 5, 4, 12, 0, tzinfo=UTC)


def rows(url: str, schema: str, query: str, **params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql.SQL(query).format(s=sql.Identifier(schema)), params).fetchall()


def jobs_of(url: str, schema: str, queue: str, key: str) -> list[tuple[Any, ...]]:
    """(id, state, data) of a key's jobs, oldest first."""
    return rows(
        url,
        schema,
        "select id, state::text, data from {s}.job where queue = %(q)s and singleton_key = %(k)s"
        " order by created_at, id",
        q=queue,
        k=key,
    )


class Gate:
    """A worker handler that holds each job until released, so tests see jobs active."""

    def __init__(self) -> None:
        self.started: list[Any] = []
        self.release = asyncio.Event()

    async def __call__(self, job: Job) -> None:
        self.started.append(job.data)
        await self.release.wait()


@pytest.fixture
async def frozen(database_url: str, schema: str) -> AsyncIterator[QueueClient]:
    """A client whose clock stands still at T0 (no maintenance)."""
    async with QueueClient(
        database_url, schema=schema, clock=FrozenClock(T0), maintenance=False
    ) as c:
        yield c


# -- short ---------------------------------------------------------------------------------


@pytest.mark.smoke
async def test_short_keeps_one_queued_job_per_key_and_returns_it(
    client: QueueClient, database_url: str, schema: str
) -> None:
    await client.create_queue("q", policy="short")
    first = await client.send("q", {"n": 1}, singleton_key="tenant-1")
    again = await client.send("q", {"n": 2}, singleton_key="tenant-1")
    other = await client.send("q", {"n": 3}, singleton_key="tenant-2")
    plain = [await client.send("q", {"n": 4}), await client.send("q", {"n": 5})]
    assert first is not None and again == first
    assert other not in (None, first)
    assert len(set(plain)) == 2
    assert [r[2] for r in jobs_of(database_url, schema, "q", "tenant-1")] == [{"n": 1}]
    assert (await client.get_queue("q")).policy == "short"


async def test_short_allows_a_new_queued_job_once_the_first_has_started(
    client: QueueClient, database_url: str, schema: str, eventually: Any
) -> None:
    await client.create_queue("q", policy="short")
    first = await client.send("q", "first", singleton_key="k")
    gate = Gate()
    # One slot: the next job of the key stays queued while the first runs.
    worker = await client.work("q", gate, concurrency=1, poll_interval=0.05, shutdown_grace=1)
    await eventually(lambda: gate.started == ["first"])
    second = await client.send("q", "second", singleton_key="k")
    third = await client.send("q", "third", singleton_key="k")
    assert second not in (None, first) and third == second
    states = [r[1] for r in jobs_of(database_url, schema, "q", "k")]
    assert states == ["active", "queued"]
    gate.release.set()
    await eventually(lambda: worker.completed == 2)


async def test_short_does_not_count_retrying_jobs(
    client: QueueClient, database_url: str, schema: str, eventually: Any
) -> None:
    await client.create_queue("q", policy="short", retry_delay=3600)
    attempts: list[int] = []

    async def fail(job: Job) -> None:
        attempts.append(job.attempt)
        raise RuntimeError("boom")

    await client.send("q", "a", singleton_key="k")
    worker = await client.work("q", fail, poll_interval=0.05, shutdown_grace=1)
    await eventually(lambda: worker.failed == 1)
    await worker.stop()
    # The failed job waits for its retry; a new send of the key queues beside it.
    fresh = await client.send("q", "b", singleton_key="k")
    assert fresh is not None
    states = sorted(r[1] for r in jobs_of(database_url, schema, "q", "k"))
    assert states == ["queued", "retrying"]


async def test_a_released_job_goes_back_as_retrying_beside_a_newer_queued_one(
    client: QueueClient, database_url: str, schema: str, eventually: Any
) -> None:
    await client.create_queue("q", policy="short")
    await client.send("q", "first", singleton_key="k")
    gate = Gate()
    worker = await client.work("q", gate, concurrency=1, poll_interval=0.05, shutdown_grace=0)
    await eventually(lambda: gate.started == ["first"])
    await client.send("q", "second", singleton_key="k")
    # Graceful stop releases the running job; the key already has a queued job, so the
    # released one must not collide with it.
    await worker.stop(grace=0)
    assert worker.released == 1
    assert sorted((r[1], r[2]) for r in jobs_of(database_url, schema, "q", "k")) == [
        ("queued", "second"),
        ("retrying", "first"),
    ]


# -- singleton -----------------------------------------------------------------------------


async def test_singleton_runs_one_job_per_key_at_a_time_in_order(
    client: QueueClient, database_url: str, schema: str, eventually: Any
) -> None:
    await client.create_queue("q", policy="singleton")
    for n in range(3):
        for key in ("a", "b"):
            assert await client.send("q", f"{key}{n}", singleton_key=key) is not None
    gate = Gate()
    worker = await client.work("q", gate, concurrency=10, poll_interval=0.05, shutdown_grace=1)
    await eventually(lambda: len(gate.started) == 2)
    await asyncio.sleep(0.2)  # give a wrong fetch the chance to start more
    assert sorted(gate.started) == ["a0", "b0"]
    for key in ("a", "b"):
        assert [r[1] for r in jobs_of(database_url, schema, "q", key)] == [
            "active",
            "queued",
            "queued",
        ]
    gate.release.set()
    await eventually(lambda: worker.completed == 6)
    order = rows(
        database_url,
        schema,
        "select data from {s}.job where singleton_key = 'a' order by started_at",
    )
    assert [r[0] for r in order] == ["a0", "a1", "a2"]


async def test_singleton_jobs_without_a_key_run_in_parallel(
    client: QueueClient, eventually: Any
) -> None:
    await client.create_queue("q", policy="singleton")
    await client.send_many("q", ["x", "y", "z"])
    gate = Gate()
    await client.work("q", gate, concurrency=10, poll_interval=0.05, shutdown_grace=1)
    await eventually(lambda: len(gate.started) == 3)
    gate.release.set()


async def test_singleton_holds_in_a_fair_queue_too(
    client: QueueClient, database_url: str, schema: str, eventually: Any
) -> None:
    await client.create_queue("q", policy="singleton", fair=True)
    await client.send_many(
        "q",
        [JobSpec(f"{tenant}{n}", singleton_key="k") for n in range(2) for tenant in "ab"],
        fairness_key="t",
    )
    await client.send_many("q", [JobSpec("other", singleton_key="x")], fairness_key="u")
    gate = Gate()
    worker = await client.work("q", gate, concurrency=10, poll_interval=0.05, shutdown_grace=1)
    await eventually(lambda: len(gate.started) == 2)
    await asyncio.sleep(0.2)
    assert sorted(gate.started) == ["a0", "other"]
    gate.release.set()
    await eventually(lambda: worker.completed == 5)


# -- stately -------------------------------------------------------------------------------


async def test_stately_keeps_one_queued_and_one_active_per_key(
    client: QueueClient, database_url: str, schema: str, eventually: Any
) -> None:
    await client.create_queue("q", policy="stately")
    first = await client.send("q", 1, singleton_key="k")
    assert await client.send("q", 2, singleton_key="k") == first
    gate = Gate()
    worker = await client.work("q", gate, concurrency=5, poll_interval=0.05, shutdown_grace=1)
    await eventually(lambda: gate.started == [1])
    second = await client.send("q", 3, singleton_key="k")
    assert await client.send("q", 4, singleton_key="k") == second
    await asyncio.sleep(0.2)
    assert gate.started == [1]  # the queued one waits for the active one
    assert [r[1] for r in jobs_of(database_url, schema, "q", "k")] == ["active", "queued"]
    gate.release.set()
    await eventually(lambda: worker.completed == 2)
    assert gate.started == [1, 3]


# -- exclusive -----------------------------------------------------------------------------


async def test_exclusive_refuses_sends_while_a_job_of_the_key_is_queued_or_active(
    client: QueueClient, database_url: str, schema: str, eventually: Any
) -> None:
    await client.create_queue("q", policy="exclusive")
    first = await client.send("q", 1, singleton_key="k")
    assert await client.send("q", 2, singleton_key="k") == first
    gate = Gate()
    worker = await client.work("q", gate, poll_interval=0.05, shutdown_grace=1)
    await eventually(lambda: gate.started == [1])
    assert await client.send("q", 3, singleton_key="k") == first
    gate.release.set()
    await eventually(lambda: worker.completed == 1)
    await worker.stop()
    later = await client.send("q", 4, singleton_key="k")
    assert later not in (None, first)
    assert [(r[1], r[2]) for r in jobs_of(database_url, schema, "q", "k")] == [
        ("completed", 1),
        ("queued", 4),
    ]


# -- send_many, sync client, transactions ----------------------------------------------------


async def test_send_many_gives_refused_items_the_holders_id(
    client: QueueClient, database_url: str, schema: str
) -> None:
    await client.create_queue("q", policy="short")
    earlier = await client.send("q", "earlier", singleton_key="b")
    ids = await client.send_many(
        "q",
        [
            JobSpec("a1"),
            "plain",
            JobSpec("a2"),
            JobSpec("b1", singleton_key="b"),
            JobSpec("c1", singleton_key="c"),
        ],
        singleton_key="a",  # the default key; JobSpec.singleton_key overrides it
    )
    assert ids[0] == ids[1] == ids[2]  # "plain" takes the default key too
    assert ids[3] == earlier
    assert ids[4] not in (None, *ids[:4])
    assert [r[2] for r in jobs_of(database_url, schema, "q", "a")] == ["a1"]
    assert [r[2] for r in jobs_of(database_url, schema, "q", "c")] == ["c1"]


async def test_send_many_mixes_keyed_and_unkeyed_items(
    client: QueueClient, database_url: str, schema: str
) -> None:
    await client.create_queue("q", policy="exclusive")
    ids = await client.send_many(
        "q", ["x", JobSpec("k1", singleton_key="k"), "y", JobSpec("k2", singleton_key="k")]
    )
    assert ids[1] == ids[3] and len({ids[0], ids[1], ids[2]}) == 3
    assert rows(database_url, schema, "select count(*) from {s}.job")[0][0] == 3


async def test_sync_client_sends_with_singleton_keys(
    client: QueueClient, database_url: str, schema: str
) -> None:
    await client.create_queue("q", policy="short")
    with SyncQueueClient(database_url, schema=schema) as sync_client:
        first = sync_client.send("q", 1, singleton_key="k")
        assert sync_client.send("q", 2, singleton_key="k") == first
        many = sync_client.send_many("q", [JobSpec(3, singleton_key="k"), 4])
        assert many[0] == first and many[1] not in (None, first)
        with pytest.raises(InvalidOption):
            sync_client.send("q", 5, singleton_key="")
    assert len(jobs_of(database_url, schema, "q", "k")) == 1


async def test_a_rolled_back_send_leaves_the_key_free(
    client: QueueClient, database_url: str, schema: str
) -> None:
    await client.create_queue("q", policy="short")
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        async with conn.transaction(force_rollback=True):
            held = await client.send("q", "rolled back", singleton_key="k", conn=conn)
        kept = await client.send("q", "kept", singleton_key="k", conn=conn)
        await conn.commit()
    assert kept is not None and kept != held
    assert [r[2] for r in jobs_of(database_url, schema, "q", "k")] == ["kept"]


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
async def test_a_send_waits_for_a_concurrent_uncommitted_send_of_its_key(
    client: QueueClient, database_url: str, schema: str, outcome: str
) -> None:
    await client.create_queue("q", policy="short")
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        holder = await client.send("q", "first", singleton_key="k", conn=conn)
        waiting = asyncio.create_task(client.send("q", "second", singleton_key="k"))
        await asyncio.sleep(0.3)
        assert not waiting.done()  # blocked on the uncommitted job's index entry
        await (conn.commit() if outcome == "commit" else conn.rollback())
        second = await asyncio.wait_for(waiting, 10)
    if outcome == "commit":
        # The holder committed after the insert's snapshot: found by job_find_singleton.
        assert second == holder
        assert [r[2] for r in jobs_of(database_url, schema, "q", "k")] == ["first"]
    else:
        assert second not in (None, holder)
        assert [r[2] for r in jobs_of(database_url, schema, "q", "k")] == ["second"]


# -- requeue, policy changes ------------------------------------------------------------------


async def test_resume_into_a_taken_key_raises_and_changes_nothing(
    client: QueueClient, database_url: str, schema: str
) -> None:
    await client.create_queue("q", policy="short")
    first = await client.send("q", 1, singleton_key="k")
    assert first is not None
    await client.cancel(first)
    second = await client.send("q", 2, singleton_key="k")
    assert second not in (None, first)
    with pytest.raises(InvalidJobState, match="singleton key"):
        await client.resume(first)
    assert (await client.get_job(first)).state is JobState.CANCELLED
    await client.cancel(second)
    await client.resume(first)
    assert (await client.get_job(first)).state is JobState.QUEUED


async def test_a_policy_change_applies_to_jobs_sent_after_it(
    client: QueueClient, database_url: str, schema: str
) -> None:
    await client.create_queue("q", policy="singleton")
    await client.send("q", 1, singleton_key="k")
    await client.send("q", 2, singleton_key="k")
    await client.update_queue("q", policy="short")
    third = await client.send("q", 3, singleton_key="k")
    assert await client.send("q", 4, singleton_key="k") == third
    policies = rows(
        database_url,
        schema,
        "select data, singleton_policy from {s}.job order by created_at, id",
    )
    assert policies == [(1, "singleton"), (2, "singleton"), (3, "short")]


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"singleton_key": 7},
        {"singleton_key": ""},
        {"singleton_key": "x" * 201},
        {"singleton_key": "nul\x00"},
        {"singleton_key": ["k"]},
        {"singleton_key": "k", "throttle": -1},
        {"singleton_key": "k", "throttle": 0},
        {"singleton_key": "k", "throttle": float("nan")},
        {"singleton_key": "k", "throttle": float("inf")},
        {"singleton_key": "k", "throttle": True},
        {"singleton_key": "k", "throttle": "60"},
        {"singleton_key": "k", "throttle": 1e12},
        {"singleton_key": "k", "debounce": -0.5},
        {"singleton_key": "k", "throttle": 5, "debounce": 5},
        {"throttle": 5},
        {"debounce": 5},
        {"singleton_key": "k", "debounce": 5, "id": uuid.UUID(int=7)},
        {"singleton_key": "k", "debounce": 5, "start_after": 10},
        {"singleton_kee": "k"},
    ],
    ids=repr,
)
async def test_bad_singleton_options_raise_and_write_nothing(
    client: QueueClient, database_url: str, schema: str, options: dict[str, Any]
) -> None:
    await client.create_queue("q", policy="short")
    with pytest.raises(InvalidOption):
        await client.send("q", {"n": 1}, **options)
    with pytest.raises(InvalidOption):
        await client.send_many("q", [{"n": 1}, {"n": 2}], **options)
    assert rows(database_url, schema, "select count(*) from {s}.job")[0][0] == 0


@pytest.mark.parametrize(
    "items",
    [
        [JobSpec(1, singleton_key="k"), JobSpec(2, singleton_key=3)],  # type: ignore[arg-type]
        [JobSpec(1, singleton_key="")],
    ],
)
async def test_bad_job_spec_keys_raise_and_write_nothing(
    client: QueueClient, database_url: str, schema: str, items: list[JobSpec]
) -> None:
    await client.create_queue("q", policy="short")
    with pytest.raises(InvalidOption, match="singleton_key"):
        await client.send_many("q", items)
    assert rows(database_url, schema, "select count(*) from {s}.job")[0][0] == 0


async def test_windowed_send_many_needs_a_key_for_every_item(
    client: QueueClient, database_url: str, schema: str
) -> None:
    await client.create_queue("q")
    for window in ({"throttle": 60}, {"debounce": 60}):
        with pytest.raises(InvalidOption, match="item 1"):
            await client.send_many("q", [JobSpec(1, singleton_key="k"), 2], **window)
    with pytest.raises(InvalidOption, match="id"):
        await client.send_many("q", [JobSpec(1, singleton_key="k", id=uuid.uuid4())], debounce=5)
    with pytest.raises(InvalidOption, match="start_after"):
        await client.send_many("q", [JobSpec(1, singleton_key="k", start_after=5)], debounce=5)
    assert rows(database_url, schema, "select count(*) from {s}.job")[0][0] == 0


async def test_a_key_without_a_window_on_a_standard_queue_is_refused(
    client: QueueClient, database_url: str, schema: str
) -> None:
    await client.create_queue("q")  # policy standard
    with pytest.raises(InvalidOption, match="policy 'standard'"):
        await client.send("q", 1, singleton_key="k")
    with pytest.raises(InvalidOption, match="policy 'standard'"):
        await client.send_many("q", [1, JobSpec(2, singleton_key="k")])
    assert rows(database_url, schema, "select count(*) from {s}.job")[0][0] == 0
    # Without keys the queue works as always.
    assert len(await client.send_many("q", [1, 2])) == 2


@pytest.mark.parametrize("policy", ["unique", "", None, 3, "SHORT"])
async def test_unknown_policy_raises_and_creates_nothing(
    client: QueueClient, database_url: str, schema: str, policy: Any
) -> None:
    with pytest.raises(InvalidOption, match="policy"):
        await client.create_queue("q", policy=policy)
    assert rows(database_url, schema, "select count(*) from {s}.queue")[0][0] == 0
    await client.create_queue("q")
    with pytest.raises(InvalidOption, match="policy"):
        await client.update_queue("q", policy=policy)
    assert (await client.get_queue("q")).policy == "standard"


async def test_the_database_rejects_an_unknown_policy_too(
    client: QueueClient, database_url: str, schema: str
) -> None:
    await client.create_queue("q")
    with pytest.raises(psycopg.errors.CheckViolation):
        rows(database_url, schema, "update {s}.queue set policy = 'other' returning 1")
