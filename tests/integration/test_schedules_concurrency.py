"""Exactly-once across processes: five scheduler processes, each with its own client and its
own copy of a simulated clock stepped through the same instants, tick 50 schedules over
three and a half hours of fire times (across the spring-forward of Europe/Berlin and
Europe/London): every expected fire is enqueued once, none twice, none missed."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest
from croniter import croniter
from psycopg import sql

from patchbay.queue import FrozenClock, QueueClient
from patchbay.queue.schedules import fire_job_id

TICKER = Path(__file__).with_name("schedule_ticker.py")
PROCESSES = 5
START = datetime(2025, 3, 30, 0, 0, tzinfo=UTC)  # Berlin and London spring forward at 01:00
END = START + timedelta(hours=3, minutes=30)
STEP_S = 15.0

CRONS = [
    "* * * * *",
    "*/2 * * * *",
    "*/5 * * * *",
    "*/7 * * * *",
    "15,45 * * * *",
    "0 * * * *",
    "30 2 * * *",  # 02:30 does not exist in Berlin that night: fires at 03:00 CEST
    "0-59/10 2-3 * * *",
    "*/20 1-4 * * *",
    "5 */2 * * *",
]
ZONES = ["UTC", "Europe/Berlin", "Europe/London", "America/New_York", "Australia/Lord_Howe"]
TRANSITION_ZONES = {"Europe/Berlin", "Europe/London"}


def first_instant_reading(wall: datetime, zone: ZoneInfo) -> datetime:
    """The documented DST rule: the first instant the zone's clocks read ``wall`` or later."""
    found = []
    for fold in (0, 1):
        instant = wall.replace(tzinfo=zone, fold=fold).astimezone(UTC)
        if instant.astimezone(zone).replace(tzinfo=None) == wall:
            found.append(instant)
    if found:
        return min(found)
    instant = wall.replace(tzinfo=zone, fold=1).astimezone(UTC).replace(second=0)
    while instant.astimezone(zone).replace(tzinfo=None) < wall:
        instant += timedelta(minutes=1)
    return instant


def expected_fires(expression: str, tz: str) -> list[datetime]:
    """croniter's fire list in [START, END] (the processes' last tick is at END). Across a
    DST transition croniter's own zone handling skips gap times (it drops 02:15 and 02:45
    for "15,45 * * * *"), so there croniter's wall-clock matches are mapped by the
    documented rule instead."""
    zone = ZoneInfo(tz)
    if tz not in TRANSITION_ZONES:
        it = croniter(expression, (START - timedelta(seconds=1)).astimezone(zone))
        fires = []
        while (fire := it.get_next(datetime).astimezone(UTC)) <= END:
            fires.append(fire)
        return fires
    walls = croniter(expression, (START - timedelta(hours=3)).astimezone(zone).replace(tzinfo=None))
    last_wall = (END + timedelta(hours=3)).astimezone(zone).replace(tzinfo=None)
    instants: set[datetime] = set()
    while (wall := walls.get_next(datetime)) < last_wall:
        instants.add(first_instant_reading(wall, zone))
    return sorted(i for i in instants if START <= i <= END)


def test_expected_lists_agree_with_croniter_away_from_the_gap() -> None:
    # Outside the gap hour croniter's zone-aware list and the rule's list are the same.
    for tz in TRANSITION_ZONES:
        zone = ZoneInfo(tz)
        for expression in CRONS:
            it = croniter(expression, (START - timedelta(seconds=1)).astimezone(zone))
            native = []
            while (fire := it.get_next(datetime).astimezone(UTC)) <= END:
                native.append(fire)
            gap = (datetime(2025, 3, 30, 1, tzinfo=UTC), datetime(2025, 3, 30, 1, 1, tzinfo=UTC))
            ours = expected_fires(expression, tz)
            assert [f for f in native if not gap[0] <= f < gap[1]] == [
                f for f in ours if not gap[0] <= f < gap[1]
            ]


@pytest.mark.slow
async def test_five_scheduler_processes_fire_each_time_exactly_once(
    database_url: str, schema: str
) -> None:
    names: dict[str, tuple[str, str]] = {}
    async with QueueClient(
        database_url, schema=schema, clock=FrozenClock(START - timedelta(seconds=1))
    ) as client:
        await client.create_queue("cron")
        for c_index, expression in enumerate(CRONS):
            for z_index, tz in enumerate(ZONES):
                name = f"s{c_index:02d}-{z_index}"
                names[name] = (expression, tz)
                await client.schedule(name, expression, "cron", {"name": name}, tz=tz)
    assert len(names) == 50

    steps = int((END - START).total_seconds() / STEP_S)
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(TICKER),
            database_url,
            schema,
            START.isoformat(),
            str(STEP_S),
            str(steps),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(PROCESSES)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            ready = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
            assert ready.strip() == b"ready"
        for proc in procs:  # go, all at once
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
        await asyncio.gather(*(p.stdin.drain() for p in procs if p.stdin is not None))
        outputs = await asyncio.wait_for(
            asyncio.gather(*(p.communicate() for p in procs)), timeout=240
        )
        assert [p.returncode for p in procs] == [0] * PROCESSES
        reports = [json.loads(out.decode().strip().splitlines()[-1]) for out, _ in outputs]
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    expected = {name: expected_fires(expression, tz) for name, (expression, tz) in names.items()}
    total = sum(len(f) for f in expected.values())
    assert total > 1500

    ident = sql.Identifier(schema)
    with psycopg.connect(database_url) as conn:
        fire_rows = conn.execute(
            sql.SQL(
                "select schedule, fire_at, covers_from, job_id from {}.schedule_fire"
                " order by schedule, fire_at"
            ).format(ident)
        ).fetchall()
        job_rows = conn.execute(
            sql.SQL("select id, data from {}.job where queue = 'cron'").format(ident)
        ).fetchall()

    actual: dict[str, list[datetime]] = {name: [] for name in names}
    for schedule, fire_at, covers_from, job_id in fire_rows:
        # Each fire was sent on its own (no fire was missed and folded into a later one).
        assert covers_from == fire_at, (schedule, fire_at)
        assert job_id == fire_job_id(schedule, fire_at)
        actual[schedule].append(fire_at)
    missed = {n: sorted(set(expected[n]) - set(actual[n])) for n in names}
    extra = {n: sorted(set(actual[n]) - set(expected[n])) for n in names}
    assert {n: m for n, m in missed.items() if m} == {}
    assert {n: e for n, e in extra.items() if e} == {}
    assert actual == expected

    # One job per fire, with the schedule's data; no duplicate ids.
    assert len(job_rows) == total
    assert {row[0] for row in job_rows} == {
        fire_job_id(name, fire) for name, fires in expected.items() for fire in fires
    }
    assert all(row[1]["name"] in names for row in job_rows)

    # Every process ticked every step; together they enqueued each fire once, and they
    # really competed for the fires.
    assert all(r["ticks"] == steps + 2 for r in reports)
    assert sum(r["enqueued"] for r in reports) == total
    assert sum(r["skipped"] for r in reports) == 0
    assert sum(1 for r in reports if r["enqueued"] > 0) >= 2
