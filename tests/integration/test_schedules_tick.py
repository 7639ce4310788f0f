"""Ticks: due fires become jobs exactly once, on the database's (here a frozen) clock;
missed fires follow the catch-up rule; edits and concurrent ticks never double-fire."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from croniter import croniter
from psycopg import sql

from patchbay.queue import FrozenClock, QueueClient, Schedules
from patchbay.queue.schedules import fire_job_id

T0 = datetime(2025, 6, 2, 9, 59, 30, tzinfo=UTC)


def at(hour: int, minute: int, second: int = 0) -> datetime:
    return datetime(2025, 6, 2, hour, minute, second, tzinfo=UTC)


class Env:
    """A frozen-clock client on the test's schema, and a way to look at the rows."""

    def __init__(self, client: QueueClient, clock: FrozenClock, url: str, schema: str) -> None:
        self.client = client
        self.clock = clock
        self.url = url
        self.schema = schema

    async def query(self, text: str, *params: Any) -> list[tuple[Any, ...]]:
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
            await conn.execute(sql.SQL("set search_path to {}").format(sql.Identifier(self.schema)))
            cur = await conn.execute(text.encode(), params)
            return await cur.fetchall() if cur.description else []

    async def jobs(self, queue: str = "reports") -> list[tuple[Any, ...]]:
        return await self.query(
            "select id, data, priority, retry_limit, start_after, created_at, group_key"
            " from job where queue = %s order by created_at, id",
            queue,
        )

    async def tick_at(self, when: datetime) -> Any:
        self.clock.set(when)
        return await self.client.schedules.tick()


@pytest.fixture
async def env(database_url: str, schema: str) -> AsyncIterator[Env]:
    clock = FrozenClock(T0)
    async with QueueClient(database_url, schema=schema, clock=clock, maintenance=False) as c:
        await c.create_queue("reports")
        yield Env(c, clock, database_url, schema)


@pytest.mark.smoke
async def test_a_fire_becomes_one_job_at_its_time(env: Env) -> None:
    client = env.client
    await client.schedule("r", "*/5 * * * *", "reports", {"kind": "r"}, priority=3, retry_limit=7)
    assert (await env.tick_at(at(9, 59, 59))).enqueued == 0
    assert await env.jobs() == []

    result = await env.tick_at(at(10, 0))
    assert (result.due, result.enqueued, result.skipped) == (1, 1, 0)
    jobs = await env.jobs()
    assert len(jobs) == 1
    job_id, data, priority, retry_limit, start_after, created_at, _ = jobs[0]
    assert job_id == fire_job_id("r", at(10, 0))
    assert (data, priority, retry_limit) == ({"kind": "r"}, 3, 7)
    assert start_after == created_at == at(10, 0)

    # Later ticks before the next fire, and repeated ticks at the same instant, add nothing.
    for when in (at(10, 0), at(10, 0, 30), at(10, 4, 59)):
        assert (await env.tick_at(when)).enqueued == 0
    assert len(await env.jobs()) == 1

    info = await client.schedules.get("r")
    assert info.next_fire_at == at(10, 5)
    assert info.last_fire_at == at(10, 0)
    assert info.last_job_id == job_id
    fires = await client.schedules.fires("r")
    assert [(f.fire_at, f.covers_from, f.job_id) for f in fires] == [(at(10, 0), at(10, 0), job_id)]


async def test_a_late_tick_within_the_grace_still_sends_the_fire(env: Env) -> None:
    await env.client.schedule("r", "*/5 * * * *", "reports")
    result = await env.tick_at(at(10, 0, 59))
    assert result.enqueued == 1
    assert result.fires[0].fire_at == at(10, 0)
    # The job is created at the tick (its start time), keyed on the fire time.
    assert (await env.jobs())[0][0] == fire_job_id("r", at(10, 0))


