"""The queue on its own: create a queue, send jobs, work them, read the stats.

Run: PATCHBAY_DATABASE_URL=postgresql://... python examples/queue_basics.py
(without the variable, the embedded Postgres of ./.patchbay is used)
"""

from __future__ import annotations

import asyncio
import os

from patchbay.queue import Job, QueueClient, migrate
from patchbay.runtime.database import resolve_database_url


async def main() -> None:
    url = resolve_database_url()
    schema = os.environ.get("PATCHBAY_SCHEMA", "patchbay")
    await migrate(url, schema)
    async with QueueClient(url, schema=schema) as client:
        await client.create_queue("examples.resize", retry_limit=1)
        finished = asyncio.Event()
        count = 0

        async def resize(job: Job) -> dict[str, int]:
            nonlocal count
            count += 1
            if count == 20:
                finished.set()
            return {"width": job.data["width"] // 2}

        await client.work("examples.resize", resize, concurrency=5)
        await client.send_many("examples.resize", [{"width": w} for w in range(100, 120)])
        await asyncio.wait_for(finished.wait(), timeout=30)
        await client.close(grace=5)
    async with QueueClient(url, schema=schema) as client:
        stats = (await client.stats("examples.resize"))[0]
        print(f"resized {count} images; completed jobs in the queue: {stats.completed}")


if __name__ == "__main__":
    asyncio.run(main())
