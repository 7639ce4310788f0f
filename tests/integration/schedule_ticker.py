"""One scheduler process of test_schedules_concurrency: its own QueueClient, stepping its
own FrozenClock through the same instants as the others, ticking at each.

usage: python schedule_ticker.py URL SCHEMA START_ISO STEP_SECONDS STEPS
Prints "ready", waits for a line on stdin, runs, prints a JSON report.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import datetime, timedelta

from patchbay.queue import FrozenClock, QueueClient


async def main(url: str, schema: str, start: datetime, step: float, steps: int) -> None:
    clock = FrozenClock(start)
    async with QueueClient(url, schema=schema, clock=clock, maintenance=False, pool_max=2) as c:
        await c.schedules.tick()  # warm the pool and the statement cache
        print("ready", flush=True)
        sys.stdin.readline()
        for index in range(steps + 1):
            clock.set(start + timedelta(seconds=step * index))
            await c.schedules.tick()
        report = {
            "ticks": c.schedules.ticks,
            "enqueued": c.schedules.enqueued,
            "skipped": c.schedules.skipped,
            "claims_lost": c.schedules.claims_lost,
        }
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    url, schema, start_iso, step_s, steps_n = sys.argv[1:6]
    asyncio.run(main(url, schema, datetime.fromisoformat(start_iso), float(step_s), int(steps_n)))
