"""The queue demo (`patchbay run --demo queue`): a worker on an example queue, saying what
it does."""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import time

from patchbay.queue import Job, QueueClient, migrate

__all__ = ["run_queue_demo"]

DEMO_QUEUE = "example.greetings"


async def run_queue_demo(
    url: str, schema: str, *, duration: float | None, rate: float = 2.0
) -> int:
    """Migrate, then send example jobs at ``rate`` per second and work them, printing each
    step, until SIGINT/SIGTERM or ``duration`` seconds."""
    applied = await migrate(url, schema)
    print(f"migrated schema {schema!r} ({len(applied)} new step(s))", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async def greet(job: Job) -> dict[str, str]:
        name = job.data["name"]
        await asyncio.sleep(random.uniform(0.01, 0.2))
        if job.data.get("flaky") and job.attempt == 1:
            print(f"  job {job.id} ({name}): attempt {job.attempt} fails on purpose", flush=True)
            raise RuntimeError("a flaky first attempt, to show retries")
        print(f"  job {job.id} ({name}): done on attempt {job.attempt}", flush=True)
        return {"greeting": f"hello, {name}"}

    async with QueueClient(url, schema=schema, maintenance_interval=2.0) as client:
        await client.create_queue(DEMO_QUEUE, retry_limit=2, retry_delay=0.5) if not any(
            q.name == DEMO_QUEUE for q in await client.list_queues()
        ) else None
        worker = await client.work(DEMO_QUEUE, greet, concurrency=4)
        print(f"working queue {DEMO_QUEUE!r} with 4 concurrent handlers (Ctrl-C stops)", flush=True)
        started = time.monotonic()
        names = ["ada", "grace", "edsger", "barbara", "ken", "margaret", "linus", "frances"]
        sent = 0
        while not stop.is_set():
            if duration is not None and time.monotonic() - started >= duration:
                break
            name = names[sent % len(names)]
            job_id = await client.send(DEMO_QUEUE, {"name": name, "flaky": sent % 5 == 4})
            sent += 1
            print(f"sent job {job_id} ({name})", flush=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0 / rate)
        print("stopping: finishing running jobs", flush=True)
        await worker.stop(grace=5.0)
        stats = (await client.stats(DEMO_QUEUE))[0]
        print(
            f"done: sent {sent}; queue now completed={stats.completed} queued={stats.queued} "
            f"retrying={stats.retrying} failed={stats.failed}",
            flush=True,
        )
    return 0
