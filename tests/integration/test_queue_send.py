"""Sending jobs against a real Postgres: options, caller transactions, the sync client, and
bad input that raises a typed error and writes nothing."""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

from patchbay.queue import (
    FrozenClock,
    InvalidName,
    InvalidOption,
    InvalidPayload,
    Job,
    JobSpec,
    JobState,
    PayloadTooLarge,
    QueueClient,
    QueueNotFound,
    SyncQueueClient,
)

T0 = datetime(2031, 5, 4, 12, 0, tzinfo=UTC)


@pytest.fixture
async def frozen(database_url: str, schema: str) -> AsyncIterator[QueueClient]:
    """A client whose clock stands still at T0 until a test moves it."""
    async with QueueClient(
        database_url, schema=schema, clock=FrozenClock(T0), maintenance=False
    ) as c:
        yield c


def count_jobs(database_url: str, schema: str, queue: str | None = None) -> int:
    with psycopg.connect(database_url) as conn:
        query = sql.SQL("select count(*) from {}.job where %(q)s::text is null or queue = %(q)s")
        row = conn.execute(query.format(sql.Identifier(schema)), {"q": queue}).fetchone()
    assert row is not None
    return int(row[0])


async def wait_until(predicate: Any, within: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.01)


@pytest.mark.smoke
async def test_send_stores_the_job_with_the_queue_policy(client: QueueClient) -> None:
    await client.create_queue("q", retry_limit=4, retry_delay=3, expire_in=60)
    job_id = await client.send("q", {"to": "ada@example.com", "n": [1, 2.5, None, True]})
    job = await client.get_job(job_id)
    assert job.id == job_id and job.queue == "q"
    assert job.state is JobState.QUEUED
    assert job.data == {"to": "ada@example.com", "n": [1, 2.5, None, True]}
    assert (job.retry_limit, job.retry_delay, job.expire_in, job.attempt) == (4, 3.0, 60.0, 0)
    assert job.priority == 0 and job.output is None and job.error is None
    assert job_id.version == 7  # time-ordered ids


async def test_send_options_override_the_queue_defaults(client: QueueClient) -> None:
    await client.create_queue("dlq")
    await client.create_queue("q")
    job_id = await client.send(
        "q",
        None,
        priority=-3,
        retry_limit=0,
        retry_delay=timedelta(seconds=7),
        retry_backoff=False,
        retry_delay_max=30,
        expire_in=5,
        dead_letter="dlq",
    )
    job = await client.get_job(job_id)
    assert job.data is None
    assert job.priority == -3
    assert (job.retry_limit, job.retry_delay, job.retry_backoff) == (0, 7.0, False)
    assert (job.retry_delay_max, job.expire_in, job.dead_letter) == (30.0, 5.0, "dlq")


async def test_priority_orders_the_work(client: QueueClient) -> None:
    await client.create_queue("q")
    priorities = [0, 5, -1, 10, 5, 1]
    ids = await client.send_many(
        "q", [JobSpec({"i": i}, priority=p) for i, p in enumerate(priorities)]
    )
    order: list[int] = []

    async def handler(job: Job) -> None:
        order.append(job.data["i"])

    worker = await client.work("q", handler, concurrency=1)
    await wait_until(lambda: worker.completed == len(ids))
    # Higher first; equal priorities in send order.
    assert order == [3, 1, 4, 5, 0, 2]


async def test_start_after_delay_defers_the_job(frozen: QueueClient) -> None:
    await frozen.create_queue("q")
    clock = frozen.clock
    assert isinstance(clock, FrozenClock)
    job_id = await frozen.send("q", {"x": 1}, start_after=30)
    assert (await frozen.get_job(job_id)).start_after == T0 + timedelta(seconds=30)
    started = asyncio.Event()

    async def handler(job: Job) -> None:
        started.set()

    worker = await frozen.work("q", handler, poll_interval=30)
    await wait_until(lambda: worker.fetches >= 1)
    stats = (await frozen.stats("q"))[0]
    assert (stats.queued, stats.deferred) == (0, 1)
    assert not started.is_set()
    clock.advance(31)
    worker.wake()
    await asyncio.wait_for(started.wait(), 5)
    await wait_until(lambda: worker.completed == 1)


