"""Handler progress: ``await job.progress(value)`` is stored on the job (throttled, fenced
by attempt) and visible on ``get_job`` while the handler runs and after it returns."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

from conftest import Eventually

from patchbay.queue import InvalidPayload, Job, JobState, PayloadTooLarge, QueueClient
from patchbay.queue._progress import ProgressWriter


async def _heartbeat(job: Job) -> bool:
    return True


async def test_progress_is_visible_while_running_and_after(
    client: QueueClient, eventually: Eventually
) -> None:
    await client.create_queue("q")
    job_id = await client.send("q", None)
    reported, release = asyncio.Event(), asyncio.Event()

    async def handler(job: Job) -> None:
        await job.progress({"done": 3, "of": 10})
        reported.set()
        await release.wait()

    worker = await client.work("q", handler)
    await asyncio.wait_for(reported.wait(), 10)
    running = await client.get_job(job_id)
    assert running.state is JobState.ACTIVE
    assert running.progress == {"done": 3, "of": 10}
    release.set()
    await eventually(lambda: worker.completed == 1)
    await worker.stop()
    assert (await client.get_job(job_id)).progress == {"done": 3, "of": 10}


async def test_a_tight_loop_is_throttled_and_the_last_value_lands(
    client: QueueClient, eventually: Eventually
) -> None:
    await client.create_queue("q")
    job_id = await client.send("q", None)

    async def handler(job: Job) -> None:
        for n in range(1, 1001):
            await job.progress(n / 1000)

    worker = await client.work("q", handler)
    await eventually(lambda: worker.completed == 1)
    writer = worker._progress
    # The first report is written at once; the rest wait for the interval's end, where
    # only the newest is written.
    await eventually(lambda: writer.writes == 2)
    assert all(entry.pending is None for entry in writer._entries.values())
    assert (await client.get_job(job_id)).progress == 1.0
    await worker.stop()


async def test_stop_writes_what_is_pending(client: QueueClient, eventually: Eventually) -> None:
    await client.create_queue("q")
    job_id = await client.send("q", None)

    async def handler(job: Job) -> None:
        await job.progress("first")
        await job.progress("last")

    worker = await client.work("q", handler)
    worker._progress.interval = 3600.0  # the trailing write would come much later
    await eventually(lambda: worker.completed == 1)
    await worker.stop()
    assert (await client.get_job(job_id)).progress == "last"


async def test_a_value_that_cannot_be_stored_raises_in_the_handler(
    client: QueueClient, eventually: Eventually
) -> None:
    await client.create_queue("q")
    job_id = await client.send("q", None)
    raised: list[type[Exception]] = []

    async def handler(job: Job) -> str:
        for bad in (float("nan"), {"x": object()}, "x" * (70 * 1024)):
            try:
                await job.progress(bad)
            except (InvalidPayload, PayloadTooLarge) as exc:
                raised.append(type(exc))
        return "ok"

    worker = await client.work("q", handler)
    await eventually(lambda: worker.completed == 1)
    await worker.stop()
    assert raised == [InvalidPayload, InvalidPayload, PayloadTooLarge]
    job = await client.get_job(job_id)
    assert (job.state, job.progress) == (JobState.COMPLETED, None)


async def test_progress_of_an_old_attempt_never_lands_on_a_newer_one(
    client: QueueClient, eventually: Eventually
) -> None:
    await client.create_queue("q", retry_limit=1)
    job_id = await client.send("q", None)

    async def handler(job: Job) -> None:
        await job.progress(f"attempt {job.attempt}")
        if job.attempt == 1:
            raise RuntimeError("again")

    worker = await client.work("q", handler)
    await eventually(lambda: worker.completed == 1)
    await worker.stop()
    assert (await client.get_job(job_id)).progress == "attempt 2"

    stale = Job(job_id, "q", None, 1, 0, 1, 900.0, datetime.now(UTC), _heartbeat)
    writer = ProgressWriter(client)
    await writer.report(stale, "late write of attempt 1")
    await writer.close()
    assert (await client.get_job(job_id)).progress == "attempt 2"


async def test_a_job_without_a_worker_ignores_progress() -> None:
    job = Job(uuid.uuid4(), "q", None, 1, 0, 0, 900.0, datetime.now(UTC), _heartbeat)
    await job.progress(0.5)  # no writer: nothing to do, no error
