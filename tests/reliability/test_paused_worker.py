"""Paused worker: processes frozen with SIGSTOP past their jobs' leases, the jobs taken over
and completed by another worker, then SIGCONT. Their late results (completions, and the
lease-lost failures their watchdog writes) are rejected by the attempt fence: 0 stale
writes applied, and the frozen processes carry on.

One more process is frozen while it holds the maintenance lock (in the middle of a pass),
as a stopped VM or a long GC pause would: lease expiry must not stop for everyone while it
sleeps.
"""

from __future__ import annotations

import signal
import time

import pytest
from reliability_support import (
    WorkerProcess,
    create_queue,
    job_counts,
    pick,
    query,
    rounded,
    wait_for,
)

from patchbay.queue import SyncQueueClient
from patchbay.queue._maintenance import _lock_key

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(pick(180, 600))]

ASYNC_JOBS = pick(6, 20)
LEASE = 4.0
INTERVAL = 0.5
# Shorter than the lease (only the pause makes them outlive it), long enough to freeze the
# processes mid-call on a loaded machine.
HANDLER = 3.0
# A stalled pass is ended after _PASS_IDLE_TIMEOUT (5 s); then the next pass of another
# client expires the leases (one interval), plus scheduling slack on a loaded machine.
HOSTAGE_BOUND = 5.0 + INTERVAL + 1.5


def _holds_maintenance_lock(url: str, schema: str, app: str) -> bool:
    """Whether a backend of application ``app`` holds the schema's maintenance lock."""
    key = _lock_key(schema) & 0xFFFFFFFFFFFFFFFF
    rows = query(
        url,
        schema,
        "select 1 from pg_locks l join pg_stat_activity a using (pid)"
        " where l.locktype = 'advisory' and l.granted and a.application_name = %s"
        " and l.classid = %s and l.objid = %s and l.objsubid = 1",
        (app, key >> 32, key & 0xFFFFFFFF),
    )
    return bool(rows)


def _started(worker: WorkerProcess) -> bool:
    path = worker.runs_dir / f"runs-{worker.pid}.jsonl"
    return path.exists() and '"start"' in path.read_text()


def test_paused_worker_late_writes_are_rejected(database_url, schema, workdir, report):
    url = database_url
    for queue in ("paused", "blocked"):
        create_queue(url, schema, queue, expire_in=LEASE, retry_limit=5, retry_delay=0)
    create_queue(url, schema, "idle")
    base = {"url": url, "schema": schema, "poll_interval": 0.2, "maintenance_interval": INTERVAL}
    # M only runs maintenance (its queue stays empty), often, so it can be caught mid-pass.
    holder = WorkerProcess(
        workdir, name="m", queue="idle", **{**base, "maintenance_interval": 0.02}
    )
    # A runs async handlers; B one handler that blocks its event loop (so on SIGCONT the
    # handler returns before the watchdog can notice the lease is gone, and the late
    # write is a completion). Neither runs maintenance.
    paused = WorkerProcess(
        workdir, name="a", queue="paused", concurrency=ASYNC_JOBS, maintenance=False, **base
    )
    blocked = WorkerProcess(
        workdir, name="b", queue="blocked", concurrency=1, maintenance=False, **base
    )
    workers = [holder, paused, blocked]
    try:
        wait_for(lambda: all(w.status() for w in workers), 60, "processes started")
        # Freeze M while it holds the maintenance lock (retry until a stop lands mid-pass):
        # from now on no pass runs until that lock is freed.
        app = holder.options["application_name"]
        caught = None
        for tries in range(1, 1000):
            if _holds_maintenance_lock(url, schema, app):
                holder.signal(signal.SIGSTOP)
                if _holds_maintenance_lock(url, schema, app):
                    caught = tries
                    break
                holder.signal(signal.SIGCONT)
            time.sleep(0.001)
        assert caught, "could not freeze M in the middle of a maintenance pass"
        hostage_at = time.time()

        with SyncQueueClient(url, schema=schema) as client:
            client.send("blocked", {"block": HANDLER})
            client.send_many("paused", [{"sleep": HANDLER} for _ in range(ASYNC_JOBS)])
        wait_for(lambda: _started(blocked), 30, "B runs its job", step=0.005)
        blocked.signal(signal.SIGSTOP)
        wait_for(
            lambda: paused.status().get("running", 0) == ASYNC_JOBS,
            30,
            "A runs all its jobs",
            step=0.01,
        )
        paused.signal(signal.SIGSTOP)
        frozen_at = time.time()

        # C cuts every handler to 0.05 s: its own attempt must not outlive its lease.
        rescuer = WorkerProcess(
            workdir,
            name="c",
            queue=["paused", "blocked"],
            concurrency=ASYNC_JOBS,
            max_sleep=0.05,
            **base,
        )
        workers.append(rescuer)
        total = ASYNC_JOBS + 1
        done = wait_for(
            lambda: (
                sum(job_counts(url, schema, q).get("completed", 0) for q in ("paused", "blocked"))
                == total
            ),
            pick(60, 120),
            "C completes the jobs of the frozen workers",
        )
        for w in (holder, paused, blocked):
            w.signal(signal.SIGCONT)
        wait_for(
            lambda: (
                paused.status().get("stale_writes", 0) + blocked.status().get("stale_writes", 0)
                >= total
            ),
            30,
            "the late writes are attempted",
        )
        time.sleep(0.5)  # anything else they would write
        status = {w.name: w.status() for w in workers}
        alive = all(w.alive for w in workers)
        # Postgres ended M's stalled pass: M learns it on waking up, and goes on.
        wait_for(
            lambda: any("maintenance pass failed" in line for line in holder.log_lines()),
            10,
            "M's stalled pass was ended by Postgres",
        )
    finally:
        exit_codes = [w.stop() for w in workers]

    rows = query(
        url, schema, "select state::text, attempt, output from {s}.job where queue <> 'idle'"
    )
    expiries = query(
        url,
        schema,
        "select min(at), max(at) from {s}.job_event where kind = 'retrying'"
        " and data->'error'->>'type' = 'patchbay.queue.LeaseExpired'",
    )[0]
    applied_late = [r for r in rows if r[2]["pid"] != rescuer.pid]
    report(
        jobs=len(rows),
        completed=sum(r[0] == "completed" for r in rows),
        attempts=sorted({r[1] for r in rows}),
        late_writes_rejected=status["a"]["stale_writes"] + status["b"]["stale_writes"],
        stale_writes_applied=len(applied_late),
        lock_caught_after_tries=caught,
        lease_expired_after_hostage_s=rounded(expiries[0].timestamp() - hostage_at),
        completed_after_freeze_s=round(done, 2),
        frozen_to_last_expiry_s=rounded(expiries[1].timestamp() - frozen_at),
        processes_alive=alive,
    )
    assert len(rows) == ASYNC_JOBS + 1
    assert all(r[0] == "completed" and r[1] == 2 for r in rows)
    # Nothing expired while M held the lock and slept, and everything soon after
    # Postgres ended its stalled pass.
    assert hostage_at < expiries[0].timestamp() <= hostage_at + HOSTAGE_BOUND
    assert applied_late == []
    assert status["a"]["stale_writes"] == ASYNC_JOBS and status["a"]["completed"] == 0
    assert status["b"]["stale_writes"] == 1 and status["b"]["completed"] == 0
    assert alive
    assert exit_codes == [0] * len(workers)
