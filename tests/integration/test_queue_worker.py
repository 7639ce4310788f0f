"""Workers against a real Postgres: results, errors, retries with backoff, dead letters,
leases and heartbeats, attempt fencing, graceful shutdown. Time is a FrozenClock: no test
waits for a lease or a retry delay to pass."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

from patchbay.queue import (
    FrozenClock,
    InvalidOption,
    Job,
    JobState,
    QueueClient,
    SyncQueueClient,
    Worker,
)

T0 = datetime(2031, 5, 4, 12, 0, tzinfo=UTC)


@pytest.fixture
async def frozen(database_url: str, schema: str) -> AsyncIterator[QueueClient]:
    """A client at T0 whose time moves only when a test says so; no background maintenance,
    so lease expiry happens exactly when a test calls ``expire_leases()``."""
    async with QueueClient(
        database_url, schema=schema, clock=FrozenClock(T0), maintenance=False
    ) as c:
        yield c


def clock_of(client: QueueClient) -> FrozenClock:
    assert isinstance(client.clock, FrozenClock)
    return client.clock


async def wait_until(predicate: Callable[[], bool], within: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.005)


async def wait_for_job(
    client: QueueClient, job_id: uuid.UUID, check: Callable[[Any], bool], within: float = 5.0
) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        job = await client.get_job(job_id)
        if check(job):
            return job
        if loop.time() > deadline:
            raise AssertionError(f"job never reached the expected state: {job}")
        await asyncio.sleep(0.01)


async def fetch_round(worker: Worker) -> None:
    """Make the worker fetch once more and wait until it has."""
    before = worker.fetches
    worker.wake()
    await wait_until(lambda: worker.fetches > before)


class Gate:
    """Handlers that block until the test lets each attempt go."""

    def __init__(self) -> None:
        self.started: dict[int, Job] = {}
        self.release: dict[int, asyncio.Event] = {}
        self.results: dict[int, Any] = {}

    async def __call__(self, job: Job) -> Any:
        event = self.release.setdefault(job.attempt, asyncio.Event())
        self.started[job.attempt] = job
        await event.wait()
        return self.results.get(job.attempt, {"attempt": job.attempt})

    def let_go(self, attempt: int, result: Any = None) -> None:
        if result is not None:
            self.results[attempt] = result
        self.release.setdefault(attempt, asyncio.Event()).set()


@pytest.mark.smoke
async def test_handler_exception_is_stored_with_type_message_and_traceback(
    client: QueueClient,
) -> None:
    await client.create_queue("q", retry_limit=0)

    async def explode(job: Job) -> None:
        raise ValueError(f"cannot handle {job.data['n']}")

    worker = await client.work("q", explode)
    job_id = await client.send("q", {"n": 42})
    job = await wait_for_job(client, job_id, lambda j: j.state is JobState.FAILED)
    assert job.error["type"] == "builtins.ValueError"
    assert job.error["message"] == "cannot handle 42"
    assert "in explode" in job.error["traceback"]
    assert job.error["traceback"].rstrip().endswith("ValueError: cannot handle 42")
    assert job.attempt == 1 and job.finished_at is not None and job.output is None
    assert worker.failed == 1 and worker.completed == 0


async def test_completion_with_and_without_output(client: QueueClient) -> None:
    await client.create_queue("q")

    async def handler(job: Job) -> Any:
        return job.data["give"]

    worker = await client.work("q", handler, concurrency=4)
    with_output = await client.send("q", {"give": {"ok": True, "items": [1, 2]}})
    without = await client.send("q", {"give": None})
    await wait_until(lambda: worker.completed == 2)
    done = await client.get_job(with_output)
    assert done.state is JobState.COMPLETED and done.output == {"ok": True, "items": [1, 2]}
    assert done.started_at is not None and done.finished_at is not None
    assert done.lease_expires_at is None and done.error is None
    assert (await client.get_job(without)).output is None


async def test_output_that_is_not_json_fails_the_attempt(client: QueueClient) -> None:
    await client.create_queue("q", retry_limit=0)

    async def handler(job: Job) -> Any:
        return {"when": object()}

    await client.work("q", handler)
    job_id = await client.send("q", {})
    job = await wait_for_job(client, job_id, lambda j: j.state is JobState.FAILED)
    assert job.error["type"] == "patchbay.queue.errors.InvalidPayload"
    assert "handler output" in job.error["message"]


async def test_error_text_goes_through_the_redactor(database_url: str, schema: str) -> None:
    async with QueueClient(
        database_url, schema=schema, redact=lambda text: text.replace("hunter2", "[redacted]")
    ) as client:
        await client.create_queue("q", retry_limit=0)

        async def leak(job: Job) -> None:
            password = "hunter2"
            raise PermissionError(f"login failed with password {password}")

        await client.work("q", leak)
        job_id = await client.send("q", {})
        job = await wait_for_job(client, job_id, lambda j: j.state is JobState.FAILED)
    assert job.error["message"] == "login failed with password [redacted]"
    assert "hunter2" not in job.error["traceback"]


async def test_concurrency_runs_that_many_handlers_at_once(client: QueueClient) -> None:
    await client.create_queue("q")
    running = 0
    peak = 0
    release = asyncio.Event()

    async def handler(job: Job) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await release.wait()
        running -= 1

    await client.send_many("q", list(range(12)))
    worker = await client.work("q", handler, concurrency=5)
    await wait_until(lambda: worker.running == 5)
    await asyncio.sleep(0.05)  # a chance to over-fetch, if it would
    assert peak == 5
    release.set()
    await wait_until(lambda: worker.completed == 12)
    assert peak == 5


async def test_fetches_are_batched(client: QueueClient) -> None:
    await client.create_queue("q")
    await client.send_many("q", list(range(400)))

    async def handler(job: Job) -> None:
        return None

    worker = await client.work("q", handler, concurrency=100)
    await wait_until(lambda: worker.completed == 400, within=20)
    # A per-job API over batched SQL: far fewer fetch round trips than jobs.
    assert worker.fetches < 100, worker.fetches


async def test_retries_back_off_and_the_last_failure_dead_letters(frozen: QueueClient) -> None:
    clock = clock_of(frozen)
    await frozen.create_queue("dlq")
    await frozen.create_queue("q", retry_limit=2, retry_delay=10, dead_letter="dlq")
    attempts: list[int] = []

    async def always_fails(job: Job) -> None:
        attempts.append(job.attempt)
        raise ConnectionError(f"attempt {job.attempt} failed")

    worker = await frozen.work("q", always_fails, poll_interval=30)
    job_id = await frozen.send("q", {"payload": "keep me"}, priority=3)

    # Attempt 1 fails: retry after 10 s, jittered by +-20%.
    job = await wait_for_job(frozen, job_id, lambda j: j.state is JobState.RETRYING)
    assert job.attempt == 1 and job.finished_at is None
    assert job.error["message"] == "attempt 1 failed"
    first_delay = (job.start_after - T0).total_seconds()
    assert 8.0 <= first_delay <= 12.0, first_delay
    # Not before its time: a fetch now finds nothing.
    clock.set(job.start_after - timedelta(milliseconds=1))
    await fetch_round(worker)
    assert attempts == [1]
    assert (await frozen.stats("q"))[0].retrying == 1

    # Attempt 2 at its start time fails: the delay doubles (20 s +-20%).
    clock.set(job.start_after)
    failed_at = job.start_after
    await fetch_round(worker)
    job = await wait_for_job(
        frozen, job_id, lambda j: j.attempt == 2 and j.state is JobState.RETRYING
    )
    second_delay = (job.start_after - failed_at).total_seconds()
    assert 16.0 <= second_delay <= 24.0, second_delay

    # Attempt 3 is the last (retry_limit=2): failed for good, copied to the dead-letter queue.
    clock.set(job.start_after)
    await fetch_round(worker)
    job = await wait_for_job(frozen, job_id, lambda j: j.state is JobState.FAILED)
    assert attempts == [1, 2, 3]
    assert job.attempt == 3 and job.finished_at == clock.now()
    assert job.error["message"] == "attempt 3 failed"
    dead = (await frozen.list_jobs(queue="dlq")).jobs
    assert len(dead) == 1
    assert dead[0].data == {"payload": "keep me"} and dead[0].priority == 3
    assert dead[0].state is JobState.QUEUED and dead[0].attempt == 0
    assert dead[0].id != job_id
    assert worker.failed == 3


async def test_retry_delay_cap_and_no_backoff(frozen: QueueClient) -> None:
    await frozen.create_queue("capped", retry_limit=5, retry_delay=10, retry_delay_max=15)
    await frozen.create_queue("flat", retry_limit=5, retry_delay=4, retry_backoff=False)
    url, schema = frozen.conninfo, frozen.schema
    with psycopg.connect(url) as conn:
        fn = sql.SQL("select {}.job_retry_delay_s(%s, %s, %s, %s)").format(sql.Identifier(schema))

        def delay(base: float, backoff: bool, cap: float | None, attempt: int) -> float:
            row = conn.execute(fn, (base, backoff, cap, attempt)).fetchone()
            assert row is not None
            return float(row[0])

        samples = [delay(10, True, None, 3) for _ in range(200)]
        assert all(32.0 <= d <= 48.0 for d in samples)  # 10 * 2^2, +-20%
        assert max(samples) - min(samples) > 1.0  # jittered, not constant
        assert all(delay(10, True, 15, n) <= 15 for n in range(1, 8))
        assert delay(10, True, 15, 3) == 15.0
        assert {delay(4, False, None, n) for n in range(1, 6)} == {4.0}
        assert delay(1, True, None, 10_000) > 0  # no overflow on huge attempt counts
        assert delay(0, True, None, 5) == 0.0


async def test_expired_lease_is_retried_counting_the_attempt_and_old_writes_are_fenced(
    frozen: QueueClient,
) -> None:
    clock = clock_of(frozen)
    await frozen.create_queue("dlq")
    await frozen.create_queue("q", retry_limit=1, expire_in=30, dead_letter="dlq")
    gate = Gate()
    worker = await frozen.work("q", gate, concurrency=2, poll_interval=30)
    job_id = await frozen.send("q", {"k": "v"})
    await wait_until(lambda: 1 in gate.started)
    job = await frozen.get_job(job_id)
    assert job.state is JobState.ACTIVE and job.lease_expires_at == T0 + timedelta(seconds=30)

    clock.advance(29)
    assert await frozen.expire_leases() == 0
    clock.advance(2)  # T0 + 31: the lease ran out (the handler hangs)
    assert await frozen.expire_leases() == 1
    job = await frozen.get_job(job_id)
    assert job.attempt == 1
    assert job.error["type"] == "patchbay.queue.LeaseExpired"

    # The retry is runnable at once and the worker is woken to take it: attempt 2.
    await wait_until(lambda: 2 in gate.started)
    job = await frozen.get_job(job_id)
    assert (job.state, job.attempt) == (JobState.ACTIVE, 2)

    # The hung first attempt finally returns: its result is rejected, not written.
    gate.let_go(1, {"from": "attempt 1"})
    await wait_until(lambda: worker.stale_writes == 1)
    job = await frozen.get_job(job_id)
    assert (job.state, job.attempt, job.output) == (JobState.ACTIVE, 2, None)
    assert await gate.started[1].heartbeat() is False  # the old attempt's lease is gone

    # Attempt 2 is the last: when its lease runs out too, the job fails and dead-letters.
    clock.advance(31)
    assert await frozen.expire_leases() == 1
    job = await frozen.get_job(job_id)
    assert (job.state, job.attempt) == (JobState.FAILED, 2)
    assert len((await frozen.list_jobs(queue="dlq")).jobs) == 1
    gate.let_go(2)
    await wait_until(lambda: worker.stale_writes == 2)
    assert (await frozen.get_job(job_id)).state is JobState.FAILED
    assert worker.completed == 0


async def test_late_writes_from_an_old_attempt_are_rejected_by_sql(frozen: QueueClient) -> None:
    """Every write statement is fenced by attempt: run them as a worker that lost its lease
    would, after the job moved on to a new attempt."""
    clock = clock_of(frozen)
    await frozen.create_queue("q", retry_limit=3, expire_in=10)
    job_id = await frozen.send("q", {})
    s = frozen.sql
    async with frozen.pool.connection() as conn:

        async def run(name: str, **params: Any) -> int:
            cur = await conn.execute(s[name], {"now": clock.now(), **params})
            return cur.rowcount

        fetch = {"queue": "q", "limit": 10}
        assert await run("job_fetch_available", **fetch) == 1  # attempt 1
        clock.advance(11)
        assert await frozen.expire_leases() == 1
        assert await run("job_fetch_available", **fetch) == 1  # attempt 2
        old = {"ids": [job_id], "attempts": [1]}
        assert await run("job_complete_many", outputs=['{"late": true}'], **old) == 0
        assert (
            await run(
                "job_fail_many", errors=['{"late": true}'], channel="x", finals=[False], **old
            )
            == 0
        )
        assert await run("job_heartbeat_many", **old) == 0
        assert await run("job_release_many", delays=[0.0], **old) == 0
        job = await frozen.get_job(job_id)
        assert (job.state, job.attempt, job.output) == (JobState.ACTIVE, 2, None)
        assert job.error is not None and job.error["type"] == "patchbay.queue.LeaseExpired"
        current = {"ids": [job_id], "attempts": [2]}
        assert await run("job_complete_many", outputs=['{"ok": 2}'], **current) == 1
        # Completed: even the current attempt cannot write twice.
        assert (
            await run("job_fail_many", errors=["{}"], channel="x", finals=[False], **current) == 0
        )
    job = await frozen.get_job(job_id)
    assert (job.state, job.output) == (JobState.COMPLETED, {"ok": 2})


async def test_heartbeat_extends_the_lease(frozen: QueueClient) -> None:
    clock = clock_of(frozen)
    await frozen.create_queue("q", expire_in=30)
    beat = asyncio.Event()
    finish = asyncio.Event()
    beats: list[bool] = []

    async def long_handler(job: Job) -> str:
        await beat.wait()
        beats.append(await job.heartbeat())
        await finish.wait()
        return "done"

    worker = await frozen.work("q", long_handler)
    job_id = await frozen.send("q", {})
    await wait_until(lambda: worker.running == 1)
    clock.advance(20)
    beat.set()
    await wait_until(lambda: bool(beats))
    assert beats == [True]
    job = await frozen.get_job(job_id)
    assert job.lease_expires_at == T0 + timedelta(seconds=50)
    clock.advance(25)  # T0 + 45: past the first lease, within the extended one
    assert await frozen.expire_leases() == 0
    assert (await frozen.get_job(job_id)).state is JobState.ACTIVE
    finish.set()
    job = await wait_for_job(frozen, job_id, lambda j: j.state is JobState.COMPLETED)
    assert (job.attempt, job.output, worker.stale_writes) == (1, "done", 0)


async def test_maintenance_expires_leases_in_the_background(database_url: str, schema: str) -> None:
    clock = FrozenClock(T0)
    async with QueueClient(
        database_url, schema=schema, clock=clock, maintenance_interval=0.05
    ) as client:
        await client.create_queue("q", retry_limit=0, expire_in=5)
        gate = Gate()
        await client.work("q", gate, poll_interval=30)
        job_id = await client.send("q", {})
        await wait_until(lambda: 1 in gate.started)
        clock.advance(6)
        job = await wait_for_job(client, job_id, lambda j: j.state is JobState.FAILED)
        assert job.error["type"] == "patchbay.queue.LeaseExpired"
        assert client.maintenance.expired == 1
        gate.let_go(1)


async def test_a_handler_hung_past_its_lease_is_cancelled_and_its_slot_freed(
    database_url: str, schema: str
) -> None:
    async with QueueClient(database_url, schema=schema, maintenance=False) as client:
        await client.create_queue("q", retry_limit=0, expire_in=0.3)

        async def handler(job: Job) -> str:
            if job.data == "hang":
                await asyncio.sleep(3600)
            return "ok"

        worker = await client.work("q", handler, concurrency=1, poll_interval=0.1)
        hung = await client.send("q", "hang")
        after = await client.send("q", "quick", expire_in=60)
        job = await wait_for_job(client, hung, lambda j: j.state is JobState.FAILED)
        assert "lease" in job.error["message"]
        # The one slot is free again: the next job runs.
        done = await wait_for_job(client, after, lambda j: j.state is JobState.COMPLETED)
        assert done.output == "ok"
        assert worker.failed == 1


async def test_cancelling_an_active_job_discards_its_result(frozen: QueueClient) -> None:
    await frozen.create_queue("q")
    gate = Gate()
    worker = await frozen.work("q", gate)
    job_id = await frozen.send("q", {})
    await wait_until(lambda: 1 in gate.started)
    await frozen.cancel(job_id)
    gate.let_go(1, {"too": "late"})
    await wait_until(lambda: worker.stale_writes == 1)
    job = await frozen.get_job(job_id)
    assert (job.state, job.output) == (JobState.CANCELLED, None)


@pytest.mark.smoke
async def test_graceful_stop_puts_unfinished_jobs_back_without_spending_attempts(
    client: QueueClient,
) -> None:
    await client.create_queue("q")
    started: set[str] = set()

    async def handler(job: Job) -> str:
        started.add(job.data["kind"] + str(job.data["i"]))
        await asyncio.sleep(0.01 if job.data["kind"] == "short" else 60)
        return "finished"

    long_ids = await client.send_many("q", [{"kind": "long", "i": i} for i in range(3)])
    short_id = await client.send("q", {"kind": "short", "i": 0})
    worker = await client.work("q", handler, concurrency=4)
    await wait_until(lambda: len(started) == 4)
    await worker.stop(grace=0.1)

    assert worker.released == 3 and worker.running == 0
    assert (await client.get_job(short_id)).state is JobState.COMPLETED
    for job_id in long_ids:
        job = await client.get_job(job_id)
        assert (job.state, job.attempt) == (JobState.QUEUED, 0)
        assert job.started_at is None and job.lease_expires_at is None
    stats = (await client.stats("q"))[0]
    assert (stats.active, stats.queued, stats.completed) == (0, 3, 1)

    # They run again later as first attempts.
    seen: list[int] = []

    async def quick(job: Job) -> None:
        seen.append(job.attempt)

    again = await client.work("q", quick, concurrency=4)
    await wait_until(lambda: again.completed == 3)
    assert seen == [1, 1, 1]


async def test_stop_while_a_fetch_is_returning_strands_nothing(
    client: QueueClient, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """stop() must not cut a fetch short: the jobs it claimed would stay active, leased,
    with nobody to run or release them. A slow connection return holds the fetch open."""
    await client.create_queue("q")

    async def handler(job: Job) -> None:
        await asyncio.sleep(60)

    worker = await client.work("q", handler, poll_interval=30)
    await wait_until(lambda: worker.fetches >= 1)
    await asyncio.sleep(0.05)  # idle, waiting for a notification
    returning = asyncio.Event()
    original = client.pool.putconn

    async def slow_putconn(conn: Any) -> None:
        returning.set()
        await asyncio.sleep(0.3)
        await original(conn)

    monkeypatch.setattr(client.pool, "putconn", slow_putconn)
    with SyncQueueClient(database_url, schema=client.schema) as queues:
        job_id = queues.send("q", {})  # its own connection: only the worker uses the pool
    await asyncio.wait_for(returning.wait(), 5)  # the fetch claimed the job, not yet started
    await worker.stop(grace=0.1)
    monkeypatch.undo()
    job = await client.get_job(job_id)
    assert (job.state, job.attempt) == (JobState.QUEUED, 0)
    assert (await client.stats("q"))[0].active == 0


async def test_client_close_stops_workers_and_leaves_nothing_active(
    database_url: str, schema: str
) -> None:
    async with QueueClient(database_url, schema=schema) as client:
        await client.create_queue("q")
        await client.send_many("q", list(range(5)))

        async def forever(job: Job) -> None:
            await asyncio.sleep(3600)

        worker = await client.work("q", forever, concurrency=5)
        await wait_until(lambda: worker.running == 5)
        await client.close(grace=0)
    async with QueueClient(database_url, schema=schema) as client:
        stats = (await client.stats("q"))[0]
        assert (stats.active, stats.queued) == (0, 5)


async def test_worker_settings_are_validated(client: QueueClient) -> None:
    await client.create_queue("q")

    async def handler(job: Job) -> None:
        return None

    with pytest.raises(InvalidOption, match="concurrency"):
        await client.work("q", handler, concurrency=0)
    with pytest.raises(InvalidOption, match="poll_interval"):
        await client.work("q", handler, poll_interval=0)
    with pytest.raises(InvalidOption, match="batch_size"):
        await client.work("q", handler, batch_size=0)
    with pytest.raises(InvalidOption, match="handler"):
        await client.work("q", "not callable")  # type: ignore[arg-type]
