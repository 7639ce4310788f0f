"""Cron expressions: what is accepted, what is refused (with a typed error), which
expressions are the same schedule, and the fire job ids."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from patchbay.queue import InvalidInput, InvalidSchedule
from patchbay.queue._cron import CronSchedule
from patchbay.queue.schedules import fire_job_id, validate_schedule_name

NOON = datetime(2025, 1, 15, 12, 0, tzinfo=UTC)  # a Wednesday


@pytest.mark.parametrize(
    ("expression", "first"),
    [
        ("* * * * *", datetime(2025, 1, 15, 12, 1, tzinfo=UTC)),
        ("*/15 * * * *", datetime(2025, 1, 15, 12, 15, tzinfo=UTC)),
        ("0 9-17 * * mon-fri", datetime(2025, 1, 15, 13, 0, tzinfo=UTC)),
        ("0 0 1 * *", datetime(2025, 2, 1, tzinfo=UTC)),
        ("0 0 29 2 *", datetime(2028, 2, 29, tzinfo=UTC)),
        ("0 0 * * 0", datetime(2025, 1, 19, tzinfo=UTC)),
        ("0 0 * * 7", datetime(2025, 1, 19, tzinfo=UTC)),
        ("0 0 1 jan *", datetime(2026, 1, 1, tzinfo=UTC)),
        ("  0   12  *  *  * ", datetime(2025, 1, 16, 12, tzinfo=UTC)),
        ("@hourly", datetime(2025, 1, 15, 13, tzinfo=UTC)),
        ("@daily", datetime(2025, 1, 16, tzinfo=UTC)),
        ("@midnight", datetime(2025, 1, 16, tzinfo=UTC)),
        ("@weekly", datetime(2025, 1, 19, tzinfo=UTC)),
        ("@monthly", datetime(2025, 2, 1, tzinfo=UTC)),
        ("@yearly", datetime(2026, 1, 1, tzinfo=UTC)),
        ("@ANNUALLY", datetime(2026, 1, 1, tzinfo=UTC)),
    ],
)
def test_accepted_expressions(expression: str, first: datetime) -> None:
    spec = CronSchedule(expression)
    assert spec.next_after(NOON) == first
    # Exactly at a fire time, the next one is strictly later; the previous is that time.
    assert spec.next_after(first) > first
    assert spec.last_at_or_before(first) == first


@pytest.mark.parametrize(
    "expression",
    [
        "",
        "   ",
        "* * * *",
        "* * * * * *",  # croniter's seconds field: not five-field cron
        "60 * * * *",
        "* 24 * * *",
        "* * 32 * *",
        "* * * 13 *",
        "*/0 * * * *",
        "0 0 30 2 *",  # never fires
        "0 0 31 4,6,9,11 *",
        "R * * * *",  # random: each process would get its own fire times
        "H * * * *",
        "H(0-29) * * * *",
        "@reboot",
        "@every 5m",
        "every day",
        "x" * 201,
    ],
)
def test_refused_expressions_raise_invalid_schedule(expression: str) -> None:
    with pytest.raises(InvalidSchedule):
        CronSchedule(expression)


@pytest.mark.parametrize("value", [None, 5, ["* * * * *"], b"* * * * *"])
def test_an_expression_must_be_text(value: object) -> None:
    with pytest.raises(InvalidSchedule):
        CronSchedule(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "tz", ["", "Nowhere/City", "europe/berlin ", "../../etc/passwd", "/etc/localtime", "x" * 300]
)
def test_refused_zones(tz: str) -> None:
    with pytest.raises(InvalidSchedule) as caught:
        CronSchedule("* * * * *", tz)
    assert isinstance(caught.value, InvalidInput)
    assert isinstance(caught.value, ValueError)


def test_equivalent_expressions_are_the_same_schedule() -> None:
    same = ["*/5 * * * *", "0-59/5 * * * *", "0,5,10,15,20,25,30,35,40,45,50,55 * * * *"]
    assert len({CronSchedule(e).key for e in same}) == 1
    assert CronSchedule("0 0 * * 0").key == CronSchedule("0 0 * * 7").key
    assert CronSchedule("@daily").key == CronSchedule("0 0 * * *").key
    assert CronSchedule("0 0 * * *").key != CronSchedule("0 0 * * *", "Europe/Paris").key
    assert CronSchedule("*/5 * * * *").key != CronSchedule("*/10 * * * *").key


def test_preview_is_in_the_zone_and_strictly_increasing() -> None:
    spec = CronSchedule("0 */8 * * *", "Asia/Kolkata")
    fires = spec.preview(NOON, 6)
    assert [f.utcoffset() for f in fires] == [timedelta(hours=5, minutes=30)] * 6
    assert [f.hour for f in fires] == [0, 8, 16, 0, 8, 16]
    assert fires == sorted(set(fires))


def test_last_at_or_before_reaches_back_over_years() -> None:
    spec = CronSchedule("0 0 29 2 *")
    assert spec.last_at_or_before(datetime(2025, 1, 1, tzinfo=UTC)) == datetime(
        2024, 2, 29, tzinfo=UTC
    )


def test_fire_job_ids_are_deterministic_and_distinct() -> None:
    at = datetime(2025, 3, 30, 1, 0, tzinfo=UTC)
    first = fire_job_id("nightly", at)
    assert first == fire_job_id(
        "nightly", at.astimezone(CronSchedule("* * * * *", "Asia/Tokyo").zone)
    )
    assert first.version == 5
    assert first != fire_job_id("nightly", at + timedelta(minutes=1))
    assert first != fire_job_id("nightly2", at)
    assert isinstance(first, uuid.UUID)


@pytest.mark.parametrize("name", ["nightly", "tenant-1/sync", "a.b:c_d", "x" * 200, "_x"])
def test_schedule_names(name: str) -> None:
    assert validate_schedule_name(name) == name


@pytest.mark.parametrize("name", ["", " x", "x y", "-x", "x" * 201, None, 3, "é"])
def test_bad_schedule_names(name: object) -> None:
    from patchbay.queue import InvalidName

    with pytest.raises(InvalidName):
        validate_schedule_name(name)
