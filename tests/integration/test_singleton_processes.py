"""Singleton keys hold across processes: four processes send keyed jobs in transactions that
roll back at random, and afterwards every key that had a committed send has exactly one job
(never zero, never two), holding the data of the right send; four worker processes drain a
``singleton`` queue and never run two jobs of a key at once."""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

from patchbay.queue import FrozenClock, Job, JobSpec, QueueClient, SyncQueueClient

T0 = datetime(2031, 5, 4, 12, 0, tzinfo=UTC)
PROCESSES = 4
ROUNDS = 150  # one send per process per round
KEYS = 2  # per round
WINDOW = 3600.0

# queue -> (policy, send options); throttle and debounce jobs fall in one of two windows.
QUEUES: dict[str, tuple[str, dict[str, Any]]] = {
    "short": ("short", {}),
    "exclusive": ("exclusive", {}),
    "stately": ("stately", {}),
    "throttle": ("standard", {"throttle": WINDOW}),
    "debounce": ("standard", {"debounce": WINDOW}),
    "debounce_short": ("short", {"debounce": WINDOW}),
}

# Each committed send records itself in the same transaction: a row here exists exactly
# when the send committed. ``seq`` (a sequence, never rolled back) is drawn after the send
# returned, i.e. while the send holds its key, so it orders the committed sends of a key
# as the database serialised them.
_RECORD = """
insert into {s}.test_send (queue, key, window_no, returned_id, token, seq)
values (%(queue)s, %(key)s, %(window)s, %(returned_id)s, %(token)s, nextval(%(sequence)s::regclass))
"""


def _plan(proc: int) -> list[tuple[str, str, int, bool, float]]:
    """(queue, key, window, roll back?, seconds to hold the key) per round. In each round
    all processes send to the same fresh keys at once (a barrier starts the round), so every
    round races on keys that have no committed job yet: the races that matter."""
    rng = random.Random(proc)
    plan = []
    for i in range(ROUNDS):
        queue = sorted(QUEUES)[i % len(QUEUES)]
        window = rng.randrange(2) if QUEUES[queue][1] else 0
        key = f"r{i}-{rng.randrange(KEYS)}"
        plan.append((queue, key, window, rng.random() < 0.4, rng.random() * 0.02))
    return plan


def _send_async(url: str, schema: str, proc: int, barrier: Any) -> None:
    """Sender process using the async client and ``conn=`` in explicit transactions."""

    async def main() -> None:
        clock = FrozenClock(T0)
        record = sql.SQL(_RECORD).format(s=sql.Identifier(schema))
        async with (
            QueueClient(url, schema=schema, clock=clock, maintenance=False) as client,
            await psycopg.AsyncConnection.connect(url) as conn,
        ):
            for i, (queue, key, window, rollback, hold) in enumerate(_plan(proc)):
                clock.set(T0 + timedelta(seconds=window * WINDOW))
                token = f"p{proc}-{i}"
                await asyncio.to_thread(barrier.wait, 30)
                async with conn.transaction():
                    returned = await client.send(
                        queue, {"t": token}, singleton_key=key, conn=conn, **QUEUES[queue][1]
                    )
                    await conn.execute(record, _row(schema, queue, key, window, returned, token))
                    await asyncio.sleep(hold)
                    if rollback:
                        raise psycopg.Rollback()

    asyncio.run(main())


def _send_sync(url: str, schema: str, proc: int, barrier: Any) -> None:
    """Sender process using the sync client and ``conn=`` in explicit transactions."""
    clock = FrozenClock(T0)
    record = sql.SQL(_RECORD).format(s=sql.Identifier(schema))
    with (
        SyncQueueClient(url, schema=schema, clock=clock) as client,
        psycopg.connect(url) as conn,
    ):
        for i, (queue, key, window, rollback, hold) in enumerate(_plan(proc)):
            clock.set(T0 + timedelta(seconds=window * WINDOW))
            token = f"p{proc}-{i}"
            barrier.wait(30)
            # send_many with one keyed item: the batch path under the same contention.
            with conn.transaction():
                returned = client.send_many(
                    queue,
                    [JobSpec({"t": token}, singleton_key=key)],
                    conn=conn,
                    **QUEUES[queue][1],
                )[0]
                conn.execute(record, _row(schema, queue, key, window, returned, token))
                time.sleep(hold)
                if rollback:
                    raise psycopg.Rollback()


def _row(schema: str, queue: str, key: str, window: int, returned: Any, token: str) -> Any:
    return {
        "queue": queue,
        "key": key,
        "window": window,
        "returned_id": returned,
        "token": token,
        "sequence": f"{schema}.test_send_seq",
    }


def _query(url: str, schema: str, text: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql.SQL(text).format(s=sql.Identifier(schema))).fetchall()


