"""Max queued age: a job that waits longer than its queue's ``max_queued_age`` to start
(counted from when it became runnable) fails with MaxQueuedAgeExceeded, is dead-lettered,
and its failure is recorded as an event whatever the queue's ``events`` setting."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from conftest import Eventually

from patchbay.queue import (
    FrozenClock,
    InvalidOption,
    Job,
    JobEventKind,
    JobState,
    QueueClient,
)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(datetime(2031, 3, 1, 12, 0, tzinfo=UTC))


@pytest.fixture
async def fclient(database_url: str, schema: str, clock: FrozenClock) -> AsyncIterator[QueueClient]:
    async with QueueClient(database_url, schema=schema, clock=clock, maintenance=False) as c:
        yield c


@pytest.mark.smoke
async def test_a_job_that_waited_too_long_fails_and_is_dead_lettered(
    fclient: QueueClient, clock: FrozenClock
) -> None:
    await fclient.create_queue("dlq")
    await fclient.create_queue("q", max_queued_age=60, dead_letter="dlq")
    job_id = await fclient.send("q", {"n": 1})

    clock.advance(59)
    await fclient.maintenance.run_once()
    assert (await fclient.get_job(job_id)).state is JobState.QUEUED

    clock.advance(2)
    await fclient.maintenance.run_once()
    job = await fclient.get_job(job_id)
    assert job.state is JobState.FAILED
    assert job.finished_at == clock.now()
    assert job.attempt == 0
    assert job.error is not None
    assert job.error["type"] == "patchbay.queue.MaxQueuedAgeExceeded"
    assert "waited 61s" in job.error["message"]
    assert "max_queued_age of 60s" in job.error["message"]
    assert fclient.maintenance.queued_expired == 1

    (copy,) = (await fclient.list_jobs(queue="dlq")).jobs
    assert (copy.origin_queue, copy.origin_id) == ("q", job_id)
    assert copy.data == {"n": 1}
    assert copy.state is JobState.QUEUED
    assert copy.error == job.error

    (event,) = await fclient.job_events(job_id)
    assert event.kind == JobEventKind.EXPIRED
    assert (event.from_state, event.to_state) == (JobState.QUEUED, JobState.FAILED)
    assert event.data is not None
    assert event.data["error"]["type"] == "patchbay.queue.MaxQueuedAgeExceeded"
    assert event.data["dead_letter"] == {"queue": "dlq", "id": str(copy.id)}


async def test_a_deferred_job_waits_from_its_start_time(
    fclient: QueueClient, clock: FrozenClock
) -> None:
    await fclient.create_queue("q", max_queued_age=60)
    job_id = await fclient.send("q", None, start_after=timedelta(hours=1))
    clock.advance(3600 + 59)
    await fclient.maintenance.run_once()
    assert (await fclient.get_job(job_id)).state is JobState.QUEUED
    clock.advance(2)
    await fclient.maintenance.run_once()
    assert (await fclient.get_job(job_id)).state is JobState.FAILED


async def test_a_retrying_job_waits_from_its_retry_time_and_active_jobs_never_expire(
    fclient: QueueClient, clock: FrozenClock, eventually: Eventually
) -> None:
    await fclient.create_queue(
        "q", max_queued_age=60, retry_limit=3, retry_delay=30, retry_backoff=False
    )
    retried, running = await fclient.send_many("q", ["fail", "hold"])
    release = asyncio.Event()

    async def handler(job: Job) -> None:
        if job.data == "fail":
            raise RuntimeError("once")
        await release.wait()

    worker = await fclient.work("q", handler, concurrency=2)
    await eventually(lambda: worker.failed == 1 and worker.running == 1)
    assert (await fclient.get_job(retried)).state is JobState.RETRYING

    # Due 30 s after the failure; 89 s later it has waited 59 s since then.
    clock.advance(89)
    await fclient.maintenance.run_once()
    assert (await fclient.get_job(retried)).state is JobState.RETRYING
    clock.advance(2)
    await fclient.maintenance.run_once()
    expired = await fclient.get_job(retried)
    assert expired.state is JobState.FAILED
    assert expired.attempt == 1
    kinds = [(e.kind, e.from_state) for e in await fclient.job_events(retried)]
    assert kinds == [("retrying", JobState.ACTIVE), ("expired", JobState.RETRYING)]

    assert (await fclient.get_job(running)).state is JobState.ACTIVE
    release.set()
    await eventually(lambda: worker.completed == 1)
    await worker.stop()


async def test_queues_without_max_queued_age_never_expire_jobs(
    fclient: QueueClient, clock: FrozenClock
) -> None:
    await fclient.create_queue("q")
    job_id = await fclient.send("q", None)
    clock.advance(timedelta(days=365))
    await fclient.maintenance.run_once()
    assert (await fclient.get_job(job_id)).state is JobState.QUEUED
    assert fclient.maintenance.queued_expired == 0


async def test_setting_max_queued_age_later_applies_to_waiting_jobs(
    fclient: QueueClient, clock: FrozenClock
) -> None:
    await fclient.create_queue("q")
    job_id = await fclient.send("q", None)
    clock.advance(600)
    await fclient.update_queue("q", max_queued_age=timedelta(minutes=5))
    await fclient.maintenance.run_once()
    assert (await fclient.get_job(job_id)).state is JobState.FAILED


async def test_max_queued_age_is_validated_and_stored_in_seconds(fclient: QueueClient) -> None:
    for bad in (0, -1, "1h", float("inf"), True):
        with pytest.raises(InvalidOption, match="max_queued_age"):
            await fclient.create_queue("q", max_queued_age=bad)
    info = await fclient.create_queue("q", max_queued_age=timedelta(minutes=2))
    assert info.settings.max_queued_age == 120.0
    info = await fclient.update_queue("q", max_queued_age=None)
    assert info.settings.max_queued_age is None