async def test_send_options_reach_the_job(env: Env) -> None:
    await env.client.schedule(
        "r", "0 10 * * *", "reports", [1, 2], start_after=90, group="tenant-7", expire_in=30
    )
    await env.tick_at(at(10, 0, 1))
    [(_, data, _, _, start_after, created_at, group_key)] = await env.jobs()
    assert data == [1, 2]
    assert created_at == at(10, 0, 1)
    assert start_after == at(10, 0, 1) + timedelta(seconds=90)
    assert group_key == "tenant-7"


async def test_a_fire_is_a_send_queue_policies_and_events_apply(env: Env) -> None:
    client = env.client
    await client.create_queue("tenant-sync", policy="short", events=True)
    await client.schedule("sync-t1", "*/5 * * * *", "tenant-sync", singleton_key="t1")
    await env.tick_at(at(10, 0, 1))
    [first] = await env.jobs("tenant-sync")
    events = await client.job_events(first[0])
    assert [str(e.kind) for e in events] == ["created"]
    # The 10:00 job has not started: the "short" policy refuses a second queued job of
    # key t1. The fire is still handled once (recorded), and no second job appears.
    result = await env.tick_at(at(10, 5, 1))
    assert len(result.fires) == 1
    assert [j[0] for j in await env.jobs("tenant-sync")] == [first[0]]


async def test_missed_fires_are_skipped_without_catch_up(env: Env) -> None:
    client = env.client
    await client.schedule("r", "*/5 * * * *", "reports")
    # No daemon ran from 09:59:30 to 11:02: twelve fires were missed, the latest 2 min ago.
    result = await env.tick_at(at(11, 2))
    assert (result.enqueued, result.skipped) == (0, 1)
    assert await env.jobs() == []
    [fire] = await client.schedules.fires("r")
    assert (fire.fire_at, fire.covers_from, fire.job_id) == (at(11, 0), at(10, 0), None)
    assert (await client.schedules.get("r")).next_fire_at == at(11, 5)
    # The next fire is on time again.
    assert (await env.tick_at(at(11, 5, 10))).enqueued == 1
    assert [j[0] for j in await env.jobs()] == [fire_job_id("r", at(11, 5))]


async def test_after_downtime_the_latest_fire_is_sent_if_on_time(env: Env) -> None:
    await env.client.schedule("r", "*/5 * * * *", "reports")
    result = await env.tick_at(at(11, 0, 20))
    assert (result.enqueued, result.skipped) == (1, 0)
    [fire] = result.fires
    assert (fire.fire_at, fire.covers_from) == (at(11, 0), at(10, 0))
    assert len(await env.jobs()) == 1


async def test_catch_up_sends_exactly_one_job_for_the_missed_fires(env: Env) -> None:
    client = env.client
    await client.schedule("r", "*/5 * * * *", "reports", {"n": 1}, catch_up=True)
    result = await env.tick_at(at(13, 2))  # 37 fires missed, 10:00 to 13:00
    assert (result.enqueued, result.skipped) == (1, 0)
    [fire] = result.fires
    assert (fire.fire_at, fire.covers_from) == (at(13, 0), at(10, 0))
    jobs = await env.jobs()
    assert [j[0] for j in jobs] == [fire_job_id("r", at(13, 0))]
    assert jobs[0][1] == {"n": 1}
    # Nothing more for the missed fires, however many ticks follow.
    for when in (at(13, 2), at(13, 3), at(13, 4, 59)):
        assert (await env.tick_at(when)).enqueued == 0
    assert (await env.tick_at(at(13, 5))).enqueued == 1
    assert len(await env.jobs()) == 2