@pytest.mark.slow
async def test_keys_are_never_duplicated_nor_lost_under_random_rollbacks(
    database_url: str, schema: str
) -> None:
    async with QueueClient(database_url, schema=schema, maintenance=False) as client:
        for queue, (policy, _) in QUEUES.items():
            await client.create_queue(queue, policy=policy)
    with psycopg.connect(database_url, autocommit=True) as conn:
        s = sql.Identifier(schema)
        conn.execute(
            sql.SQL(
                "create table {}.test_send (queue text, key text, window_no int,"
                " returned_id uuid, token text, seq bigint)"
            ).format(s)
        )
        conn.execute(sql.SQL("create sequence {}.test_send_seq").format(s))

    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES)
    targets = [_send_async, _send_async, _send_sync, _send_sync]
    procs = [
        ctx.Process(target=target, args=(database_url, schema, n, barrier))
        for n, target in enumerate(targets)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        await asyncio.to_thread(proc.join, 120)
    assert [p.exitcode for p in procs] == [0] * PROCESSES

    sent = _query(database_url, schema, "select count(*), count(distinct queue) from {s}.test_send")
    assert sent[0][0] > PROCESSES * ROUNDS * 0.4 and sent[0][1] == len(QUEUES)
    assert _query(
        database_url, schema, "select count(*) from {s}.test_send where returned_id is null"
    ) == [(0,)]
    assert _query(database_url, schema, "select count(*) from {s}.job where state <> 'queued'") == [
        (0,)
    ]

    # Every committed send has exactly one job for its place (never zero, never two), no
    # job exists without a committed send (nothing of a rolled-back one survives), each
    # send returned its place's job, and that job holds the data of the key's first
    # committed send, or with debounce of its last.
    assert (
        _invariant(
            database_url,
            schema,
            "zero or two jobs",
            """
        select s.queue, s.key, s.w, count(distinct j.id)
        from (select distinct queue, key, w from sends) s
        left join jobs j using (queue, key, w)
        group by 1, 2, 3
        having count(distinct j.id) <> 1
    """,
        )
        == []
    )
    assert (
        _invariant(
            database_url,
            schema,
            "job of a rolled-back send",
            """
        select j.* from jobs j
        where not exists (select 1 from sends s
                          where (s.queue, s.key, s.w) = (j.queue, j.key, j.w))
    """,
        )
        == []
    )
    assert (
        _invariant(
            database_url,
            schema,
            "wrong returned id",
            """
        select s.queue, s.key, s.w, s.returned_id, j.id
        from sends s join jobs j using (queue, key, w)
        where s.returned_id <> j.id
    """,
        )
        == []
    )
    assert (
        _invariant(
            database_url,
            schema,
            "wrong data",
            """
        select s.queue, s.key, s.w, s.token, j.token
        from (select sends.*,
                     row_number() over (
                         partition by queue, key, w
                         order by case when queue in ('debounce', 'debounce_short')
                                       then -seq else seq end) as rank
              from sends) s
        join jobs j using (queue, key, w)
        where s.rank = 1 and s.token <> j.token
    """,
        )
        == []
    )


def _invariant(url: str, schema: str, what: str, query: str) -> list[tuple[Any, ...]]:
    """Rows breaking an invariant; ``sends`` and ``jobs`` give each its place (queue, key,
    w), where the window w only counts on the queues whose jobs are one per window."""
    places = """
        with sends as (
            select queue, key, returned_id, token, seq,
                   case when queue in ('throttle', 'debounce') then window_no else 0 end as w
            from {s}.test_send
        ),
        jobs as (
            select id, queue, singleton_key as key, state, data->>'t' as token,
                   case when queue in ('throttle', 'debounce')
                         and coalesce(singleton_on, debounce_on) > %(t0)s then 1 else 0 end as w
            from {s}.job
        )
    """
    with psycopg.connect(url) as conn:
        text = sql.SQL(places + query).format(s=sql.Identifier(schema))
        return conn.execute(text, {"t0": T0}).fetchall()


# -- one active job per key across worker processes ----------------------------------------

RUN_KEYS = 8
RUN_JOBS = 200


def _drain(url: str, schema: str) -> None:
    async def main() -> None:
        async def handler(job: Job) -> dict[str, float]:
            started = time.time()
            await asyncio.sleep(0.002 + random.random() * 0.006)
            return {"start": started, "end": time.time()}

        async with QueueClient(url, schema=schema, maintenance_interval=0.5) as client:
            await client.work("q", handler, concurrency=8, poll_interval=0.05)
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                if (await client.stats("q"))[0].completed >= RUN_JOBS:
                    break
                await asyncio.sleep(0.05)

    asyncio.run(main())


@pytest.mark.slow
async def test_singleton_policy_runs_one_job_per_key_across_four_worker_processes(
    database_url: str, schema: str
) -> None:
    async with QueueClient(database_url, schema=schema, maintenance=False) as client:
        await client.create_queue("q", policy="singleton")
        await client.send_many(
            "q", [JobSpec({"n": n}, singleton_key=f"k{n % RUN_KEYS}") for n in range(RUN_JOBS)]
        )

    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_drain, args=(database_url, schema)) for _ in range(PROCESSES)]
    for proc in procs:
        proc.start()
    worst = 0
    sampled = sql.SQL(
        "select coalesce(max(n), 0) from (select count(*) as n from {}.job"
        " where state = 'active' group by singleton_key) a"
    ).format(sql.Identifier(schema))
    with psycopg.connect(database_url, autocommit=True) as conn:
        while any(p.is_alive() for p in procs):
            row = conn.execute(sampled).fetchone()
            worst = max(worst, row[0] if row else 0)
            await asyncio.sleep(0.005)
    assert [p.exitcode for p in procs] == [0] * PROCESSES
    assert worst <= 1

    done = _query(
        database_url,
        schema,
        "select singleton_key, (data->>'n')::int, (output->>'start')::float8,"
        " (output->>'end')::float8 from {s}.job where state = 'completed'",
    )
    assert len(done) == RUN_JOBS
    by_key: dict[str, list[tuple[int, float, float]]] = {}
    for key, n, start, end in done:
        by_key.setdefault(key, []).append((n, start, end))
    for key, runs in by_key.items():
        runs.sort(key=lambda r: r[1])
        # One at a time (each handler started after the previous one ended), in send order.
        assert all(a[2] <= b[1] for a, b in itertools.pairwise(runs)), key
        assert [r[0] for r in runs] == sorted(r[0] for r in runs), key
