"""Long outage: Postgres (a cluster the test owns) is down for N seconds while two worker
processes have jobs in flight. The workers stay up, log a bounded number of lines (the
same bar whatever N is), and resume by themselves: the jobs in flight complete once, and
jobs sent after Postgres is back run within seconds.

Short: 5 s down. Long: 60 s down.
"""

from __future__ import annotations

import time
from collections import Counter

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

from patchbay.queue import SyncQueueClient
from patchbay.queue._pool import RECONNECT_DELAY_MAX

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(pick(240, 600))]

OUTAGE = pick(5.0, 60.0)
WORKERS = 2
IN_FLIGHT = 10  # jobs running when Postgres goes down
AFTER = 20  # jobs sent once it is back
POOL_MAX = 4
# Log records per worker process: patchbay's own are bounded whatever the outage length
# (each loop logs the 1st, 10th and every 100th failure in a row); psycopg_pool logs each
# reconnection attempt, at most one per RECONNECT_DELAY_MAX seconds per connection.
OWN_LOG_BAR = 15
POOL_LOG_BAR = (POOL_MAX + 1) * (OUTAGE / RECONNECT_DELAY_MAX + 4)
RESUME_BAR = 10.0  # seconds from "accepting connections" to the first new job done


def test_long_outage_workers_stay_up_and_resume(
    cluster: PgCluster, cluster_schema, workdir, report
):
    url, schema = cluster.url, cluster_schema
    # Leases longer than the outage: the jobs in flight are not expired meanwhile.
    create_queue(url, schema, "outage", expire_in=OUTAGE + 60, retry_limit=5, retry_delay=0)
    options = {
        "url": url,
        "schema": schema,
        "queue": "outage",
        "concurrency": 5,
        "poll_interval": 0.5,
        "maintenance_interval": 0.5,
        "pool_max": POOL_MAX,
    }
    workers = [WorkerProcess(workdir, **options) for _ in range(WORKERS)]
    try:
        wait_for(lambda: all(w.status() for w in workers), 60, "workers started")
        with SyncQueueClient(url, schema=schema) as client:
            client.send_many("outage", [{"sleep": 2.0} for _ in range(IN_FLIGHT)])
        wait_for(
            lambda: sum(w.status().get("running", 0) for w in workers) == IN_FLIGHT,
            30,
            "jobs in flight",
        )
        down_at = time.time()
        cluster.stop("fast")
        time.sleep(OUTAGE)
        alive_during = sum(w.alive for w in workers)
        ready = cluster.start()
        with SyncQueueClient(url, schema=schema) as client:
            client.send_many("outage", [{"sleep": 0.01} for _ in range(AFTER)])
        total = IN_FLIGHT + AFTER
        drained = wait_for(
            lambda: job_counts(url, schema, "outage").get("completed", 0) == total,
            120,
            "every job completed after the outage",
            step=0.1,
        )
        alive = sum(w.alive for w in workers)
    finally:
        exit_codes = [w.stop() for w in workers]

    rows = query(
        url,
        schema,
        "select state::text, attempt, extract(epoch from finished_at)::float8,"
        " (data->>'sleep')::float8 from {s}.job where queue = 'outage'",
    )
    new_done = sorted(r[2] for r in rows if r[3] < 1)
    old_done = sorted(r[2] for r in rows if r[3] >= 1)
    runs = Runs.read(workdir)
    finished = Counter(r.job for r in runs.all() if r.end is not None)
    # A record starts with its timestamp; libpq's messages add continuation lines.
    records = [[line for line in w.log_lines() if line[:2] == "20"] for w in workers]
    own = [sum(" patchbay." in r for r in recs) for recs in records]
    pool = [sum(" psycopg.pool " in r for r in recs) for recs in records]
    lines = [len(w.log_lines()) for w in workers]
    report(
        outage_s=OUTAGE,
        down_for_s=round(ready - down_at, 2),
        jobs=len(rows),
        states=dict(Counter(r[0] for r in rows)),
        attempts=dict(Counter(r[1] for r in rows)),
        handler_runs_max=max(finished.values(), default=0),
        first_new_job_done_after_s=rounded(new_done[0] - ready if new_done else None, 2),
        in_flight_written_after_s=rounded(old_done[-1] - ready if old_done else None, 2),
        all_done_after_s=round(drained, 2),
        workers_alive_during=alive_during,
        workers_alive=alive,
        log_lines_per_worker=lines,
        log_records_patchbay=own,
        log_records_psycopg_pool=pool,
    )
    assert alive_during == WORKERS and alive == WORKERS
    assert Counter(r[0] for r in rows) == {"completed": total}
    assert all(r[1] == 1 for r in rows)
    assert max(finished.values()) == 1
    assert new_done[0] - ready <= RESUME_BAR
    assert max(own) <= OWN_LOG_BAR
    assert max(pool) <= POOL_LOG_BAR
    assert exit_codes == [0] * WORKERS