async def test_start_after_datetime_and_timedelta(frozen: QueueClient) -> None:
    await frozen.create_queue("q")
    at = datetime(2032, 1, 2, 3, 4, 5, tzinfo=UTC)
    a = await frozen.send("q", 1, start_after=at)
    b = await frozen.send("q", 2, start_after=timedelta(minutes=2))
    assert (await frozen.get_job(a)).start_after == at
    assert (await frozen.get_job(b)).start_after == T0 + timedelta(minutes=2)
    with pytest.raises(InvalidOption, match="timezone-aware"):
        await frozen.send("q", 3, start_after=datetime(2032, 1, 1))


async def test_send_many_items_with_their_own_start_after(frozen: QueueClient) -> None:
    await frozen.create_queue("q")
    at = T0 + timedelta(hours=5)
    ids = await frozen.send_many(
        "q",
        [JobSpec(1), JobSpec(2, start_after=60), JobSpec(3, start_after=at)],
        start_after=10,
    )
    starts = [(await frozen.get_job(i)).start_after for i in ids]
    # A per-item delay counts from the client's clock, like the call-wide one.
    assert starts == [T0 + timedelta(seconds=10), T0 + timedelta(seconds=60), at]


async def test_caller_id_repeated_is_not_a_second_job(client: QueueClient, schema: str) -> None:
    await client.create_queue("q")
    job_id = uuid.uuid4()
    assert await client.send("q", {"v": 1}, id=job_id) == job_id
    assert await client.send("q", {"v": 2}, id=str(job_id)) == job_id
    assert (await client.get_job(job_id)).data == {"v": 1}  # the first send wins
    # Also inside one batch, and across send and send_many.
    other = uuid.uuid4()
    ids = await client.send_many(
        "q", [JobSpec({"v": 3}, id=other), JobSpec({"v": 4}, id=other), JobSpec(5, id=job_id)]
    )
    assert ids == [other, other, job_id]
    assert count_jobs(client.conninfo, schema, "q") == 2
    assert (await client.get_job(other)).data == {"v": 3}


async def test_send_many_returns_ids_in_order(client: QueueClient, schema: str) -> None:
    await client.create_queue("q")
    ids = await client.send_many("q", [{"n": n} for n in range(500)])
    assert len(set(ids)) == 500
    assert ids == sorted(ids)  # UUIDv7: time-ordered, ordered within the batch
    assert (await client.get_job(ids[321])).data == {"n": 321}
    assert await client.send_many("q", []) == []
    assert count_jobs(client.conninfo, schema, "q") == 500


async def test_conn_rolled_back_leaves_no_job_committed_does(
    client: QueueClient, database_url: str, schema: str
) -> None:
    await client.create_queue("q")
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        await conn.execute("select 1")  # a business write would go here
        rolled = await client.send("q", {"tx": "rollback"}, conn=conn)
        many = await client.send_many("q", [1, 2], conn=conn)
        await conn.rollback()
        kept = await client.send("q", {"tx": "commit"}, conn=conn)
        # Not visible to others until the caller commits.
        assert count_jobs(database_url, schema, "q") == 0
        await conn.commit()
    assert count_jobs(database_url, schema, "q") == 1
    assert (await client.get_job(kept)).data == {"tx": "commit"}
    for gone in (rolled, *many):
        with pytest.raises(LookupError):
            await client.get_job(gone)


async def test_conn_transaction_block_rollback(client: QueueClient, database_url: str) -> None:
    await client.create_queue("q")
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                job_id = await client.send("q", {}, conn=conn)
                raise RuntimeError("business logic failed")
    with pytest.raises(LookupError):
        await client.get_job(job_id)