async def test_fires_come_from_the_database_clock(database_url: str, schema: str) -> None:
    async with QueueClient(database_url, schema=schema, maintenance=False) as client:
        await client.create_queue("reports")
        info = await client.schedule("r", "* * * * *", "reports")
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            cur = await conn.execute("select now()")
            row = await cur.fetchone()
            assert row is not None
            db_now: datetime = row[0]
            assert (
                db_now - timedelta(seconds=5) < info.next_fire_at <= db_now + timedelta(minutes=1)
            )
            # Pretend the minute has come: the database clock says the fire is due.
            await conn.execute(
                sql.SQL("update {}.schedule set next_fire_at = date_trunc('minute', now())").format(
                    sql.Identifier(schema)
                )
            )
        result = await client.schedules.tick()
        assert result.enqueued == 1
        fire_at = result.fires[0].fire_at
        assert fire_at.second == 0 and fire_at.microsecond == 0
        assert abs(fire_at - db_now) < timedelta(minutes=2)
        assert (await client.schedules.get("r")).next_fire_at == fire_at + timedelta(minutes=1)


async def test_concurrent_ticks_at_the_same_instant_fire_once(
    env: Env, database_url: str, schema: str
) -> None:
    for index in range(10):
        await env.client.schedule(f"s{index}", f"{index}-59/10 * * * *", "reports")
    clients = [
        QueueClient(database_url, schema=schema, clock=env.clock, maintenance=False)
        for _ in range(5)
    ]
    for c in clients:
        await c.open()
    try:
        for step in range(1, 40):
            env.clock.set(T0 + timedelta(seconds=30 * step))
            await asyncio.gather(*(c.schedules.tick() for c in clients))
    finally:
        for c in clients:
            await c.close()
    rows = await env.query("select id from job where queue = 'reports'")
    fires = await env.query("select schedule, fire_at, job_id from schedule_fire")
    assert len(rows) == len(fires) == 10 * 2  # 10:00..10:19:00, each schedule twice
    assert {r[0] for r in rows} == {f[2] for f in fires}


async def test_a_repeated_enqueue_is_a_no_op_at_the_job_level(env: Env) -> None:
    await env.client.schedule("r", "*/5 * * * *", "reports")
    await env.tick_at(at(10, 0, 1))
    # Lose the fire row (pruned) and move the schedule back to the fire it already sent:
    # the fire is claimed again, but the job id is the same, so no second job.
    await env.query("delete from schedule_fire")
    await env.query("update schedule set next_fire_at = %s", at(10, 0))
    result = await env.tick_at(at(10, 0, 2))
    assert len(result.fires) == 1
    assert len(await env.jobs()) == 1


async def test_recreating_a_schedule_with_a_clock_behind_does_not_fire_again(
    env: Env,
) -> None:
    client = env.client
    await client.schedule("r", "*/5 * * * *", "reports", {"v": 1})
    await env.tick_at(at(10, 0, 1))
    await client.unschedule("r")
    # A daemon whose clock lags re-creates it: its next fire is the one already sent.
    env.clock.set(at(9, 59, 50))
    again = await client.schedule("r", "*/5 * * * *", "reports", {"v": 2})
    assert again.next_fire_at == at(10, 0)
    result = await env.tick_at(at(10, 0, 3))
    assert result.enqueued == 0
    assert [j[1] for j in await env.jobs()] == [{"v": 1}]
    assert (await client.schedules.get("r")).next_fire_at == at(10, 5)


async def test_a_broken_schedule_does_not_stop_the_others(env: Env) -> None:
    client = env.client
    await client.schedule("a-broken", "0 10 * * *", "reports")
    await client.schedule("b-fine", "0 10 * * *", "reports")
    await env.query(
        """update schedule set options = '{"priority": "high"}' where name = 'a-broken'"""
    )
    result = await env.tick_at(at(10, 0, 1))
    assert (result.due, result.enqueued, result.failed) == (2, 1, 1)
    assert [j[0] for j in await env.jobs()] == [fire_job_id("b-fine", at(10, 0))]
    # It stays due, and fixing it resumes it (its fire is still within the grace).
    await client.schedule("a-broken", "0 10 * * *", "reports")
    assert (await env.tick_at(at(10, 0, 30))).enqueued == 1


async def test_maintenance_passes_tick_the_schedules(env: Env) -> None:
    await env.client.schedule("r", "*/5 * * * *", "reports")
    env.clock.set(at(10, 0, 2))
    assert await env.client.maintenance.run_once()
    assert len(await env.jobs()) == 1
    assert env.client.schedules.enqueued == 1
    assert env.client.schedules.tick_done.is_set()


