from __future__ import annotations

import asyncio

from patchbay.queue import Job, JobState, QueueClient


async def test_worker_completes_jobs_and_stores_output(client: QueueClient) -> None:
    await client.create_queue("q")
    ids = await client.send_many("q", [{"n": i} for i in range(50)])
    seen: list[int] = []

    async def handler(job: Job) -> dict[str, int]:
        seen.append(job.data["n"])
        return {"double": job.data["n"] * 2}

    worker = await client.work("q", handler, concurrency=8)
    for _ in range(200):
        if worker.completed == 50:
            break
        await asyncio.sleep(0.02)
    assert sorted(seen) == list(range(50))
    job = await client.get_job(ids[7])
    assert job.state is JobState.COMPLETED
    assert job.output == {"double": 14}
    assert job.attempt == 1
