"""Queue core benchmarks (issue 2, section 4): send_single, send_batch, drain, latency, backlog.

Every benchmark migrates a schema of its own (``b<pid>``, as long as the default name) and
drops it at the end. Workers run in separate processes (multiprocessing ``spawn``), each
with its own ``QueueClient``, the way ``patchbay run`` daemons would; the parent only
enqueues, starts them and watches. ``vacuum analyze`` runs after bulk loads, where a real
deployment's autovacuum would have (the job table would otherwise have no statistics at
all when autovacuum is off, as it is on the benchmark machine).

Figures: ``jobs_per_s``, ``p50_ms``/``p95_ms``/``p99_ms``, ``ratio``, ``rss_mb``, plus the
settings that produced them (batch size, processes, concurrency). Sizes can be changed for
experiments through ``PATCHBAY_BENCH_*`` environment variables (see ``_setting``); the
defaults are the issue's.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing as mp
import os
import queue as stdlib_queue
import resource
import statistics
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import psycopg
from psycopg import sql

from bench import benchmark
from patchbay.queue import Job, QueueClient, migrate_sync

QUEUE = "bench"
OTHER_QUEUE = "bench_other"


def _setting(name: str, default: str) -> str:
    return os.environ.get(f"PATCHBAY_BENCH_{name}", default)


def _int(name: str, default: int) -> int:
    return int(_setting(name, str(default)))


def _ints(name: str, default: Sequence[int]) -> list[int]:
    raw = _setting(name, ",".join(str(v) for v in default))
    return [int(v) for v in raw.split(",") if v.strip()]


SEND_SINGLE_JOBS = _int("SEND_SINGLE_JOBS", 10_000)
SEND_BATCH_SIZES = _ints("SEND_BATCH_SIZES", (1_000, 10_000))
SEND_BATCH_JOBS = _int("SEND_BATCH_JOBS", 200_000)
DRAIN_JOBS = _int("DRAIN_JOBS", 20_000)
DRAIN_PROCESSES = _ints("DRAIN_PROCESSES", (1, 2))
# Handler calls at once per worker process; the batch fetched is min(concurrency, 1000),
# the engine's default.
WORKER_CONCURRENCY = _int("WORKER_CONCURRENCY", 1_000)
# Warm connections per worker process (fetch, completion, listener aside, maintenance):
# a running daemon has them open already.
WORKER_POOL = _int("WORKER_POOL", 4)
LATENCY_JOBS = _int("LATENCY_JOBS", 200)
LATENCY_WARMUP = _int("LATENCY_WARMUP", 20)
LATENCY_GAP_S = _int("LATENCY_GAP_MS", 20) / 1000
BACKLOG_JOBS = _int("BACKLOG_JOBS", 10_000)
BACKLOG_PROCESSES = _int("BACKLOG_PROCESSES", 2)
BACKLOG_ROUNDS = _int("BACKLOG_ROUNDS", 3)
# The 1,000,000 other rows: completed history and deferred jobs of the drained queue, and
# another queue's runnable backlog.
BACKLOG_HISTORY = _int("BACKLOG_HISTORY", 800_000)
BACKLOG_DEFERRED = _int("BACKLOG_DEFERRED", 100_000)
BACKLOG_OTHER = _int("BACKLOG_OTHER", 100_000)

_WAIT_LIMIT_S = 600.0


# -- database helpers ----------------------------------------------------------------------


def _run_sql(url: str, schema: str, *statements: str, params: dict[str, Any] | None = None) -> None:
    """Run statements (autocommit, so VACUUM works) with ``{schema}`` substituted."""
    with psycopg.connect(url, autocommit=True) as conn:
        for text in statements:
            conn.execute(sql.SQL(text).format(schema=sql.Identifier(schema)), params)


def _query(url: str, schema: str, text: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql.SQL(text).format(schema=sql.Identifier(schema))).fetchall()


def _checkpoint(url: str) -> None:
    """Flush the WAL of earlier loads so a checkpoint does not land inside a measurement."""
    with psycopg.connect(url, autocommit=True) as conn, contextlib.suppress(psycopg.Error):
        conn.execute("checkpoint")


def _vacuum(url: str, schema: str) -> None:
    _run_sql(url, schema, "vacuum analyze {schema}.job")


@contextlib.asynccontextmanager
async def _schema(url: str, prefix: str = "b") -> AsyncIterator[str]:
    # As long as the default schema name, "patchbay": the name is spelled into every
    # statement, and psycopg re-parses (does not cache) statements over 4096 bytes, so a
    # longer name could measure a cost a default deployment does not pay. Unique per
    # process; the benchmarks of one run use it one after another.
    schema = f"{prefix}{os.getpid() % 10**7:07d}"
    drop = "drop schema if exists {schema} cascade"
    await asyncio.to_thread(_run_sql, url, schema, drop)
    await asyncio.to_thread(migrate_sync, url, schema)
    try:
        yield schema
    finally:
        await asyncio.to_thread(_run_sql, url, schema, drop)


async def _enqueue(client: QueueClient, queue: str, count: int, batch: int = 10_000) -> None:
    sent = 0
    while sent < count:
        size = min(batch, count - sent)
        await client.send_many(queue, [{"n": sent + i} for i in range(size)])
        sent += size


def _percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


# -- sending -------------------------------------------------------------------------------


@benchmark("send_single")
async def send_single(url: str) -> list[dict[str, Any]]:
    """One awaited ``send`` at a time, each its own transaction."""
    async with _schema(url) as schema, QueueClient(url, schema=schema) as client:
        await client.create_queue(QUEUE)
        for i in range(200):  # warm the pool and psycopg's prepared statements
            await client.send(QUEUE, {"n": i})
        started = time.perf_counter()
        for i in range(SEND_SINGLE_JOBS):
            await client.send(QUEUE, {"n": i})
        elapsed = time.perf_counter() - started
    return [
        {
            "jobs_per_s": round(SEND_SINGLE_JOBS / elapsed),
            "jobs": SEND_SINGLE_JOBS,
            "us_per_send": round(elapsed / SEND_SINGLE_JOBS * 1e6, 1),
        }
    ]


@benchmark("send_batch")
async def send_batch(url: str) -> list[dict[str, Any]]:
    """``send_many`` in batches of each size in SEND_BATCH_SIZES, into an empty table."""
    results: list[dict[str, Any]] = []
    async with _schema(url) as schema, QueueClient(url, schema=schema) as client:
        await client.create_queue(QUEUE)
        for size in SEND_BATCH_SIZES:
            await asyncio.to_thread(_run_sql, url, schema, "truncate {schema}.job")
            await client.send_many(QUEUE, [{"n": i} for i in range(min(size, 1000))])  # warm
            batches = max(1, SEND_BATCH_JOBS // size)
            payloads = [[{"n": b * size + i} for i in range(size)] for b in range(batches)]
            started = time.perf_counter()
            for items in payloads:
                await client.send_many(QUEUE, items)
            elapsed = time.perf_counter() - started
            results.append(
                {
                    "jobs_per_s": round(batches * size / elapsed),
                    "batch_size": size,
                    "jobs": batches * size,
                    "ms_per_batch": round(elapsed / batches * 1000, 2),
                }
            )
    return results


# -- worker processes ----------------------------------------------------------------------


def _worker_process(
    mode: str,
    url: str,
    schema: str,
    queue: str,
    concurrency: int,
    index: int,
    counts: Any,
    go: Any,
    stop: Any,
    out: Any,
) -> None:
    """Entry point of a spawned worker process (``mode``: drain or latency)."""
    # Experiments: server settings for the workers' connections only (not the sender's),
    # e.g. "-c synchronous_commit=off".
    options = _setting("WORKER_PGOPTIONS", "")
    if options:
        os.environ["PGOPTIONS"] = options
    asyncio.run(_worker_main(mode, url, schema, queue, concurrency, index, counts, go, stop, out))


async def _worker_main(
    mode: str,
    url: str,
    schema: str,
    queue: str,
    concurrency: int,
    index: int,
    counts: Any,
    go: Any,
    stop: Any,
    out: Any,
) -> None:
    latencies_ns: list[int] = []

    async def noop(job: Job) -> None:
        return None

    async def stamp(job: Job) -> None:
        latencies_ns.append(time.time_ns() - job.data["sent_ns"])
        counts[index] = len(latencies_ns)

    client = QueueClient(
        url,
        schema=schema,
        pool_min=WORKER_POOL,
        pool_max=max(WORKER_POOL, 8),
        application_name=f"bench-{schema}-w{index}",
    )
    async with client:
        out.put(("ready", index, None))
        await asyncio.to_thread(go.wait)
        handler = noop if mode == "drain" else stamp
        cpu_before = _cpu_seconds()
        worker = await client.work(queue, handler, concurrency=concurrency)
        seen = 0
        last_completion: float | None = None
        cpu_s = 0.0
        # The completer bumps ``worker.completed`` once a batch's UPDATE has returned, i.e.
        # committed (autocommit): polling it every 2 ms times the last commit to within 2 ms.
        # ``stop`` is a shared byte, not an Event: reading it costs no system call.
        while not stop.value:
            done = worker.completed
            if done != seen:
                seen = done
                last_completion = time.time()
                cpu_s = _cpu_seconds() - cpu_before
                if mode == "drain":
                    counts[index] = done
            await asyncio.sleep(0.002)
        figures = {
            "cpu_s": cpu_s,
            "completed": worker.completed,
            "fetches": worker.fetches,
            "last_completion": last_completion,
            "rss_mb": _peak_rss_mb(),
            "latencies_ns": latencies_ns,
        }
    out.put(("done", index, figures))


def _backend_cpu(url: str, application_prefix: str) -> dict[int, float]:
    """CPU seconds so far of the server backends whose application_name starts with
    ``application_prefix``, read from /proc: only when Postgres runs on this host."""
    with psycopg.connect(url, autocommit=True) as conn:
        pids = [
            row[0]
            for row in conn.execute(
                "select pid from pg_stat_activity where application_name like %s",
                (application_prefix + "%",),
            )
        ]
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    seconds: dict[int, float] = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/comm", encoding="ascii") as comm:
                if comm.read().strip() != "postgres":
                    continue
            with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        seconds[pid] = (int(fields[11]) + int(fields[12])) / ticks
    return seconds


def _peak_rss_mb() -> float:
    """This process's peak resident memory. On Linux from VmHWM: ``ru_maxrss`` would carry
    over the parent's resident size through fork and exec of the spawned process."""
    with contextlib.suppress(OSError), open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Workers:
    """Spawned worker processes, started together on ``go``."""

    def __init__(self, mode: str, url: str, schema: str, queue: str, processes: int) -> None:
        ctx = mp.get_context("spawn")
        self.counts = ctx.Array("q", processes, lock=False)
        self.go = ctx.Event()
        self.stop = ctx.Value("b", 0, lock=False)
        self.out = ctx.Queue()
        self.events = (self.counts, self.go, self.stop, self.out)
        concurrency = WORKER_CONCURRENCY if mode == "drain" else 10
        self.procs = [
            ctx.Process(
                target=_worker_process,
                args=(mode, url, schema, queue, concurrency, i, *self.events),
                name=f"bench-worker-{i}",
                daemon=True,
            )
            for i in range(processes)
        ]
        self.concurrency = concurrency

    async def _receive_all(self, kind: str) -> list[Any]:
        """One ``kind`` message from every process, by process index. A process that has
        sent its message may exit; one that exits (or hangs) before it fails the run."""
        payloads: dict[int, Any] = {}
        deadline = time.monotonic() + _WAIT_LIMIT_S
        silent_dead = 0
        while len(payloads) < len(self.procs):
            try:
                got, index, payload = await asyncio.to_thread(self.out.get, True, 1.0)
            except stdlib_queue.Empty:
                dead = [
                    i for i, p in enumerate(self.procs) if i not in payloads and not p.is_alive()
                ]
                # A dead process's last message may still be in the pipe: one more wait.
                silent_dead = silent_dead + 1 if dead else 0
                if time.monotonic() > deadline or silent_dead > 1:
                    raise RuntimeError(
                        f"worker process(es) {dead or 'all'} died or hung before {kind!r}"
                    ) from None
                continue
            if got != kind:
                raise RuntimeError(f"worker process sent {got!r}, expected {kind!r}")
            payloads[index] = payload
        return [payloads[i] for i in range(len(self.procs))]

    async def start(self) -> float:
        """Start the processes, wait until each has its pool open, then release them all;
        returns the release time (``time.time()``)."""
        for proc in self.procs:
            proc.start()
        await self._receive_all("ready")
        started = time.time()
        self.go.set()
        return started

    async def wait_total(self, total: int) -> None:
        deadline = time.monotonic() + _WAIT_LIMIT_S
        while sum(self.counts) < total:
            if time.monotonic() > deadline or not all(p.is_alive() for p in self.procs):
                raise RuntimeError(
                    f"workers stopped at {sum(self.counts)} of {total} jobs (died or hung)"
                )
            await asyncio.sleep(0.005)

    async def finish(self) -> list[dict[str, Any]]:
        self.stop.value = 1
        results: list[dict[str, Any]] = await self._receive_all("done")
        return results

    def close(self) -> None:
        self.stop.value = 1
        self.go.set()
        for proc in self.procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
                proc.join()


