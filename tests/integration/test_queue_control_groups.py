"""Group concurrency, fair dispatch and rate limits (issue: queue control)."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from conftest import Eventually

from patchbay.queue import FrozenClock, InvalidOption, Job, JobSpec, JobState, QueueClient, Snooze


@pytest.mark.smoke
async def test_group_limit_is_never_exceeded_in_one_worker(
    client: QueueClient, eventually: Eventually
) -> None:
    await client.create_queue("g", group_limit=2)
    await client.set_group_limit("g", "big", 3)
    await client.send_many("g", [JobSpec({"g": f"k{i % 5}"}) for i in range(40)])
    for i in range(40):
        await client.send("g", {"g": f"k{i % 5}"}, group=f"k{i % 5}")
    for _ in range(12):
        await client.send("g", {"g": "big"}, group="big")
    active: Counter[str] = Counter()
    peak: Counter[str] = Counter()

    async def handler(job: Job) -> None:
        key = job.data["g"]
        active[key] += 1
        peak[key] = max(peak[key], active[key])
        await asyncio.sleep(0.01)
        active[key] -= 1

    worker = await client.work("g", handler, concurrency=50, poll_interval=0.05)
    await eventually(lambda: worker.completed == 92)
    # Ungrouped jobs (first 40) are unlimited; grouped ones respect their limit.
    assert all(peak[f"k{i}"] >= 1 for i in range(5))
    assert peak["big"] == 3
    for i in range(5):
        assert await client.group_active("g", f"k{i}") == 0


async def test_group_slots_freed_on_failure_cancel_and_release(
    client: QueueClient, eventually: Eventually
) -> None:
    await client.create_queue("g", retry_limit=0)
    gate = asyncio.Event()

    async def handler(job: Job) -> None:
        if job.data.get("fail"):
            raise RuntimeError("boom")
        await gate.wait()

    a = await client.send("g", {"fail": True}, group="x")
    b = await client.send("g", {}, group="x")
    worker = await client.work("g", handler, concurrency=5, poll_interval=0.05)
    await eventually(lambda: worker.failed == 1 and worker.running == 1)
    assert (await client.get_job(a)).state is JobState.FAILED
    assert (await client.get_job(b)).state is JobState.ACTIVE
    assert await client.group_active("g", "x") == 1
    await client.cancel(b)
    assert await client.group_active("g", "x") == 0
    c = await client.send("g", {}, group="x")
    await eventually(lambda: worker.running == 2)
    await worker.stop(grace=0)
    assert (await client.get_job(c)).state is JobState.QUEUED
    assert await client.group_active("g", "x") == 0


async def test_fair_queue_serves_keys_round_robin(
    client: QueueClient, eventually: Eventually
) -> None:
    await client.create_queue("f", fair=True)
    await client.send_many("f", [{"t": "a"} for _ in range(300)], fairness_key="a")
    await client.send_many("f", [{"t": "b"} for _ in range(10)], fairness_key="b")
    await client.send_many("f", [{"t": "c"} for _ in range(10)], fairness_key="c")
    order: list[str] = []

    async def handler(job: Job) -> None:
        order.append(job.data["t"])

    worker = await client.work("f", handler, concurrency=6, poll_interval=0.05)
    await eventually(lambda: worker.completed == 320)
    # b's and c's jobs all ran within the first 30 starts, not after a's 300.
    first = order[:30]
    assert first.count("b") == 10 and first.count("c") == 10


async def test_fairness_weight_gives_more_turns(
    client: QueueClient, eventually: Eventually
) -> None:
    await client.create_queue("f", fair=True)
    await client.set_fairness_weight("f", "heavy", 3)
    await client.send_many("f", [{"t": "heavy"} for _ in range(60)], fairness_key="heavy")
    await client.send_many("f", [{"t": "light"} for _ in range(60)], fairness_key="light")
    order: list[str] = []

    async def handler(job: Job) -> None:
        order.append(job.data["t"])

    worker = await client.work("f", handler, concurrency=8, poll_interval=0.05)
    await eventually(lambda: worker.completed == 120)
    first = Counter(order[:40])
    assert first["heavy"] >= 2 * first["light"]


async def test_rate_limit_holds_jobs_without_taking_slots(
    database_url: str, schema: str, eventually: Eventually
) -> None:
    clock = FrozenClock()
    async with QueueClient(database_url, schema=schema, clock=clock) as client:
        await client.create_queue("r")
        await client.set_rate_limit("tenant:a", 5, 60)
        await client.send_many("r", [{"i": i} for i in range(12)], rate_key="tenant:a")
        await client.send_many("r", [{"free": i} for i in range(3)])
        started: list[object] = []

        async def handler(job: Job) -> None:
            started.append(job.data)

        worker = await client.work("r", handler, concurrency=20, poll_interval=0.05)
        await eventually(lambda: worker.completed == 8)
        await asyncio.sleep(0.2)
        assert worker.completed == 8  # 5 tokens + 3 unlimited jobs
        clock.advance(12)  # one token back (5 per 60 s)
        await eventually(lambda: worker.completed == 9)
        clock.advance(60)
        await eventually(lambda: worker.completed == 14)
        await asyncio.sleep(0.2)
        assert worker.completed == 14
        limits = await client.rate_limits()
        assert limits[0]["key"] == "tenant:a" and limits[0]["available"] < 1


async def test_bad_control_input_is_rejected(client: QueueClient, eventually: Eventually) -> None:
    await client.create_queue("q")
    with pytest.raises(InvalidOption):
        await client.send("q", {}, group="")
    with pytest.raises(InvalidOption):
        await client.set_group_limit("q", "g", 0)
    with pytest.raises(InvalidOption):
        await client.set_rate_limit("k", 0, 1)
    with pytest.raises(InvalidOption):
        await client.set_rate_limit("k", 1, 0)
    with pytest.raises(InvalidOption):
        await client.create_queue("q2", group_limit=0)
    assert (await client.stats("q"))[0].queued == 0


async def test_explain_says_why_a_job_is_not_running(database_url: str, schema: str) -> None:
    clock = FrozenClock()
    async with QueueClient(database_url, schema=schema, clock=clock) as client:
        await client.create_queue("w", group_limit=1)
        await client.set_rate_limit("prov", 1, 60)
        later = await client.send("w", {}, start_after=30)
        why = await client.explain(later)
        assert why.codes == ["start_time"] and not why.runnable
        assert "in 30.0s" in why.reasons[0]

        first = await client.send("w", {}, group="g1")
        second = await client.send("w", {}, group="g1")
        async with client.pool.connection() as conn:
            await conn.execute(
                client.sql["job_fetch_available"],
                {"queue": "w", "limit": 10, "now": clock.now(), "after": None, "max_keys": 10},
            )
        assert (await client.explain(first)).codes == ["not_waiting"]
        held = await client.explain(second)
        assert held.codes == ["group_limit"]
        assert "1 of 1 jobs active" in held.reasons[0]

        a = await client.send("w", {}, rate_key="prov")
        b = await client.send("w", {}, rate_key="prov")
        async with client.pool.connection() as conn:
            await conn.execute(
                client.sql["job_fetch_available"],
                {"queue": "w", "limit": 10, "now": clock.now(), "after": None, "max_keys": 10},
            )
        assert (await client.explain(a)).state == "active"
        limited = await client.explain(b)
        assert limited.codes == ["rate_limit"]
        assert "next start allowed" in limited.reasons[0]

        free1 = await client.send("w", {"n": 1})
        free2 = await client.send("w", {"n": 2})
        assert (await client.explain(free1)).reasons == [
            "runnable now: the next free worker of its queue takes it"
        ]
        behind = await client.explain(free2)
        assert behind.runnable and behind.codes == ["waiting_for_worker"]


async def test_snooze_puts_the_job_back_without_spending_an_attempt(
    database_url: str, schema: str, eventually: Eventually
) -> None:
    clock = FrozenClock()
    async with QueueClient(database_url, schema=schema, clock=clock) as client:
        await client.create_queue("s", retry_limit=0)
        job_id = await client.send("s", {})
        attempts: list[int] = []

        async def handler(job: Job) -> None:
            attempts.append(job.attempt)
            if len(attempts) == 1:
                raise Snooze(30, "provider asked us to wait")

        worker = await client.work("s", handler, concurrency=2, poll_interval=0.05)
        await eventually(lambda: worker.snoozed == 1)
        await worker.drain()
        record = await client.get_job(job_id)
        assert record.state is JobState.QUEUED and record.attempt == 0 and record.error is None
        assert (record.start_after - clock.now()).total_seconds() == 30
        clock.advance(31)
        await eventually(lambda: worker.completed == 1)
        assert attempts == [1, 1]  # retry_limit=0, yet it ran again: no attempt was spent


async def test_a_non_retryable_exception_fails_the_job_at_once(
    client: QueueClient, eventually: Eventually
) -> None:
    class NeedsAPerson(Exception):
        retryable = False

    await client.create_queue("n", retry_limit=5)
    job_id = await client.send("n", {})

    async def handler(job: Job) -> None:
        raise NeedsAPerson("401 Unauthorized")

    worker = await client.work("n", handler, concurrency=1, poll_interval=0.05)
    await eventually(lambda: worker.failed == 1)
    record = await client.get_job(job_id)
    assert record.state is JobState.FAILED and record.attempt == 1
    assert record.error is not None and record.error["message"] == "401 Unauthorized"


async def test_send_many_takes_keys_per_job(client: QueueClient) -> None:
    await client.create_queue("k", fair=True)
    ids = await client.send_many(
        "k",
        [
            JobSpec({}, group="g1", fairness_key="t1", rate_key="r1"),
            JobSpec({}, group="g2"),
            JobSpec({}),
        ],
        fairness_key="default-tenant",
        group="default-group",
    )
    async with client.pool.connection() as conn:
        cur = await conn.execute(
            f'select id, group_key, fairness_key, rate_key from "{client.schema}".job'
        )
        rows = {r[0]: r[1:] for r in await cur.fetchall()}
    assert rows[ids[0]] == ("g1", "t1", "r1")
    assert rows[ids[1]] == ("g2", "default-tenant", None)
    assert rows[ids[2]] == ("default-group", "default-tenant", None)
    with pytest.raises(InvalidOption):
        await client.send_many("k", [JobSpec({}, group="")])