async def test_old_fire_rows_are_pruned(env: Env) -> None:
    await env.client.schedule("r", "*/5 * * * *", "reports")
    for minute in (0, 5, 10):
        await env.tick_at(at(10, minute))
    short = Schedules(env.client, fire_retention=3600)
    env.clock.set(at(11, 7))
    await short.tick()
    fires = await env.client.schedules.fires("r")
    # Rows of fires over an hour old (10:00, 10:05) are gone; 11:05 was missed (no job).
    assert [(f.fire_at, f.job_id is None) for f in fires] == [
        (at(11, 5), True),
        (at(10, 10), False),
    ]


async def test_data_and_equivalent_cron_edits_during_ticks_never_miss_or_double(
    env: Env, database_url: str, schema: str
) -> None:
    client = env.client
    await client.schedule("r", "*/5 * * * *", "reports", {"v": 0})
    tickers = [
        QueueClient(database_url, schema=schema, clock=env.clock, maintenance=False)
        for _ in range(3)
    ]
    for c in tickers:
        await c.open()
    rng = random.Random(7)
    forms = ["*/5 * * * *", "0-59/5 * * * *", "0,5,10,15,20,25,30,35,40,45,50,55 * * * *"]
    try:
        start = at(10, 0, 0)
        for step in range(2 * 60 * 6):  # two hours in 10-second steps
            env.clock.set(start + timedelta(seconds=10 * step))
            edit = client.schedule(
                "r",
                rng.choice(forms),
                "reports",
                {"v": step},
                catch_up=rng.random() < 0.5,
                priority=rng.randint(0, 3),
            )
            await asyncio.gather(edit, *(c.schedules.tick() for c in tickers))
    finally:
        for c in tickers:
            await c.close()
    fires = await env.query("select fire_at, job_id from schedule_fire order by fire_at")
    expected = croniter("*/5 * * * *", start - timedelta(seconds=1))
    wanted = [expected.get_next(datetime) for _ in range(24)]
    assert [f[0] for f in fires] == wanted
    assert all(f[1] is not None for f in fires)
    jobs = await env.jobs()
    assert sorted(j[0] for j in jobs) == sorted(f[1] for f in fires)
    assert (await client.schedules.get("r")).revision > 100
    # The edits really raced the ticks: some claims were lost to them and retried.
    assert sum(c.schedules.claims_lost for c in tickers) > 0


async def test_cron_changes_during_ticks_never_double_fire(
    env: Env, database_url: str, schema: str
) -> None:
    client = env.client
    await client.schedule("r", "*/2 * * * *", "reports")
    tickers = [
        QueueClient(database_url, schema=schema, clock=env.clock, maintenance=False)
        for _ in range(3)
    ]
    for c in tickers:
        await c.open()
    rng = random.Random(11)
    crons = ["*/2 * * * *", "*/3 * * * *", "1-59/4 * * * *"]
    try:
        start = at(10, 0, 0)
        for step in range(60 * 6):  # one hour in 10-second steps
            env.clock.set(start + timedelta(seconds=10 * step))
            calls: list[Any] = [c.schedules.tick() for c in tickers]
            if rng.random() < 0.3:
                calls.append(client.schedule("r", rng.choice(crons), "reports", {"s": step}))
            rng.shuffle(calls)
            await asyncio.gather(*calls)
    finally:
        for c in tickers:
            await c.close()
    fires = await env.query("select fire_at, job_id from schedule_fire order by fire_at")
    jobs = await env.jobs()
    fire_times = [f[0] for f in fires]
    assert len(fire_times) == len(set(fire_times)) > 15
    assert len(jobs) == len(fires)
    assert {j[0] for j in jobs} == {f[1] for f in fires}
    # Each fire is a time one of the expressions matches.
    for when in fire_times:
        assert any(croniter.match(c, when.replace(tzinfo=None)) for c in crons), when
