"""Cron schedules through the client: define, read, preview, remove; bad input is a typed
error and writes nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from psycopg import sql

from patchbay.queue import (
    FrozenClock,
    InvalidName,
    InvalidOption,
    InvalidPayload,
    InvalidSchedule,
    QueueClient,
    QueueNotFound,
    ScheduleNotFound,
)

START = datetime(2025, 6, 2, 9, 59, 30, tzinfo=UTC)


@pytest.fixture
async def frozen(database_url: str, schema: str) -> Any:
    clock = FrozenClock(START)
    async with QueueClient(database_url, schema=schema, clock=clock, maintenance=False) as c:
        await c.create_queue("reports")
        yield c, clock


def _rows(database_url: str, schema: str, table: str) -> int:
    with psycopg.connect(database_url) as conn:
        query = sql.SQL("select count(*) from {}.{}").format(
            sql.Identifier(schema), sql.Identifier(table)
        )
        row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


async def test_schedule_get_list_preview_unschedule(frozen: Any) -> None:
    client, _ = frozen
    info = await client.schedule(
        "hourly-report", "0 * * * *", "reports", {"kind": "hourly"}, priority=5, expire_in=60
    )
    assert info.name == "hourly-report"
    assert info.cron == "0 * * * *"
    assert info.tz == "UTC"
    assert info.queue == "reports"
    assert info.data == {"kind": "hourly"}
    assert info.options == {"priority": 5, "expire_in": 60}
    assert info.catch_up is False
    assert info.revision == 1
    # The next fire is computed from the database clock (here the frozen one).
    assert info.next_fire_at == datetime(2025, 6, 2, 10, 0, tzinfo=UTC)
    assert info.last_fire_at is None

    assert await client.schedules.get("hourly-report") == info
    assert [s.name for s in await client.list_schedules()] == ["hourly-report"]
    assert await client.preview_schedule("hourly-report", 3) == [
        datetime(2025, 6, 2, hour, 0, tzinfo=UTC) for hour in (10, 11, 12)
    ]

    await client.unschedule("hourly-report")
    assert await client.list_schedules() == []
    with pytest.raises(ScheduleNotFound):
        await client.unschedule("hourly-report")
    with pytest.raises(ScheduleNotFound):
        await client.schedules.get("hourly-report")


async def test_preview_of_an_expression_in_a_zone(frozen: Any) -> None:
    client, _ = frozen
    berlin = ZoneInfo("Europe/Berlin")
    fires = await client.preview_schedule(cron="30 8 * * mon-fri", tz="Europe/Berlin", n=4)
    # 2 June 2025 is a Monday; 09:59:30 UTC is 11:59:30 in Berlin, past 08:30.
    assert fires == [datetime(2025, 6, day, 8, 30, tzinfo=berlin) for day in (3, 4, 5, 6)]
    assert all(f.tzinfo is not None and f.utcoffset() == timedelta(hours=2) for f in fires)
    with pytest.raises(InvalidOption):
        await client.preview_schedule("x", cron="* * * * *")
    with pytest.raises(InvalidOption):
        await client.preview_schedule()
    with pytest.raises(InvalidOption):
        await client.preview_schedule(cron="* * * * *", n=0)


async def test_aliases_and_zone_are_stored(frozen: Any) -> None:
    client, _ = frozen
    info = await client.schedule("daily", "@daily", "reports", tz="America/New_York")
    assert info.cron == "@daily"
    assert info.tz == "America/New_York"
    # Midnight in New York (EDT, UTC-4) after 09:59:30 UTC on 2 June.
    assert info.next_fire_at == datetime(2025, 6, 3, 4, 0, tzinfo=UTC)


async def test_reapplying_the_same_schedule_changes_nothing(frozen: Any) -> None:
    client, clock = frozen
    first = await client.schedule("r", "*/15 * * * *", "reports", {"a": 1})
    clock.advance(20 * 60)
    again = await client.schedule("r", "*/15 * * * *", "reports", {"a": 1})
    assert again == first
    assert again.revision == 1


async def test_editing_data_keeps_the_pending_fire(frozen: Any) -> None:
    client, clock = frozen
    first = await client.schedule("r", "*/15 * * * *", "reports", {"a": 1})
    assert first.next_fire_at == datetime(2025, 6, 2, 10, 0, tzinfo=UTC)
    # The 10:00 fire is due but not yet handled when the schedule is re-applied with new
    # data (a deploy): it must stay pending, not be skipped.
    clock.set(datetime(2025, 6, 2, 10, 0, 5, tzinfo=UTC))
    edited = await client.schedule(
        "r", "0-59/15 * * * *", "reports", {"a": 2}, catch_up=True, retry_limit=1
    )
    assert edited.revision == 2
    assert edited.next_fire_at == first.next_fire_at
    assert edited.data == {"a": 2}
    assert edited.cron == "0-59/15 * * * *"
    assert edited.catch_up is True
    assert edited.options == {"retry_limit": 1}
    assert edited.created_at == first.created_at
    assert edited.updated_at == clock.now()


async def test_editing_the_expression_counts_from_the_edit_time(frozen: Any) -> None:
    client, clock = frozen
    await client.schedule("r", "0 * * * *", "reports")
    clock.set(datetime(2025, 6, 2, 10, 7, tzinfo=UTC))
    edited = await client.schedule("r", "*/5 * * * *", "reports")
    assert edited.revision == 2
    assert edited.next_fire_at == datetime(2025, 6, 2, 10, 10, tzinfo=UTC)
    zoned = await client.schedule("r", "*/5 * * * *", "reports", tz="Asia/Kolkata")
    assert zoned.revision == 3
    assert zoned.next_fire_at == datetime(2025, 6, 2, 10, 10, tzinfo=UTC)


async def test_timedelta_options_are_stored_as_seconds(frozen: Any) -> None:
    client, _ = frozen
    info = await client.schedule(
        "r",
        "0 0 * * *",
        "reports",
        retry_delay=timedelta(minutes=2),
        start_after=timedelta(seconds=30),
        group="tenant-1",
    )
    assert info.options == {"retry_delay": 120.0, "start_after": 30.0, "group": "tenant-1"}


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"name": "bad name!"}, InvalidName),
        ({"name": ""}, InvalidName),
        ({"cron": "* * * *"}, InvalidSchedule),
        ({"cron": "* * * * * *"}, InvalidSchedule),
        ({"cron": "61 * * * *"}, InvalidSchedule),
        ({"cron": "0 0 30 2 *"}, InvalidSchedule),
        ({"cron": "R * * * *"}, InvalidSchedule),
        ({"cron": "H * * * *"}, InvalidSchedule),
        ({"cron": "every minute"}, InvalidSchedule),
        ({"cron": None}, InvalidSchedule),
        ({"tz": "Mars/Olympus_Mons"}, InvalidSchedule),
        ({"tz": "../../etc/passwd"}, InvalidSchedule),
        ({"tz": ""}, InvalidSchedule),
        ({"queue": "nope"}, QueueNotFound),
        ({"queue": "bad queue!"}, InvalidName),
        ({"data": {"x": float("nan")}}, InvalidPayload),
        ({"data": {"x": object()}}, InvalidPayload),
        ({"catch_up": "yes"}, InvalidOption),
        ({"priority": "high"}, InvalidOption),
        ({"retry_limit": -1}, InvalidOption),
        ({"expire_in": 0}, InvalidOption),
        ({"colour": "red"}, InvalidOption),
        ({"id": "6f1c1f2e-58b4-4a4e-9d0b-3c4f4f1d2a10"}, InvalidOption),
        ({"start_after": datetime(2030, 1, 1, tzinfo=UTC)}, InvalidOption),
        ({"group": ""}, InvalidOption),
        ({"debounce": 60, "singleton_key": "k"}, InvalidOption),
        ({"throttle": 60}, InvalidOption),  # a window needs a key
        ({"singleton_key": ""}, InvalidOption),
    ],
)
async def test_bad_input_is_a_typed_error_and_writes_nothing(
    frozen: Any, database_url: str, schema: str, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    client, _ = frozen
    call: dict[str, Any] = {"name": "s", "cron": "*/5 * * * *", "queue": "reports", **kwargs}
    with pytest.raises(error):
        await client.schedule(**call)
    assert await client.list_schedules() == []
    assert _rows(database_url, schema, "schedule") == 0


async def test_a_bad_edit_leaves_the_schedule_as_it_was(frozen: Any) -> None:
    client, _ = frozen
    before = await client.schedule("s", "*/5 * * * *", "reports", {"v": 1})
    for bad in (
        {"cron": "nope"},
        {"queue": "missing"},
        {"tz": "Nowhere/City"},
        {"priority": 1.5},
    ):
        call: dict[str, Any] = {"cron": "*/5 * * * *", "queue": "reports", "data": {"v": 2}}
        with pytest.raises((InvalidSchedule, QueueNotFound, InvalidOption)):
            await client.schedule("s", **{**call, **bad})
    assert await client.schedules.get("s") == before


async def test_deleting_the_queue_deletes_its_schedules(frozen: Any) -> None:
    client, _ = frozen
    await client.create_queue("other")
    await client.schedule("a", "* * * * *", "reports")
    await client.schedule("b", "* * * * *", "other")
    await client.delete_queue("reports")
    assert [s.name for s in await client.list_schedules()] == ["b"]


async def test_schedule_json_is_plain(frozen: Any) -> None:
    client, _ = frozen
    info = await client.schedule("s", "0 12 * * *", "reports", {"k": [1, 2]})
    out = info.to_json()
    assert out["next_fire_at"] == "2025-06-02T12:00:00+00:00"
    assert out["last_job_id"] is None
    assert out["data"] == {"k": [1, 2]}
