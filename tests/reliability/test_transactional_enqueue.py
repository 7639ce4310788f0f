"""Transactional enqueue: business transactions each write an order row and send its job
with ``conn=`` in the same transaction, half of them rolled back at random, from 50
concurrent senders (40 async connections, 10 threads with the sync client). 0 jobs exist
for rolled-back transactions, 0 are missing for committed ones, and the keyed sends (an
``exclusive`` queue, keys shared between senders) leave exactly one job per key that had a
committed send, never one for a key whose sends all rolled back.

The deeper singleton-key races (every policy, returned ids, which send's data wins) are
tests/integration/test_singleton_processes.py; group limits across worker processes are
tests/integration/test_queue_control_processes.py.

Short: 1,000 transactions. Long: 5,000.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from typing import Any

import psycopg
import pytest
from psycopg import sql
from reliability_support import create_queue, pick, query

from patchbay.queue import JobSpec, QueueClient, SyncQueueClient

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(pick(240, 900))]

TRANSACTIONS = pick(1000, 5000)
ASYNC_SENDERS = 40
SYNC_SENDERS = 10
KEYS = 25  # shared keys

_ORDER = (
    "insert into {s}.test_order (id, sender, key, job_id, keyed_job_id) values (%s, %s, %s, %s, %s)"
)


def _plan(n: int) -> tuple[bool, str | None, bool]:
    """(roll back?, singleton key or None, two jobs with send_many?) of transaction n."""
    rng = random.Random(n)
    draw = rng.random()
    # Shared keys (raced by many senders) and keys of one send (that may roll back).
    key = f"k{rng.randrange(KEYS)}" if draw < 0.3 else f"u{n}" if draw < 0.4 else None
    return rng.random() < 0.5, key, rng.random() < 0.2


def _data(n: int) -> list[Any]:
    return [{"order": n}, {"order": n, "second": True}]


async def _async_sender(
    url: str, schema: str, client: QueueClient, sender: int, todo: list[int]
) -> None:
    order = sql.SQL(_ORDER).format(s=sql.Identifier(schema))
    async with await psycopg.AsyncConnection.connect(url) as conn:
        while todo:
            n = todo.pop()
            rollback, key, many = _plan(n)
            async with conn.transaction(force_rollback=rollback):
                if many:
                    ids = await client.send_many("tx", _data(n), conn=conn)
                    job_id = ids[0]
                else:
                    job_id = await client.send("tx", _data(n)[0], conn=conn)
                keyed = None
                if key is not None:
                    keyed = await client.send(
                        "tx_keyed", {"order": n}, singleton_key=key, conn=conn
                    )
                await conn.execute(order, (n, sender, key, job_id, keyed))
                await asyncio.sleep(random.random() * 0.003)


def _sync_sender(url: str, schema: str, sender: int, todo: list[int], lock: threading.Lock) -> None:
    order = sql.SQL(_ORDER).format(s=sql.Identifier(schema))
    with SyncQueueClient(url, schema=schema) as client, psycopg.connect(url) as conn:
        while True:
            with lock:
                if not todo:
                    return
                n = todo.pop()
            rollback, key, many = _plan(n)
            with conn.transaction(force_rollback=rollback):
                if many:
                    job_id = client.send_many("tx", _data(n), conn=conn)[0]
                else:
                    job_id = client.send("tx", _data(n)[0], conn=conn)
                keyed = None
                if key is not None:
                    keyed = client.send_many(
                        "tx_keyed", [JobSpec({"order": n}, singleton_key=key)], conn=conn
                    )[0]
                conn.execute(order, (n, sender, key, job_id, keyed))
                time.sleep(random.random() * 0.003)


async def test_transactional_enqueue_under_random_rollbacks(database_url, schema, report):
    url = database_url
    create_queue(url, schema, "tx")
    create_queue(url, schema, "tx_keyed", policy="exclusive")
    query(
        url,
        schema,
        "create table {s}.test_order (id int primary key, sender int, key text,"
        " job_id uuid, keyed_job_id uuid)",
    )
    todo = list(range(TRANSACTIONS))
    random.Random(1).shuffle(todo)
    lock = threading.Lock()
    started = time.monotonic()
    async with QueueClient(url, schema=schema, maintenance=False) as client:
        threads = [
            asyncio.to_thread(_sync_sender, url, schema, ASYNC_SENDERS + s, todo, lock)
            for s in range(SYNC_SENDERS)
        ]
        tasks = [_async_sender(url, schema, client, s, todo) for s in range(ASYNC_SENDERS)]
        await asyncio.gather(*tasks, *threads)
    elapsed = time.monotonic() - started

    def one(text: str) -> int:
        return int(query(url, schema, text)[0][0])

    committed = one("select count(*) from {s}.test_order")
    expected_committed = sum(not _plan(n)[0] for n in range(TRANSACTIONS))
    # Jobs whose order row does not exist: their transaction rolled back.
    from_rolled_back = one(
        "select count(*) from {s}.job j where not exists"
        " (select 1 from {s}.test_order o where o.id = (j.data->>'order')::int)"
    )
    # Committed orders without their job(s), or with a returned id that is not a job.
    missing = one(
        "select count(*) from {s}.test_order o where not exists"
        " (select 1 from {s}.job j where j.id = o.job_id and j.queue = 'tx'"
        "  and (j.data->>'order')::int = o.id)"
    )
    expected_jobs = sum((2 if _plan(n)[2] else 1) for n in range(TRANSACTIONS) if not _plan(n)[0])
    tx_jobs = one("select count(*) from {s}.job where queue = 'tx'")
    keys_committed = one("select count(distinct key) from {s}.test_order where key is not null")
    bad_keys = query(
        url,
        schema,
        "select k.key, count(j.id) from (select distinct key from {s}.test_order"
        " where key is not null) k left join {s}.job j on j.queue = 'tx_keyed'"
        " and j.singleton_key = k.key group by k.key having count(j.id) <> 1",
    )
    keyed_jobs = one("select count(*) from {s}.job where queue = 'tx_keyed'")
    keys_sent = len({k for n in range(TRANSACTIONS) if (k := _plan(n)[1]) is not None})
    wrong_holder = one(
        "select count(*) from {s}.test_order o where o.key is not null and not exists"
        " (select 1 from {s}.job j where j.id = o.keyed_job_id and j.singleton_key = o.key)"
    )
    report(
        transactions=TRANSACTIONS,
        senders=ASYNC_SENDERS + SYNC_SENDERS,
        committed=committed,
        rolled_back=TRANSACTIONS - committed,
        jobs=tx_jobs,
        jobs_from_rolled_back=from_rolled_back,
        missing_for_committed=missing,
        keys_sent=keys_sent,
        keys_with_committed_sends=keys_committed,
        keyed_jobs=keyed_jobs,
        keys_without_exactly_one_job=len(bad_keys),
        keyed_sends_returning_wrong_id=wrong_holder,
        elapsed_s=round(elapsed, 2),
    )
    assert committed == expected_committed
    assert from_rolled_back == 0
    assert missing == 0
    assert tx_jobs == expected_jobs
    assert bad_keys == []
    assert keyed_jobs == keys_committed < keys_sent
    assert wrong_holder == 0
