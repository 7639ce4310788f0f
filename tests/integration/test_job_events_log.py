"""Job events: failures are always appended; with a queue's ``events`` on, every state
change is (created, started, completed, cancelled, requeued, released). Read per job and
per queue; deleted with their job."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import psycopg
import pytest
from conftest import Eventually

from patchbay.queue import (
    InvalidOption,
    Job,
    JobEventKind,
    JobNotFound,
    JobState,
    QueueClient,
    QueueNotFound,
    SyncQueueClient,
)

Q, A, R, C, F = (
    JobState.QUEUED,
    JobState.ACTIVE,
    JobState.RETRYING,
    JobState.COMPLETED,
    JobState.FAILED,
)


def _count_events(database_url: str, schema: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(f'select count(*) from "{schema}".job_event').fetchone()
    assert row is not None
    return int(row[0])


async def _fail_then_succeed(job: Job) -> str:
    if job.data == "fail" or (job.data == "flaky" and job.attempt == 1):
        raise ValueError(f"attempt {job.attempt} failed")
    return "ok"


async def test_failures_are_recorded_even_with_events_off(
    client: QueueClient, eventually: Eventually, database_url: str, schema: str
) -> None:
    await client.create_queue("dlq")
    await client.create_queue("q", retry_limit=1, dead_letter="dlq")
    done, failed = await client.send_many("q", ["fine", "fail"])
    worker = await client.work("q", _fail_then_succeed)
    await eventually(lambda: worker.completed == 1 and worker.failed == 2)
    await worker.drain()

    assert await client.job_events(done) == []
    first, last = await client.job_events(failed)
    assert (first.kind, first.from_state, first.to_state, first.attempt) == ("retrying", A, R, 1)
    assert (last.kind, last.from_state, last.to_state, last.attempt) == ("failed", A, F, 2)
    assert first.data is not None and last.data is not None
    assert first.data["error"]["type"] == "builtins.ValueError"
    assert first.data["error"]["message"] == "attempt 1 failed"
    assert "dead_letter" not in first.data
    (copy,) = (await client.list_jobs(queue="dlq")).jobs
    assert last.data["dead_letter"] == {"queue": "dlq", "id": str(copy.id)}
    assert first.at <= last.at
    # The queue records no other events: two rows in all.
    assert _count_events(database_url, schema) == 2


async def test_every_transition_is_recorded_when_events_are_on(
    client: QueueClient, eventually: Eventually
) -> None:
    await client.create_queue("q", events=True, retry_limit=1)
    ok, flaky = await client.send_many("q", ["fine", "flaky"])
    worker = await client.work("q", _fail_then_succeed)
    await eventually(lambda: worker.completed == 2)
    await worker.drain()

    history = [(e.kind, e.from_state, e.to_state, e.attempt) for e in await client.job_events(ok)]
    assert history == [
        ("created", None, Q, 0),
        ("started", None, A, 1),
        ("completed", A, C, 1),
    ]
    history = [(e.kind, e.to_state, e.attempt) for e in await client.job_events(flaky)]
    assert history == [
        ("created", Q, 0),
        ("started", A, 1),
        ("retrying", R, 1),
        ("started", A, 2),
        ("completed", C, 2),
    ]
    assert {e.job_id for e in await client.queue_events("q")} == {ok, flaky}
    assert all(e.queue == "q" for e in await client.queue_events("q"))


async def test_cancel_resume_and_retry_are_recorded(client: QueueClient) -> None:
    await client.create_queue("q", events=True)
    job_id = await client.send("q", None)
    await client.cancel(job_id)
    await client.resume(job_id)
    events = await client.job_events(job_id)
    assert [(e.kind, e.from_state, e.to_state) for e in events] == [
        ("created", None, Q),
        ("cancelled", Q, JobState.CANCELLED),
        ("requeued", JobState.CANCELLED, Q),
    ]
    assert [e.kind for e in events] == [
        JobEventKind.CREATED,
        JobEventKind.CANCELLED,
        JobEventKind.REQUEUED,
    ]


async def test_a_job_released_at_shutdown_is_recorded(
    client: QueueClient, eventually: Eventually
) -> None:
    await client.create_queue("q", events=True)
    job_id = await client.send("q", None)
    started = asyncio.Event()

    async def hold(job: Job) -> None:
        started.set()
        await asyncio.Event().wait()

    worker = await client.work("q", hold)
    await asyncio.wait_for(started.wait(), 10)
    await worker.stop(grace=0)
    job = await client.get_job(job_id)
    assert (job.state, job.attempt) == (Q, 0)
    kinds = [(e.kind, e.from_state, e.to_state, e.attempt) for e in await client.job_events(job_id)]
    assert kinds[-1] == ("released", A, Q, 0)


async def test_events_off_costs_no_rows(
    client: QueueClient, eventually: Eventually, database_url: str, schema: str
) -> None:
    await client.create_queue("q")
    await client.send_many("q", list(range(20)))
    worker = await client.work("q", _fail_then_succeed)
    await eventually(lambda: worker.completed == 20)
    await worker.drain()
    assert _count_events(database_url, schema) == 0
    assert await client.queue_events("q") == []


async def test_turning_events_on_takes_effect_for_this_client_at_once(client: QueueClient) -> None:
    await client.create_queue("q")
    before = await client.send("q", None)
    await client.update_queue("q", events=True)
    after = await client.send("q", None)
    assert await client.job_events(before) == []
    assert [e.kind for e in await client.job_events(after)] == ["created"]


async def test_a_send_rolled_back_leaves_no_event(
    client: QueueClient, database_url: str, schema: str
) -> None:
    await client.create_queue("q", events=True)
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        await client.send("q", None, conn=conn)
        await conn.rollback()
        committed = await client.send("q", None, conn=conn)
        await conn.commit()
    assert _count_events(database_url, schema) == 1
    assert [e.kind for e in await client.job_events(committed)] == ["created"]


async def test_the_sync_client_records_created_events_once_per_job(
    client: QueueClient, database_url: str, schema: str
) -> None:
    await client.create_queue("q", events=True)
    with SyncQueueClient(database_url, schema=schema) as sync:
        job_id = sync.send("q", {"a": 1})
        assert sync.send("q", {"a": 1}, id=job_id) == job_id  # a repeated id adds no job
    assert [e.kind for e in await client.job_events(job_id)] == ["created"]


async def test_a_dead_letter_copy_records_where_it_came_from(
    client: QueueClient, eventually: Eventually
) -> None:
    await client.create_queue("dlq", events=True)
    await client.create_queue("q", retry_limit=0, dead_letter="dlq")
    job_id = await client.send("q", "fail")
    worker = await client.work("q", _fail_then_succeed)
    await eventually(lambda: worker.failed == 1)
    await worker.drain()
    (copy,) = (await client.list_jobs(queue="dlq")).jobs
    (created,) = await client.job_events(copy.id)
    assert created.kind == "created"
    assert created.data == {"origin_queue": "q", "origin_id": str(job_id)}


async def test_queue_events_since_limit_and_latest(client: QueueClient) -> None:
    await client.create_queue("q", events=True)
    ids = [await client.send("q", n) for n in range(5)]
    everything = await client.queue_events("q")
    assert [e.job_id for e in everything] == ids  # oldest first
    assert [e.job_id for e in await client.queue_events("q", limit=2)] == ids[-2:]
    since = everything[2].at
    assert [e.job_id for e in await client.queue_events("q", since)] == ids[2:]
    assert [e.job_id for e in await client.queue_events("q", since, limit=1)] == ids[2:3]
    later = everything[-1].at + timedelta(seconds=1)
    assert await client.queue_events("q", later) == []


async def test_reading_events_validates_its_input(client: QueueClient) -> None:
    await client.create_queue("q")
    with pytest.raises(JobNotFound):
        await client.job_events("6a2f41a3-c54c-fce8-32d2-0324e1c32e22")
    with pytest.raises(QueueNotFound):
        await client.queue_events("nope")
    with pytest.raises(InvalidOption, match="since"):
        await client.queue_events("q", since="yesterday")  # type: ignore[arg-type]
    with pytest.raises(InvalidOption, match="limit"):
        await client.queue_events("q", limit=0)


async def test_deleting_a_job_or_its_queue_deletes_its_events(
    client: QueueClient, database_url: str, schema: str
) -> None:
    await client.create_queue("q", events=True)
    await client.create_queue("other", events=True)
    gone = await client.send("q", None)
    await client.send("other", None)
    kept = await client.send("q", None)
    await client.delete_job(gone)
    assert _count_events(database_url, schema) == 2
    await client.delete_queue("other")
    assert _count_events(database_url, schema) == 1
    assert [e.job_id for e in await client.queue_events("q")] == [kept]


async def test_a_lost_lease_is_recorded_as_a_failed_attempt(
    database_url: str, schema: str, eventually: Eventually
) -> None:
    from datetime import UTC, datetime

    from patchbay.queue import FrozenClock

    clock = FrozenClock(datetime(2031, 3, 1, tzinfo=UTC))
    async with QueueClient(database_url, schema=schema, clock=clock, maintenance=False) as c:
        await c.create_queue("q", expire_in=30)
        job_id = await c.send("q", None)
        started = asyncio.Event()

        async def hold(job: Job) -> None:
            started.set()
            await asyncio.Event().wait()

        worker = await c.work("q", hold)
        await asyncio.wait_for(started.wait(), 10)
        clock.advance(31)
        assert await c.expire_leases() == 1
        (event,) = await c.job_events(job_id)
        assert (event.kind, event.from_state, event.to_state) == ("retrying", A, R)
        assert event.data is not None
        assert event.data["error"]["type"] == "patchbay.queue.LeaseExpired"
        await worker.stop(grace=0)
