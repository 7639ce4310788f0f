"""Graceful shutdown: SIGTERM to a worker process running 100 jobs. Half of them finish
within the shutdown grace and complete; the other half are cancelled when it ends and go
back to the queue without a spent attempt. 0 jobs are left active, the process exits 0
within the grace (plus its own teardown), and a new worker then runs the interrupted jobs
as their first attempt. And SIGTERM while Postgres is down still ends the process.
"""

from __future__ import annotations

import signal
import time
from collections import Counter

import pytest
from reliability_support import WorkerProcess, create_queue, job_counts, pick, query, wait_for

from patchbay.queue import SyncQueueClient
from patchbay.queue._worker import _FINAL_WRITE_TIMEOUT

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(pick(180, 600))]

JOBS = 100
GRACE = 2.0
EXIT_BAR = GRACE + 5.0  # teardown after the grace: release writes, pool close, interpreter


def test_sigterm_with_100_running_jobs(database_url, schema, workdir, report):
    url = database_url
    create_queue(url, schema, "term", expire_in=600, retry_limit=3)
    with SyncQueueClient(url, schema=schema) as client:
        # Short ones end within the grace; long ones would run for ten minutes.
        client.send_many("term", [{"sleep": 1.0 if n % 2 else 600.0} for n in range(JOBS)])
    options = {"url": url, "schema": schema, "queue": "term", "poll_interval": 0.5}
    worker = WorkerProcess(workdir, concurrency=JOBS, shutdown_grace=GRACE, **options)
    try:
        wait_for(lambda: worker.status().get("running", 0) == JOBS, 60, "100 jobs running")
        # The short jobs must still be running when SIGTERM arrives: they started < 1 s ago.
        worker.signal(signal.SIGTERM)
        term_at = time.monotonic()
        exit_code = worker.proc.wait(timeout=60)
        exited_after = time.monotonic() - term_at
        status = worker.status()
    finally:
        worker.stop()
    rows = query(
        url,
        schema,
        "select state::text, attempt, (data->>'sleep')::float8 from {s}.job where queue = 'term'",
    )
    after_term = Counter((r[0], r[1], r[2] < 10) for r in rows)

    # A new worker (whose handlers cut every sleep to 0.05 s) runs the interrupted jobs.
    rerun = WorkerProcess(workdir, concurrency=JOBS, max_sleep=0.05, **options)
    try:
        wait_for(
            lambda: job_counts(url, schema, "term").get("completed", 0) == JOBS,
            60,
            "the released jobs run again",
        )
    finally:
        rerun_exit = rerun.stop()
    final_attempts = Counter(
        r[0] for r in query(url, schema, "select attempt from {s}.job where queue = 'term'")
    )
    report(
        running_at_sigterm=JOBS,
        grace_s=GRACE,
        exited_after_s=round(exited_after, 2),
        exit_code=exit_code,
        after_sigterm={
            f"{s}/attempt {a}/{'short' if sh else 'long'}": n
            for (s, a, sh), n in after_term.items()
        },
        left_active=sum(n for (s, _, _), n in after_term.items() if s == "active"),
        completed_by_it=status.get("completed"),
        released_by_it=status.get("released"),
        attempts_after_rerun=dict(final_attempts),
    )
    assert exit_code == 0
    assert exited_after <= EXIT_BAR
    assert after_term == {("completed", 1, True): JOBS // 2, ("queued", 0, False): JOBS // 2}
    assert final_attempts == {1: JOBS}
    assert rerun_exit == 0


def test_sigterm_while_postgres_is_down(cluster, cluster_schema, workdir, report):
    """SIGTERM during an outage: the results cannot be written, yet the process still
    exits soon after its grace; its jobs stay active until their leases expire, and then
    run again (at-least-once), so nothing is lost."""
    url, schema = cluster.url, cluster_schema
    create_queue(url, schema, "term", expire_in=3, retry_limit=3, retry_delay=0)
    with SyncQueueClient(url, schema=schema) as client:
        client.send_many("term", [{"sleep": 0.5 if n % 2 else 600.0} for n in range(10)])
    options = {"url": url, "schema": schema, "queue": "term", "poll_interval": 0.5}
    worker = WorkerProcess(workdir, concurrency=10, shutdown_grace=GRACE, **options)
    try:
        wait_for(lambda: worker.status().get("running", 0) == 10, 60, "10 jobs running")
        cluster.stop("fast")
        worker.signal(signal.SIGTERM)
        term_at = time.monotonic()
        try:
            exit_code: int | None = worker.proc.wait(timeout=60)
        except Exception:
            exit_code = None
        exited_after = time.monotonic() - term_at
    finally:
        worker.stop(timeout=5)
    cluster.start()
    rerun = WorkerProcess(workdir, concurrency=10, max_sleep=0.05, **options)
    try:
        wait_for(
            lambda: job_counts(url, schema, "term").get("completed", 0) == 10,
            60,
            "every job completed after the restart",
        )
    finally:
        rerun.stop()
    attempts = Counter(
        r[0] for r in query(url, schema, "select attempt from {s}.job where queue = 'term'")
    )
    report(
        exited_after_s=round(exited_after, 2),
        exit_code=exit_code,
        attempts_after_rerun=dict(attempts),
    )
    assert exit_code == 0
    assert exited_after <= EXIT_BAR + _FINAL_WRITE_TIMEOUT
    # Nothing could be written: every job ran again, its first attempt spent.
    assert attempts == {2: 10}
