"""Worker killed mid-job: ``kill -9`` a random busy worker process at random moments while
four of them run jobs of 0.1-2 s. Nothing is lost, every job completes, and each extra
attempt is explained by a kill (a job hit once has exactly two attempts); a killed job's
lease is expired within one maintenance interval of its end, so it runs again within
lease + one interval of the kill.

Short: 200 jobs, 10 kills. Long: 1,000 jobs, 50 kills.
"""

from __future__ import annotations

import random
import time
from collections import Counter

import pytest
from reliability_support import (
    Runs,
    WorkerProcess,
    create_queue,
    job_counts,
    percentile,
    pick,
    query,
    rounded,
    wait_for,
)

from patchbay.queue import SyncQueueClient

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(pick(300, 1200))]

JOBS = pick(200, 1000)
KILLS = pick(10, 50)
WORKERS = 4
CONCURRENCY = 5
LEASE = 4.0  # handlers run up to 2 s: margin for a loaded machine
INTERVAL = 0.5
# Scheduling delay allowed on top of one maintenance interval (a loaded 2-core machine
# runs five Python processes and Postgres here).
SLACK = 1.5


def test_worker_killed_mid_job_loses_nothing(database_url, schema, workdir, report):
    url = database_url
    create_queue(
        url, schema, "kill", expire_in=LEASE, retry_limit=100, retry_delay=0, retry_backoff=False
    )
    rng = random.Random(8)
    with SyncQueueClient(url, schema=schema) as client:
        client.send_many(
            "kill", [{"sleep": round(rng.uniform(0.1, 2.0), 3), "n": n} for n in range(JOBS)]
        )
    options = {
        "url": url,
        "schema": schema,
        "queue": "kill",
        "concurrency": CONCURRENCY,
        "poll_interval": 0.5,
        "maintenance_interval": INTERVAL,
    }
    workers = [WorkerProcess(workdir, **options) for _ in range(WORKERS)]
    kills: dict[int, float] = {}  # pid -> time of its kill
    started = time.time()
    try:
        wait_for(lambda: all(w.status() for w in workers), 60, "workers started")
        while len(kills) < KILLS:
            time.sleep(rng.uniform(0.2, 0.8))
            if job_counts(url, schema, "kill").get("completed", 0) >= JOBS:
                break
            # A worker running handlers, not one still starting up.
            busy = [w for w in workers if w.status().get("running", 0) > 0]
            if not busy:
                continue
            victim = rng.choice(busy)
            kills[victim.pid] = victim.kill()
            workers[workers.index(victim)] = WorkerProcess(workdir, **options)
        deadline = time.monotonic() + pick(180, 600)
        while time.monotonic() < deadline:
            if job_counts(url, schema, "kill").get("completed", 0) >= JOBS:
                break
            time.sleep(0.2)
        elapsed = time.time() - started
        alive = sum(w.alive for w in workers)
    finally:
        exit_codes = [w.stop() for w in workers]

    counts = job_counts(url, schema, "kill")
    jobs = {
        str(jid): (state, attempt, output)
        for jid, state, attempt, output in query(
            url, schema, "select id, state::text, attempt, output from {s}.job where queue = 'kill'"
        )
    }
    expiries = {
        (str(jid), attempt): at.timestamp()
        for jid, attempt, at in query(
            url,
            schema,
            "select job_id, attempt, at from {s}.job_event where kind = 'retrying'"
            " and data->'error'->>'type' = 'patchbay.queue.LeaseExpired'",
        )
    }
    runs = Runs.read(workdir)

    unexplained = []  # an earlier attempt that no kill interrupted
    unobserved: Counter[str] = Counter()  # attempts claimed but never started (killed first)
    hits: Counter[str] = Counter()
    expiry_after_lease = []  # lease expired this long after the lease ran out
    rerun_after_kill = []  # the next attempt started this long after the kill
    for jid, (_state, attempts, output) in jobs.items():
        calls = runs.by_job.get(jid, [])
        seen = {r.attempt for r in calls}
        if attempts > len(seen):
            unobserved[jid] = attempts - len(seen)
        for run in calls:
            if output is not None and (run.pid, run.attempt) == (output["pid"], output["attempt"]):
                continue
            killed = kills.get(run.pid)
            if killed is None or run.start > killed:
                unexplained.append((jid, run.attempt, run.pid))
                continue
            hits[jid] += 1
            expired = expiries.get((jid, run.attempt))
            if expired is not None:
                expiry_after_lease.append(expired - (run.start + LEASE))
            later = [r.start for r in calls if r.attempt > run.attempt]
            if later:
                rerun_after_kill.append(min(later) - killed)
    # Attempts of the jobs one kill hit (and no kill took before their handler started).
    hit_once = [jobs[j][1] for j, n in hits.items() if n == 1 and not unobserved[j]]
    report(
        jobs=JOBS,
        kills=len(kills),
        workers=WORKERS,
        completed=counts.get("completed", 0),
        lost=JOBS - counts.get("completed", 0),
        states=counts,
        jobs_hit=len(hits),
        max_attempts_hit_once=max(hit_once, default=None),
        unexplained_attempts=len(unexplained),
        unobserved_attempts=sum(unobserved.values()),
        expiry_after_lease_end_max_s=rounded(max(expiry_after_lease, default=None)),
        rerun_after_kill_p50_s=rounded(percentile(rerun_after_kill, 50)),
        rerun_after_kill_max_s=rounded(max(rerun_after_kill, default=None)),
        elapsed_s=round(elapsed, 1),
        workers_alive_at_end=alive,
    )
    assert len(kills) == KILLS, "the jobs finished before every kill was made"
    assert counts == {"completed": JOBS}
    # Every attempt but the accepted one was interrupted by a kill.
    assert unexplained == []
    assert all(output["attempt"] == attempt for _, attempt, output in jobs.values())
    assert sum(unobserved.values()) <= len(kills)
    assert all(n == 2 for n in hit_once)
    assert hits, "no kill hit a running job"
    assert max(expiry_after_lease) <= INTERVAL + SLACK
    assert alive == WORKERS
    assert exit_codes == [0] * WORKERS