async def _drain(url: str, schema: str, jobs: int, processes: int) -> dict[str, Any]:
    """Drain ``jobs`` queued jobs of QUEUE with ``processes`` worker processes."""
    workers = _Workers("drain", url, schema, QUEUE, processes)
    backends = f"bench-{schema}-w"
    try:
        db_cpu_before = await asyncio.to_thread(_backend_cpu, url, backends)
        started = await workers.start()
        await workers.wait_total(jobs)
        db_cpu_after = await asyncio.to_thread(_backend_cpu, url, backends)
        results = await workers.finish()
    finally:
        workers.close()
    db_cpu = sum(t - db_cpu_before.get(pid, 0.0) for pid, t in db_cpu_after.items())
    ended = max(r["last_completion"] for r in results if r["last_completion"] is not None)
    completed = sum(r["completed"] for r in results)
    rows = await asyncio.to_thread(
        _query,
        url,
        schema,
        "select count(*) from {schema}.job where queue = 'bench'"
        " and (state = 'active' or (state in ('queued', 'retrying') and start_after <= now()))",
    )
    if completed != jobs or rows[0][0] != 0:
        raise RuntimeError(f"{completed} of {jobs} jobs completed, {rows[0][0]} left runnable")
    return {
        "jobs_per_s": round(jobs / (ended - started)),
        "processes": processes,
        "concurrency": workers.concurrency,
        "jobs": jobs,
        "seconds": round(ended - started, 3),
        "rss_mb": round(max(r["rss_mb"] for r in results), 1),
        "fetches": sum(r["fetches"] for r in results),
        # CPU time of the worker processes (user + system) per job: the engine's own cost.
        "worker_cpu_us_per_job": round(sum(r["cpu_s"] for r in results) / jobs * 1e6, 1),
        # CPU time of the workers' Postgres backends per job (when Postgres runs on this
        # host; else 0): what fetch and completion cost the server.
        "db_cpu_us_per_job": round(db_cpu / jobs * 1e6, 1),
    }


