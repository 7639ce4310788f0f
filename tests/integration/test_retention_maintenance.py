"""Retention: maintenance deletes finished jobs (completed, failed, cancelled) once their
queue's retention has passed since they finished, with their events, in bounded batches.
Time is a FrozenClock: nothing here sleeps."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from conftest import Eventually

import patchbay.queue._maintenance as maintenance_module
from patchbay.queue import FrozenClock, Job, JobNotFound, JobState, QueueClient


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(datetime(2031, 3, 1, 12, 0, tzinfo=UTC))


@pytest.fixture
async def fclient(database_url: str, schema: str, clock: FrozenClock) -> AsyncIterator[QueueClient]:
    """A client on the frozen clock whose maintenance runs only when a test says so."""
    async with QueueClient(database_url, schema=schema, clock=clock, maintenance=False) as c:
        yield c


def _event_count(database_url: str, schema: str, job_id: object) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            f'select count(*) from "{schema}".job_event where job_id = %s', (job_id,)
        ).fetchone()
    assert row is not None
    return int(row[0])


async def _exists(client: QueueClient, job_id: object) -> bool:
    try:
        await client.get_job(str(job_id))
    except JobNotFound:
        return False
    return True


@pytest.mark.smoke
async def test_cancelled_job_is_deleted_once_retention_has_passed(
    fclient: QueueClient, clock: FrozenClock
) -> None:
    await fclient.create_queue("q", retention=3600)
    job_id = await fclient.send("q", {"n": 1})
    await fclient.cancel(job_id)

    clock.advance(3599)
    assert await fclient.maintenance.run_once()
    assert await _exists(fclient, job_id)

    clock.advance(2)
    assert await fclient.maintenance.run_once()
    assert not await _exists(fclient, job_id)
    assert fclient.maintenance.deleted == 1


async def test_completed_failed_and_cancelled_jobs_go_with_their_events_others_stay(
    fclient: QueueClient,
    clock: FrozenClock,
    eventually: Eventually,
    database_url: str,
    schema: str,
) -> None:
    await fclient.create_queue("q", retention=3600, retry_limit=0)
    await fclient.create_queue("longer", retention=7200)
    ok, bad = await fclient.send_many("q", [{"fail": False}, {"fail": True}])
    cancelled = await fclient.send("q", None)
    await fclient.cancel(cancelled)
    deferred = await fclient.send("q", {"fail": False}, start_after=timedelta(days=30))
    other = await fclient.send("longer", None)
    await fclient.cancel(other)

    async def handler(job: Job) -> str:
        if job.data["fail"]:
            raise RuntimeError("no")
        return "done"

    worker = await fclient.work("q", handler)
    await eventually(lambda: worker.completed == 1 and worker.failed == 1)
    await worker.stop()
    assert (await fclient.get_job(bad)).state is JobState.FAILED
    assert _event_count(database_url, schema, bad) == 1  # failures are always recorded

    clock.advance(3601)
    await fclient.maintenance.run_once()
    for gone in (ok, bad, cancelled):
        assert not await _exists(fclient, gone)
    assert _event_count(database_url, schema, bad) == 0
    assert (await fclient.get_job(deferred)).state is JobState.QUEUED
    assert (await fclient.get_job(other)).state is JobState.CANCELLED

    clock.advance(3600)
    await fclient.maintenance.run_once()
    assert not await _exists(fclient, other)
    assert await _exists(fclient, deferred)
    assert fclient.maintenance.deleted == 4


async def test_zero_retention_deletes_at_the_next_pass(
    fclient: QueueClient, clock: FrozenClock
) -> None:
    await fclient.create_queue("q", retention=0)
    job_id = await fclient.send("q", None)
    await fclient.cancel(job_id)
    clock.advance(0.001)
    await fclient.maintenance.run_once()
    assert not await _exists(fclient, job_id)


async def test_a_failed_job_retried_before_retention_is_kept(
    fclient: QueueClient, clock: FrozenClock
) -> None:
    await fclient.create_queue("q", retention=60)
    job_id = await fclient.send("q", None)
    await fclient.cancel(job_id)
    await fclient.resume(job_id)
    clock.advance(3600)
    await fclient.maintenance.run_once()
    assert (await fclient.get_job(job_id)).state is JobState.QUEUED


async def test_a_large_backlog_is_deleted_in_bounded_batches_over_passes(
    fclient: QueueClient, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        maintenance_module,
        "_RETENTION_STEPS",
        (
            ("job_expire_queued", 2, "queued_expired", "expired %d"),
            ("job_delete_retained", 2, "deleted", "deleted %d"),
        ),
    )
    monkeypatch.setattr(maintenance_module, "_RETENTION_BATCHES", 2)
    await fclient.create_queue("q", retention=10)
    ids = await fclient.send_many("q", list(range(7)))
    for job_id in ids:
        await fclient.cancel(job_id)
    clock.advance(11)

    await fclient.maintenance.run_once()
    assert fclient.maintenance.deleted == 4  # two batches of two
    await fclient.maintenance.run_once()
    assert fclient.maintenance.deleted == 7
    assert [await _exists(fclient, i) for i in ids] == [False] * 7


async def test_retention_is_per_queue_and_changes_apply_to_jobs_already_finished(
    fclient: QueueClient, clock: FrozenClock
) -> None:
    await fclient.create_queue("q", retention=3600)
    job_id = await fclient.send("q", None)
    await fclient.cancel(job_id)
    clock.advance(120)
    await fclient.maintenance.run_once()
    assert await _exists(fclient, job_id)
    # Retention is read from the queue at each pass, not copied onto the job.
    await fclient.update_queue("q", retention=60)
    await fclient.maintenance.run_once()
    assert not await _exists(fclient, job_id)


async def test_only_one_client_runs_a_pass_at_a_time(
    database_url: str, schema: str, clock: FrozenClock
) -> None:
    async with (
        QueueClient(database_url, schema=schema, clock=clock, maintenance=False) as a,
        QueueClient(database_url, schema=schema, clock=clock, maintenance=False) as b,
    ):
        await a.create_queue("q", retention=0)
        job_id = await a.send("q", None)
        await a.cancel(job_id)
        clock.advance(1)
        async with a.pool.connection() as conn, conn.transaction():
            # Hold the pass lock as a pass in progress would.
            await conn.execute(
                "select pg_advisory_xact_lock(%s)",
                (maintenance_module._lock_key(schema),),
            )
            assert not await b.maintenance.run_once()
        assert await b.maintenance.run_once()
        assert b.maintenance.deleted == 1
