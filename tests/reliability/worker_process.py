"""A worker process for the reliability tests: one QueueClient, one worker, real signals.

Run as ``python worker_process.py '<json options>'``; ``queue`` is a queue name or a
list of them (one worker each). The handler reads what to do from the
job's data: ``{"sleep": s}`` awaits ``s`` seconds, ``{"block": s}`` blocks the event loop
for ``s`` seconds (a CPU-bound handler, or a process paused mid-call). ``--max-sleep``
caps both, so a later worker can finish jobs an earlier one was given as long ones.

Every handler call appends two JSON lines to ``<runs_dir>/runs-<pid>.jsonl`` with
``os.write`` on an O_APPEND file (each line one write, so a ``kill -9`` loses no line
already written and never leaves half of one): ``start`` when the call begins and ``end``
when the handler returns. The handler's output is ``{"pid": ..., "attempt": ...}``, so the
row says which call's result the database accepted.

The worker's counters go to ``<status_file>`` (rewritten atomically every 0.1 s). SIGTERM
stops it gracefully: ``client.close(grace=...)``, then exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from typing import Any

from patchbay.queue import Job, QueueClient


def main(options: dict[str, Any]) -> None:
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s",
    )
    asyncio.run(run(options))


async def run(options: dict[str, Any]) -> None:
    pid = os.getpid()
    runs = os.open(
        os.path.join(options["runs_dir"], f"runs-{pid}.jsonl"),
        os.O_WRONLY | os.O_APPEND | os.O_CREAT,
        0o644,
    )
    max_sleep = float(options.get("max_sleep", 1e9))

    def record(event: str, job: Job) -> None:
        line = {"ev": event, "job": str(job.id), "attempt": job.attempt, "pid": pid}
        line["t"] = time.time()
        os.write(runs, (json.dumps(line) + "\n").encode())

    async def handler(job: Job) -> dict[str, Any]:
        record("start", job)
        data = job.data if isinstance(job.data, dict) else {}
        if "sleep" in data:
            await asyncio.sleep(min(float(data["sleep"]), max_sleep))
        if "block" in data:
            time.sleep(min(float(data["block"]), max_sleep))  # noqa: ASYNC251 (on purpose)
        record("end", job)
        return {"pid": pid, "attempt": job.attempt}

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    client = QueueClient(
        options["url"],
        schema=options["schema"],
        maintenance=options.get("maintenance", True),
        maintenance_interval=options.get("maintenance_interval", 0.5),
        application_name=options.get("application_name", f"reliability-{pid}"),
        pool_max=options.get("pool_max", 8),
    )
    # Opening retries until the database answers: a replacement worker may start while
    # Postgres is restarting.
    while True:
        try:
            await client.open()
            queues = options["queue"]
            workers = [
                await client.work(
                    queue,
                    handler,
                    concurrency=options.get("concurrency", 10),
                    poll_interval=options.get("poll_interval", 0.5),
                    shutdown_grace=options.get("shutdown_grace", 30.0),
                )
                for queue in ([queues] if isinstance(queues, str) else queues)
            ]
            break
        except Exception as exc:
            print(f"worker start failed: {exc!r}", file=sys.stderr, flush=True)
            await asyncio.sleep(0.5)
    status_file = options["status_file"]

    def write_status(final: bool = False) -> None:
        status: dict[str, Any] = {"pid": pid, "final": final}
        for counter in ("completed", "failed", "released", "stale_writes", "running", "fetches"):
            status[counter] = sum(getattr(w, counter) for w in workers)
        status |= {
            "listener_reconnects": client.listener.reconnects,
            "listener_pid": client.listener.backend_pid,
            "listener_connected": client.listener.connected.is_set(),
            "maintenance_passes": client.maintenance.passes,
            "expired": client.maintenance.expired,
        }
        tmp = f"{status_file}.tmp"
        with open(tmp, "w") as f:
            json.dump(status, f)
        os.replace(tmp, status_file)

    while not stop.is_set():
        write_status()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=0.1)
    await client.close(grace=options.get("shutdown_grace", 30.0))
    write_status(final=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