# -- draining ------------------------------------------------------------------------------


@benchmark("drain")
async def drain(url: str) -> list[dict[str, Any]]:
    """DRAIN_JOBS no-op jobs enqueued beforehand, drained by 1 and 2 worker processes."""
    results: list[dict[str, Any]] = []
    async with _schema(url) as schema:
        async with QueueClient(url, schema=schema) as client:
            await client.create_queue(QUEUE)
        for processes in DRAIN_PROCESSES:
            await asyncio.to_thread(_run_sql, url, schema, "truncate {schema}.job")
            async with QueueClient(url, schema=schema) as client:
                await _enqueue(client, QUEUE, DRAIN_JOBS)
            await asyncio.to_thread(_vacuum, url, schema)
            await asyncio.to_thread(_checkpoint, url)
            results.append(await _drain(url, schema, DRAIN_JOBS, processes))
    return results


# -- latency -------------------------------------------------------------------------------


@benchmark("latency")
async def latency(url: str) -> list[dict[str, Any]]:
    """An idle worker process; jobs sent LATENCY_GAP_S apart from this process; time from
    just before ``send`` to the handler's first line, on the same host's clock."""
    async with _schema(url) as schema, QueueClient(url, schema=schema) as client:
        await client.create_queue(QUEUE)
        workers = _Workers("latency", url, schema, QUEUE, 1)
        try:
            await workers.start()
            # Jobs sent before the worker listens would be picked up by its first fetch.
            await asyncio.sleep(0.5)
            total = LATENCY_WARMUP + LATENCY_JOBS
            send_ns: list[int] = []
            loop = asyncio.get_running_loop()
            first = loop.time()
            for i in range(total):
                await asyncio.sleep(max(0.0, first + i * LATENCY_GAP_S - loop.time()))
                sent = time.time_ns()
                await client.send(QUEUE, {"sent_ns": sent, "n": i})
                send_ns.append(time.time_ns() - sent)
            await workers.wait_total(total)
            (figures,) = await workers.finish()
        finally:
            workers.close()
    measured = [ns / 1e6 for ns in figures["latencies_ns"][LATENCY_WARMUP:]]
    sends = [ns / 1e6 for ns in send_ns[LATENCY_WARMUP:]]
    return [
        {
            "p50_ms": round(_percentile(measured, 50), 3),
            "p95_ms": round(_percentile(measured, 95), 3),
            "p99_ms": round(_percentile(measured, 99), 3),
            "max_ms": round(max(measured), 3),
            "jobs": len(measured),
            "gap_ms": LATENCY_GAP_S * 1000,
            "send_p50_ms": round(statistics.median(sends), 3),
        }
    ]


