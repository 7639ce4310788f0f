"""Listener killed: ``pg_terminate_backend`` on a worker process's LISTEN connection, again
and again. Each time it reconnects; a job sent while it is down waits at most one polling
interval, and one sent after it is back is woken by its notification again (well under
the polling interval).

Short: 20 kills. Long: 100 kills.
"""

from __future__ import annotations

import json
import statistics
import time

import pytest
from reliability_support import WorkerProcess, create_queue, pick, query, rounded, wait_for

from patchbay.queue import SyncQueueClient

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(pick(240, 900))]

KILLS = pick(20, 100)
POLL = 2.0  # the worker's polling interval
SLACK = 0.5  # scheduling delay allowed on a loaded machine
NOTIFIED_BAR = 0.5  # median wake-up latency once LISTEN is back


def _listener_pid(url: str, schema: str) -> int | None:
    rows = query(
        url,
        schema,
        "select pid from pg_stat_activity"
        " where query = 'listen ' || quote_ident('patchbay:' || %s)",
        (schema,),
    )
    return int(rows[0][0]) if len(rows) == 1 else None


def _started_at(worker: WorkerProcess, job_id: str) -> float | None:
    path = worker.runs_dir / f"runs-{worker.pid}.jsonl"
    if not path.exists():
        return None
    for line in path.read_text().splitlines():
        if job_id in line:
            event = json.loads(line)
            if event["ev"] == "start" and event["job"] == job_id:
                return float(event["t"])
    return None


def test_listener_killed_reconnects_and_no_job_waits_past_polling(
    database_url, schema, workdir, report
):
    url = database_url
    create_queue(url, schema, "wake")
    worker = WorkerProcess(
        workdir, url=url, schema=schema, queue="wake", concurrency=5, poll_interval=POLL
    )
    while_down: list[float] = []
    after_back: list[float] = []
    reconnect: list[float] = []
    try:
        wait_for(lambda: _listener_pid(url, schema) is not None, 60, "the listener is up")
        with SyncQueueClient(url, schema=schema) as client:

            def wait_started(job_id: str) -> float:
                holder: list[float] = []

                def started() -> bool:
                    at = _started_at(worker, job_id)
                    if at is not None:
                        holder.append(at)
                    return at is not None

                wait_for(started, POLL * 3, f"job {job_id} started", step=0.005)
                return holder[0]

            for _ in range(KILLS):
                old = _listener_pid(url, schema)
                assert old is not None
                query(url, schema, "select pg_terminate_backend(%s)", (old,))
                killed = time.time()
                job = str(client.send("wake", {"n": 1}))
                sent = time.time()
                while_down.append(wait_started(job) - sent)
                wait_for(
                    lambda old=old: _listener_pid(url, schema) not in (None, old),
                    30,
                    "the listener reconnected",
                    step=0.005,
                )
                reconnect.append(time.time() - killed)
                job = str(client.send("wake", {"n": 2}))
                sent = time.time()
                after_back.append(wait_started(job) - sent)
        time.sleep(0.3)
        status = worker.status()
        alive = worker.alive
    finally:
        exit_code = worker.stop()

    report(
        kills=KILLS,
        poll_interval_s=POLL,
        reconnects=status.get("listener_reconnects"),
        reconnect_p50_s=rounded(statistics.median(reconnect)),
        reconnect_max_s=rounded(max(reconnect)),
        wait_while_down_p50_s=rounded(statistics.median(while_down)),
        wait_while_down_max_s=rounded(max(while_down)),
        wait_after_back_p50_s=rounded(statistics.median(after_back)),
        wait_after_back_max_s=rounded(max(after_back)),
        worker_alive=alive,
    )
    assert status.get("listener_reconnects") == KILLS
    assert max(while_down + after_back) <= POLL + SLACK
    assert statistics.median(after_back) <= NOTIFIED_BAR
    assert alive and exit_code == 0
