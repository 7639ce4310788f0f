"""Postgres restart under load: ``pg_ctl restart -m fast`` and ``-m immediate`` (a crash
and recovery) of a cluster the test owns, while a producer sends jobs at a steady rate
and two worker processes run them. 0 jobs lost, 0 run to completion twice, no worker
process exits, and the completion rate is back to >= 90% of its rate before the restarts
within 10 s of Postgres accepting connections again.

Short: one restart of each kind. Long: five of each (about 10,000 jobs).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter

import psycopg
import pytest
from reliability_support import (
    PgCluster,
    Runs,
    WorkerProcess,
    create_queue,
    job_counts,
    pick,
    query,
    rounded,
    wait_for,
)

from patchbay.queue import JobSpec, QueueClient

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(pick(300, 1200))]

RATE = 100  # jobs sent per second
RESTARTS = pick(["fast", "immediate"], ["fast", "immediate"] * 5)
WARMUP = 5.0  # seconds of steady flow before the first restart (the baseline)
SPACING = 9.0  # seconds between restarts
RECOVERY_BAR = 10.0
WORKERS = 2


async def _produce(
    client: QueueClient, stop: asyncio.Event, sent: list[str], errors: Counter[str]
) -> None:
    """Send RATE jobs/s in batches of 10, each batch with its own ids, retried until it
    commits (a repeated id adds nothing, so a retry after a lost reply is harmless)."""
    loop = asyncio.get_running_loop()
    tick = 10 / RATE
    next_at = loop.time()
    while not stop.is_set():
        batch = [JobSpec({"sleep": 0.005}, id=uuid.uuid4()) for _ in range(10)]
        while True:
            try:
                await client.send_many("flow", batch)
                break
            except psycopg.Error as exc:
                errors[type(exc).__name__] += 1
                await asyncio.sleep(0.05)
        sent.extend(str(spec.id) for spec in batch)
        next_at += tick
        await asyncio.sleep(max(0.0, next_at - loop.time()))


def _recovery(done: list[float], ready: float, baseline: float, horizon: float) -> float | None:
    """Seconds after ``ready`` until a 1 s window holds >= 90% of ``baseline`` completions."""
    step = 0.1
    t = ready
    while t < ready + horizon:
        if sum(1 for d in done if t <= d < t + 1.0) >= 0.9 * baseline:
            return t - ready
        t += step
    return None


async def test_postgres_restart_under_load(cluster: PgCluster, cluster_schema, workdir, report):
    url, schema = cluster.url, cluster_schema
    # events=True: the job-events log must not double a completion either.
    create_queue(url, schema, "flow", expire_in=10, retry_limit=10, retry_delay=0, events=True)
    options = {
        "url": url,
        "schema": schema,
        "queue": "flow",
        "concurrency": 10,
        "poll_interval": 0.5,
        "maintenance_interval": 0.5,
    }
    workers = [WorkerProcess(workdir, **options) for _ in range(WORKERS)]
    sent: list[str] = []
    errors: Counter[str] = Counter()
    restarts: list[tuple[str, float, float]] = []  # (mode, asked at, accepting again at)
    stop = asyncio.Event()
    alive_after_each: list[int] = []
    try:
        await asyncio.to_thread(
            wait_for, lambda: all(w.status() for w in workers), 60, "workers started"
        )
        async with QueueClient(url, schema=schema, maintenance=False) as client:
            producer = asyncio.create_task(_produce(client, stop, sent, errors))
            await asyncio.sleep(WARMUP)
            for mode in RESTARTS:
                asked = time.time()
                ready = await asyncio.to_thread(cluster.restart, mode)
                restarts.append((mode, asked, ready))
                await asyncio.sleep(SPACING)
                alive_after_each.append(sum(w.alive for w in workers))
            stop.set()
            await producer
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if job_counts(url, schema, "flow").get("completed", 0) >= len(sent):
                    break
                await asyncio.sleep(0.2)
        alive = sum(w.alive for w in workers)
    finally:
        stop.set()
        exit_codes = [w.stop() for w in workers]

    rows = query(
        url,
        schema,
        "select id, state::text, attempt, extract(epoch from finished_at)::float8"
        " from {s}.job where queue = 'flow'",
    )
    states = Counter(r[1] for r in rows)
    in_db = {str(r[0]) for r in rows}
    done = sorted(r[3] for r in rows if r[3] is not None)
    first_restart = restarts[0][1]
    # The rate before any restart (the last 3 s of the warm-up).
    window = [d for d in done if first_restart - 3.0 <= d < first_restart]
    baseline = len(window) / 3.0
    recovery = {
        f"{mode}#{n}": rounded(_recovery(done, ready, baseline, SPACING), 2)
        for n, (mode, _, ready) in enumerate(restarts)
    }
    # The slowest 1 s window around each restart (how deep the dip was).
    dips = {
        f"{mode}#{n}": sum(1 for d in done if t <= d < t + 1.0)
        for n, (mode, asked, ready) in enumerate(restarts)
        for t in [
            min(
                (asked - 1.0 + i * 0.1 for i in range(int((ready - asked + 3.0) / 0.1))),
                key=lambda t: sum(1 for d in done if t <= d < t + 1.0),
            )
        ]
    }
    completed_events = Counter(
        str(r[0])
        for r in query(url, schema, "select job_id from {s}.job_event where kind = 'completed'")
    )
    doubled_events = sum(1 for n in completed_events.values() if n > 1)
    runs = Runs.read(workdir)
    finished_runs = Counter(r.job for r in runs.all() if r.end is not None)
    twice = [job for job, n in finished_runs.items() if n > 1]
    log_lines = sum(len(w.log_lines()) for w in workers)
    report(
        sent=len(sent),
        completed=states.get("completed", 0),
        lost=len(set(sent) - {str(r[0]) for r in rows if r[1] == "completed"}),
        missing_from_db=len(set(sent) - in_db),
        completed_twice=len(twice),
        attempts=dict(Counter(r[2] for r in rows)),
        restarts=[(mode, round(ready - asked, 2)) for mode, asked, ready in restarts],
        baseline_jobs_per_s=round(baseline, 1),
        recovery_s=recovery,
        lowest_1s_window_jobs=dips,
        completed_events_doubled=doubled_events,
        completed_events_missing=states.get("completed", 0) - len(completed_events),
        send_errors=dict(errors),
        workers_alive=alive,
        worker_log_lines=log_lines,
    )
    assert states == {"completed": len(sent)}
    assert set(sent) == in_db
    assert twice == []
    assert doubled_events == 0
    assert baseline >= 0.8 * RATE
    assert all(v is not None and v <= RECOVERY_BAR for v in recovery.values()), recovery
    assert alive_after_each == [WORKERS] * len(RESTARTS) and alive == WORKERS
    assert exit_codes == [0] * WORKERS