# -- backlog -------------------------------------------------------------------------------

# One kind of the million other rows: ``rows`` jobs of ``queue`` created ``span`` apart
# from ``first`` on, with time-ordered ids like the client's UUIDv7s (the creation time in
# the first 48 bits). Completed rows get a start and finish; deferred ones a start time an
# hour or more ahead.
_FILL = """
insert into {schema}.job
    (id, queue, state, priority, data, attempt, retry_limit, retry_delay_s, retry_backoff,
     expire_in_s, start_after, created_at, started_at, finished_at)
select encode(overlay(uuid_send(gen_random_uuid())
                      placing substring(int8send((extract(epoch from t.at) * 1000)::bigint)
                                        from 3)
                      from 1 for 6), 'hex')::uuid,
       %(queue)s, %(state)s::{schema}.job_state, 0, jsonb_build_object('n', g),
       case when %(state)s = 'completed' then 1 else 0 end, 2, 0, true, 900,
       case when %(deferred)s then now() + interval '1 hour' + g * interval '1 second'
            else t.at end,
       t.at,
       case when %(state)s = 'completed' then t.at + interval '5 ms' end,
       case when %(state)s = 'completed' then t.at + interval '6 ms' end
from generate_series(1, %(rows)s) as g,
     lateral (select now() - %(first)s::interval + g * (%(span)s::interval / %(rows)s)) as t(at)
"""