def test_sync_client_sends_and_honours_caller_transactions(database_url: str, schema: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("insert into {}.queue (name) values ('q')").format(sql.Identifier(schema))
        )
    with SyncQueueClient(database_url, schema=schema) as queues:
        job_id = queues.send("q", {"sync": True}, priority=2)
        assert queues.get_job(job_id).data == {"sync": True}
        assert queues.get_job(job_id).priority == 2
        ids = queues.send_many("q", [{"n": 1}, JobSpec({"n": 2}, priority=9)])
        assert queues.get_job(ids[1]).priority == 9
        with psycopg.connect(database_url) as conn:
            gone = queues.send("q", {"tx": "rollback"}, conn=conn)
            conn.rollback()
            kept = queues.send("q", {"tx": "commit"}, conn=conn)
            conn.commit()
        assert queues.get_job(kept).data == {"tx": "commit"}
        with pytest.raises(LookupError):
            queues.get_job(gone)
        with pytest.raises(QueueNotFound):
            queues.send("missing", {})
        with pytest.raises(InvalidPayload):
            queues.send("q", {"bad": math.nan})
        assert count_jobs(database_url, schema, "q") == 4


async def test_unknown_queue_raises_and_writes_nothing(client: QueueClient, schema: str) -> None:
    await client.create_queue("q")
    with pytest.raises(QueueNotFound, match="'nope' does not exist"):
        await client.send("nope", {"a": 1})
    with pytest.raises(QueueNotFound):
        await client.send_many("nope", [1, 2, 3])
    with pytest.raises(QueueNotFound):
        await client.work("nope", lambda job: asyncio.sleep(0))
    assert count_jobs(client.conninfo, schema) == 0


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda c: c.send("q", {"n": math.nan}), InvalidPayload),
        (lambda c: c.send("q", {"s": "\x00"}), InvalidPayload),
        (lambda c: c.send("q", "\ud83d"), InvalidPayload),
        (lambda c: c.send("q", {"o": object()}), InvalidPayload),
        (lambda c: c.send("q", "x" * 5000), PayloadTooLarge),
        (lambda c: c.send("q", {}, start_after=-1), InvalidOption),
        (lambda c: c.send("q", {}, bogus=1), InvalidOption),
        (lambda c: c.send("bad name", {}), InvalidName),
        (lambda c: c.send_many("q", [{"ok": 1}, {"bad": math.inf}]), InvalidPayload),
        (lambda c: c.send_many("q", [{"ok": 1}, JobSpec(2, start_after=-5)]), InvalidOption),
        (lambda c: c.send_many("q", [{"ok": 1}, "y" * 5000]), PayloadTooLarge),
    ],
    ids=[
        "nan",
        "nul",
        "surrogate",
        "object",
        "oversized",
        "negative-delay",
        "unknown-option",
        "bad-name",
        "batch-inf",
        "batch-bad-delay",
        "batch-oversized",
    ],
)
async def test_bad_input_raises_typed_error_and_writes_nothing(
    database_url: str, schema: str, call: Any, error: type[Exception]
) -> None:
    async with QueueClient(database_url, schema=schema, max_payload_bytes=4096) as c:
        await c.create_queue("q")
        await c.send("q", {"before": True})
        before = count_jobs(database_url, schema)
        with pytest.raises(error):
            await call(c)
        assert count_jobs(database_url, schema) == before == 1


async def test_payload_edge_cases_round_trip(client: QueueClient) -> None:
    await client.create_queue("q")
    data = {
        "literal_backslash_u0000": "\\u0000",
        "emoji": "\U0001f680",
        "nested": {"a": [{"b": None}]},
        "big": 2**62,
        "neg_zero": -0.0,
    }
    job_id = await client.send("q", data)
    assert (await client.get_job(job_id)).data == data
    for scalar in (0, "text", [1, "two"], True):
        assert (await client.get_job(await client.send("q", scalar))).data == scalar
