"""Operations on jobs: get, list with paging, cancel, resume, retry, delete, and per-queue
stats over every state."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import pytest

from patchbay.queue import (
    FrozenClock,
    InvalidJobState,
    InvalidOption,
    Job,
    JobNotFound,
    JobState,
    QueueClient,
    QueueNotFound,
)

T0 = datetime(2031, 5, 4, 12, 0, tzinfo=UTC)


@pytest.fixture
async def frozen(database_url: str, schema: str) -> AsyncIterator[QueueClient]:
    async with QueueClient(
        database_url, schema=schema, clock=FrozenClock(T0), maintenance=False
    ) as c:
        yield c


async def wait_until(predicate: Callable[[], bool], within: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.005)


async def test_get_job_unknown_and_malformed_ids(client: QueueClient) -> None:
    with pytest.raises(JobNotFound, match="not found"):
        await client.get_job(uuid.uuid4())
    with pytest.raises(InvalidOption, match="UUID"):
        await client.get_job("12345")
    await client.create_queue("q")
    job_id = await client.send("q", {"a": 1})
    assert (await client.get_job(str(job_id))).id == job_id


async def test_list_jobs_pages_through_everything_once(client: QueueClient) -> None:
    await client.create_queue("q")
    await client.create_queue("other")
    ids: list[uuid.UUID] = []
    for chunk in range(5):  # several sends: different created_at as well as ids
        ids += await client.send_many("q", [{"c": chunk, "i": i} for i in range(5)])
    await client.send_many("other", [1, 2, 3])

    seen: list[uuid.UUID] = []
    cursor = None
    pages = 0
    while True:
        page = await client.list_jobs(queue="q", limit=10, cursor=cursor)
        pages += 1
        seen += [j.id for j in page.jobs]
        assert all(j.queue == "q" for j in page.jobs)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert pages == 3
    assert seen == sorted(ids, reverse=True)  # newest first, no gaps, no repeats
    everything = await client.list_jobs(limit=1000)
    assert len(everything.jobs) == 28 and everything.next_cursor is None


async def test_list_jobs_by_state(client: QueueClient) -> None:
    await client.create_queue("q")
    a, b, c = await client.send_many("q", ["a", "b", "c"])
    await client.cancel(b)
    cancelled = await client.list_jobs(queue="q", state="cancelled")
    assert [j.id for j in cancelled.jobs] == [b]
    queued = await client.list_jobs(queue="q", state=JobState.QUEUED)
    assert {j.id for j in queued.jobs} == {a, c}
    assert (await client.list_jobs(queue="missing")).jobs == []
    assert (await client.list_jobs(state="failed")).jobs == []


async def test_cancel_and_resume(client: QueueClient) -> None:
    await client.create_queue("q")
    job_id = await client.send("q", {})
    await client.cancel(job_id)
    job = await client.get_job(job_id)
    assert job.state is JobState.CANCELLED and job.finished_at is not None
    with pytest.raises(InvalidJobState, match=r"cannot cancel .* it is cancelled"):
        await client.cancel(job_id)
    await client.resume(job_id)
    job = await client.get_job(job_id)
    assert job.state is JobState.QUEUED and job.finished_at is None
    with pytest.raises(InvalidJobState, match="it is queued"):
        await client.resume(job_id)
    with pytest.raises(JobNotFound):
        await client.cancel(uuid.uuid4())
    with pytest.raises(JobNotFound):
        await client.resume(uuid.uuid4())

    ran = asyncio.Event()

    async def handler(job: Job) -> None:
        ran.set()

    await client.work("q", handler)
    await asyncio.wait_for(ran.wait(), 5)


async def test_retry_a_failed_job_runs_it_again_with_a_fresh_budget(
    client: QueueClient,
) -> None:
    await client.create_queue("q", retry_limit=1)
    should_fail = True
    attempts: list[int] = []

    async def handler(job: Job) -> str:
        attempts.append(job.attempt)
        if should_fail:
            raise RuntimeError("down")
        return "up"

    worker = await client.work("q", handler)
    job_id = await client.send("q", {})
    await wait_until(lambda: worker.failed == 2)
    failed = await client.get_job(job_id)
    assert (failed.state, failed.attempt) == (JobState.FAILED, 2)
    with pytest.raises(InvalidJobState, match="cannot cancel"):
        await client.cancel(job_id)
    with pytest.raises(InvalidJobState, match="cannot resume"):
        await client.resume(job_id)

    should_fail = False
    await client.retry(job_id)
    await wait_until(lambda: worker.completed == 1)
    job = await client.get_job(job_id)
    # The attempt counter never goes back (fencing stays sound); the budget is fresh.
    assert (job.state, job.attempt, job.output) == (JobState.COMPLETED, 3, "up")
    assert job.retry_limit == 3
    assert attempts == [1, 2, 3]
    with pytest.raises(InvalidJobState, match=r"cannot retry .* it is completed"):
        await client.retry(job_id)


async def test_retry_only_applies_to_failed_jobs(client: QueueClient) -> None:
    await client.create_queue("q")
    job_id = await client.send("q", {})
    with pytest.raises(InvalidJobState, match=r"cannot retry .* it is queued"):
        await client.retry(job_id)
    with pytest.raises(JobNotFound):
        await client.retry(uuid.uuid4())


async def test_delete_job(client: QueueClient) -> None:
    await client.create_queue("q")
    job_id = await client.send("q", {})
    await client.delete_job(job_id)
    with pytest.raises(JobNotFound):
        await client.get_job(job_id)
    with pytest.raises(JobNotFound):
        await client.delete_job(job_id)


async def test_stats_count_every_state(frozen: QueueClient) -> None:
    clock = frozen.clock
    assert isinstance(clock, FrozenClock)
    await frozen.create_queue("q", retry_backoff=False)
    await frozen.create_queue("empty")
    hang = asyncio.Event()

    async def handler(job: Job) -> None:
        kind = job.data
        if kind == "fail":
            raise RuntimeError("for good")
        if kind == "retry":
            raise RuntimeError("again later")
        if kind == "hang":
            await hang.wait()

    # One slot: each job finishes before the next starts, and the hanging one blocks the
    # worker so that the jobs sent after it stay queued.
    worker = await frozen.work("q", handler, concurrency=1)
    await frozen.send("q", "ok")
    await frozen.send("q", "fail", retry_limit=0)
    await frozen.send("q", "retry", retry_limit=1, retry_delay=60)
    await wait_until(lambda: worker.completed == 1 and worker.failed == 2)
    await frozen.send("q", "hang")
    await wait_until(lambda: worker.running == 1)
    await frozen.send("q", "queued")
    await frozen.send("q", "deferred", start_after=3600)
    await frozen.cancel(await frozen.send("q", "cancelled"))
    clock.advance(5)

    stats = {s.queue: s for s in await frozen.stats()}
    q = stats["q"]
    counts = (q.queued, q.deferred, q.active, q.retrying, q.completed, q.failed, q.cancelled)
    assert counts == (1, 1, 1, 1, 1, 1, 1)
    assert q.oldest_queued_age == pytest.approx(5.0)
    empty = stats["empty"]
    assert (empty.queued, empty.completed, empty.oldest_queued_age) == (0, 0, None)
    assert [s.queue for s in await frozen.stats("q")] == ["q"]
    with pytest.raises(QueueNotFound):
        await frozen.stats("missing")
    assert q.to_json()["oldest_queued_age"] == pytest.approx(5.0)
    hang.set()
    await wait_until(lambda: worker.completed == 3)