def _fill_backlog(url: str, schema: str) -> None:
    kinds = (
        # completed history of the drained queue, over the last week
        {"queue": QUEUE, "state": "completed", "deferred": False, "rows": BACKLOG_HISTORY,
         "first": "7 days", "span": "6 days"},
        # jobs of the drained queue deferred to the future
        {"queue": QUEUE, "state": "queued", "deferred": True, "rows": BACKLOG_DEFERRED,
         "first": "1 day", "span": "1 day"},
        # another queue's runnable backlog
        {"queue": OTHER_QUEUE, "state": "queued", "deferred": False, "rows": BACKLOG_OTHER,
         "first": "1 hour", "span": "1 hour"},
    )  # fmt: skip
    for params in kinds:
        if params["rows"]:
            _run_sql(url, schema, _FILL, params=params)


@benchmark("backlog")
async def backlog(url: str) -> list[dict[str, Any]]:
    """Drain rate of BACKLOG_JOBS with a million other rows in the job table, over the rate
    of the same jobs in an otherwise empty table. A drain of 10,000 jobs lasts well under a
    second, so each side is measured BACKLOG_ROUNDS times, alternately, in two schemas, and
    the medians are compared."""
    async with (
        _schema(url, "b") as empty_schema,
        _schema(url, "c") as full_schema,
        QueueClient(url, schema=empty_schema) as empty_client,
        QueueClient(url, schema=full_schema) as full_client,
    ):
        for client in (empty_client, full_client):
            await client.create_queue(QUEUE)
            await client.create_queue(OTHER_QUEUE)
        # A million other rows, loaded and analyzed, as autovacuum would after such a load.
        loaded_at = time.perf_counter()
        await asyncio.to_thread(_fill_backlog, url, full_schema)
        await asyncio.to_thread(_vacuum, url, full_schema)
        load_s = time.perf_counter() - loaded_at
        empty: list[dict[str, Any]] = []
        full: list[dict[str, Any]] = []
        for _ in range(BACKLOG_ROUNDS):
            # Empty table: only this round's jobs, a bulk load autovacuum would analyze.
            await asyncio.to_thread(_run_sql, url, empty_schema, "truncate {schema}.job")
            await _enqueue(empty_client, QUEUE, BACKLOG_JOBS)
            await asyncio.to_thread(_vacuum, url, empty_schema)
            await asyncio.to_thread(_checkpoint, url)
            empty.append(await _drain(url, empty_schema, BACKLOG_JOBS, BACKLOG_PROCESSES))
            # The same jobs sent on top of the million rows (and of the earlier rounds'
            # finished jobs): too few for autovacuum to act on in a table this size.
            await _enqueue(full_client, QUEUE, BACKLOG_JOBS)
            await asyncio.to_thread(_checkpoint, url)
            full.append(await _drain(url, full_schema, BACKLOG_JOBS, BACKLOG_PROCESSES))
    full_rate = statistics.median(r["jobs_per_s"] for r in full)
    empty_rate = statistics.median(r["jobs_per_s"] for r in empty)
    return [
        {
            "ratio": round(full_rate / empty_rate, 3),
            "jobs_per_s": round(full_rate),
            "empty_jobs_per_s": round(empty_rate),
            "rounds": BACKLOG_ROUNDS,
            "round_ratios": [
                round(f["jobs_per_s"] / e["jobs_per_s"], 2)
                for f, e in zip(full, empty, strict=True)
            ],
            "jobs": BACKLOG_JOBS,
            "other_rows": BACKLOG_HISTORY + BACKLOG_DEFERRED + BACKLOG_OTHER,
            "processes": BACKLOG_PROCESSES,
            "concurrency": full[0]["concurrency"],
            "db_cpu_us_per_job": statistics.median(r["db_cpu_us_per_job"] for r in full),
            "empty_db_cpu_us_per_job": statistics.median(r["db_cpu_us_per_job"] for r in empty),
            "load_s": round(load_s, 1),
        }
    ]
