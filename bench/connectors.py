"""Connector SDK benchmark: ``sync_records``, records per second through ``emit`` and
``checkpoint`` to the default destination (the ``connector_record`` table).

A sync handler emits pre-built records of about 1 KB in pages of 100 and checkpoints after
each page, as the example contacts connector does; each checkpoint is one transaction that
locks the job row (the fence), upserts the page with one ``unnest`` statement and writes
the cursor state. The handler runs as a real queue job through ``ConnectorExecutor``; the
figure is records over the handler's time (emit + checkpoint), not job scheduling.

Modes: ``insert`` (new records), ``update`` (the same external ids, changed data) and
``unchanged`` (the same records again: the upsert's ``is distinct from`` leaves the rows
alone, the cost of a full refresh that finds nothing new). Each mode runs ``RUNS`` times
and reports the median, with per-checkpoint latency percentiles of the median run.

A schema of its own (``bench_connectors_<pid>``) is migrated and dropped at the end. Sizes
can be changed through ``PATCHBAY_BENCH_CONNECTORS_*`` environment variables.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
import uuid
from typing import Any

import psycopg
from psycopg import sql

from bench import benchmark
from patchbay.connectors import Connector, ConnectorConfig, ConnectorExecutor, JobContext, sync
from patchbay.queue import QueueClient, migrate_sync


def _int(name: str, default: int) -> int:
    return int(os.environ.get(f"PATCHBAY_BENCH_CONNECTORS_{name}", str(default)))


RECORDS = _int("RECORDS", 20_000)
PAGE = _int("PAGE", 100)
RUNS = _int("RUNS", 3)
RECORD_BYTES = 1024

Pages = list[list[dict[str, Any]]]


def _pages(count: int, page: int, version: int) -> Pages:
    """``count`` records of about 1 KB as JSON, in pages; ``version`` changes their data."""
    records = []
    for n in range(count):
        record: dict[str, Any] = {
            "id": f"c_{n:08d}",
            "name": f"Contact {n}",
            "email": f"contact.{n}@example.com",
            "company": f"Company {n % 97}",
            "updated_at": f"2024-01-01T00:00:{n % 60:02d}.000Z",
            "version": version,
            "tags": ["customer", "newsletter", f"segment-{n % 7}"],
        }
        size = len(json.dumps({**record, "notes": ""}, separators=(",", ":")))
        record["notes"] = "n" * max(0, RECORD_BYTES - size)
        records.append(record)
    return [records[i : i + page] for i in range(0, count, page)]


class _Config(ConnectorConfig):
    pass


class _Replay(Connector[_Config]):
    """Emits the pages it is given, checkpointing after each; records its timings."""

    name = "bench_records"
    config_model = _Config

    def __init__(self) -> None:
        self.pages: Pages = []
        self.elapsed: list[float] = []
        self.checkpoints: list[float] = []

    @sync()
    async def records(self, ctx: JobContext[_Config]) -> None:
        started = time.perf_counter()
        for index, page in enumerate(self.pages):
            ctx.emit("records", page)
            t0 = time.perf_counter()
            await ctx.checkpoint({"page": index})
            self.checkpoints.append(time.perf_counter() - t0)
        self.elapsed.append(time.perf_counter() - started)


async def _run_once(executor: ConnectorExecutor, replay: _Replay, integration: str) -> None:
    job_id = await executor.send_sync(
        replay.name, "records", tenant="bench", integration=integration, config={}
    )
    assert job_id is not None
    while True:
        job = await executor.queue.get_job(job_id)
        if job.state == "completed":
            return
        if job.state in ("failed", "cancelled"):
            raise RuntimeError(f"benchmark job {job.state}: {job.error}")
        await asyncio.sleep(0.01)


def _percentiles(samples: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(sorted(samples), n=100, method="inclusive")
    return {
        "p50_ms": round(cuts[49] * 1000, 3),
        "p95_ms": round(cuts[94] * 1000, 3),
        "p99_ms": round(cuts[98] * 1000, 3),
    }


@benchmark("sync_records")
async def sync_records(url: str) -> list[dict[str, Any]]:
    """Records per second through emit + checkpoint: insert, update, unchanged."""
    schema = f"bench_connectors_{os.getpid()}"
    migrate_sync(url, schema)
    replay = _Replay()
    results: list[dict[str, Any]] = []
    try:
        async with QueueClient(url, schema=schema, pool_max=4) as queue:
            executor = ConnectorExecutor(queue, [replay], retry_limit=0)
            await executor.start(concurrency=1, poll_interval=0.01)
            replay.pages = _pages(PAGE * 10, PAGE, 0)
            await _run_once(executor, replay, "warm-up")  # pool, prepared plans
            modes: list[tuple[str, int]] = [("insert", 0), ("update", 1), ("unchanged", 1)]
            integrations = [f"bench-{uuid.uuid4().hex[:8]}" for _ in range(RUNS)]
            for mode, version in modes:
                replay.pages = _pages(RECORDS, PAGE, version)
                runs: list[tuple[float, list[float]]] = []
                for run in range(RUNS):
                    replay.elapsed.clear()
                    replay.checkpoints.clear()
                    await _run_once(executor, replay, integrations[run])
                    runs.append((replay.elapsed[0], list(replay.checkpoints)))
                runs.sort(key=lambda r: r[0])
                elapsed, checkpoints = runs[len(runs) // 2]
                results.append(
                    {
                        "mode": mode,
                        "records_per_s": round(RECORDS / elapsed, 1),
                        "runs_records_per_s": [round(RECORDS / e, 1) for e, _ in runs],
                        **_percentiles(checkpoints),
                        "records": RECORDS,
                        "page": PAGE,
                        "record_bytes": RECORD_BYTES,
                        "runs": RUNS,
                    }
                )
        return results
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(schema)))
