"""The DST rule of cron schedules, by example and as a property over whole years.

The rule (patchbay.queue.schedules): each wall-clock time the expression matches fires at
the first instant at which the zone's clocks read that time or later. The oracle here
computes that instant from the zone's UTC-offset segments alone (no ``fold``, no code
shared with the implementation), and the matching wall-clock times from croniter on naive
times.
"""

from __future__ import annotations

import bisect
from datetime import UTC, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from patchbay.queue._cron import CronSchedule

DST_ZONES = [
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",  # 30-minute shift
    "Europe/London",
    "America/Santiago",  # southern hemisphere, transitions at local midnight
    "America/Havana",  # spring-forward gap at midnight: "0 0 * * *" falls in it
    "Pacific/Chatham",  # +12:45 / +13:45
    "Asia/Tehran",  # DST until 2022, transitions at midnight
    "UTC",
    "Asia/Kolkata",
]

Segment = tuple[datetime, datetime, timedelta]  # [start, end) in UTC, constant offset


@cache
def segments(zone_name: str, year: int) -> tuple[Segment, ...]:
    """Constant-offset stretches of the zone from a week before ``year`` to a week after,
    found by scanning hours, then seconds around each change."""
    zone = ZoneInfo(zone_name)
    start = datetime(year - 1, 12, 24, tzinfo=UTC)
    end = datetime(year + 1, 1, 8, tzinfo=UTC)

    def offset(t: datetime) -> timedelta:
        value = t.astimezone(zone).utcoffset()
        assert value is not None
        return value

    found: list[Segment] = []
    seg_start, seg_off = start, offset(start)
    t = start
    while t < end:
        nxt = min(t + timedelta(hours=1), end)
        if offset(nxt) != seg_off:
            # Narrow the change down to the second.
            lo, hi = t, nxt
            while hi - lo > timedelta(seconds=1):
                mid = lo + (hi - lo) / 2
                mid = mid.replace(microsecond=0)
                if mid <= lo:
                    mid = lo + timedelta(seconds=1)
                if offset(mid) == seg_off:
                    lo = mid
                else:
                    hi = mid
            found.append((seg_start, hi, seg_off))
            seg_start, seg_off = hi, offset(hi)
        t = nxt
    found.append((seg_start, end, seg_off))
    return tuple(found)


def first_instant_reading(wall: datetime, segs: tuple[Segment, ...]) -> datetime:
    """The first instant at which the zone's clocks read ``wall`` (naive) or later."""
    for seg_start, seg_end, off in segs:
        if seg_end + off > wall.replace(tzinfo=UTC):
            return max(seg_start, wall.replace(tzinfo=UTC) - off)
    raise AssertionError(f"{wall} is beyond the scanned window")


def naive_matches(expression: str, start: datetime, end: datetime) -> list[datetime]:
    """Wall-clock times in [start, end) matching ``expression`` (croniter, naive)."""
    it = croniter(expression, start - timedelta(seconds=1))
    out: list[datetime] = []
    while True:
        wall = it.get_next(datetime)
        if wall >= end:
            return out
        out.append(wall)


def expected_year(expression: str, zone_name: str, year: int) -> tuple[list[datetime], datetime]:
    """The fire instants of a year (local 1 January 00:00 to the next), and the start."""
    segs = segments(zone_name, year)
    start_wall, end_wall = datetime(year, 1, 1), datetime(year + 1, 1, 1)
    walls = naive_matches(expression, start_wall, end_wall)
    fires = sorted({first_instant_reading(w, segs) for w in walls})
    return fires, first_instant_reading(start_wall, segs)


def actual_between(spec: CronSchedule, start: datetime, end: datetime) -> list[datetime]:
    """Fires in [start, end), chained through next_after as the ticks chain them."""
    out: list[datetime] = []
    t = spec.next_after(start - timedelta(microseconds=1))
    while t < end:
        out.append(t)
        t = spec.next_after(t)
    return out


def at(zone: str, *args: int) -> datetime:
    return datetime(*args, tzinfo=ZoneInfo(zone))


def fold1(zone: str, *args: int) -> datetime:
    return datetime(*args, tzinfo=ZoneInfo(zone), fold=1)


# -- the rule by example ---------------------------------------------------------------


@pytest.mark.smoke
def test_a_time_in_the_spring_forward_gap_fires_once_at_the_end_of_the_gap() -> None:
    spec = CronSchedule("30 2 * * *", "Europe/Berlin")
    fires = spec.preview(at("UTC", 2024, 3, 29, 12), 4)
    assert [f.isoformat() for f in fires] == [
        "2024-03-30T02:30:00+01:00",
        "2024-03-31T03:00:00+02:00",  # 02:30 does not exist that night
        "2024-04-01T02:30:00+02:00",
        "2024-04-02T02:30:00+02:00",
    ]


def test_a_repeated_time_in_the_fall_back_overlap_fires_once_at_its_first_occurrence() -> None:
    spec = CronSchedule("30 2 * * *", "Europe/Berlin")
    fires = spec.preview(at("UTC", 2024, 10, 26, 12), 2)
    assert [f.isoformat() for f in fires] == [
        "2024-10-27T02:30:00+02:00",  # the first 02:30 (CEST); the second is not a fire
        "2024-10-28T02:30:00+01:00",
    ]


def test_the_repeated_hour_fires_nothing_and_the_gap_collapses_into_one_fire() -> None:
    spec = CronSchedule("*/30 * * * *", "Europe/Berlin")
    autumn = spec.preview(at("Europe/Berlin", 2024, 10, 27, 1, 15), 5)
    assert [f.isoformat() for f in autumn] == [
        "2024-10-27T01:30:00+02:00",
        "2024-10-27T02:00:00+02:00",
        "2024-10-27T02:30:00+02:00",
        "2024-10-27T03:00:00+01:00",  # one hour after 02:30 CEST... wall-clock semantics
        "2024-10-27T03:30:00+01:00",
    ]
    spring = spec.preview(at("Europe/Berlin", 2024, 3, 31, 1, 15), 3)
    assert [f.isoformat() for f in spring] == [
        "2024-03-31T01:30:00+01:00",
        "2024-03-31T03:00:00+02:00",  # 02:00, 02:30 (gap) and 03:00: one fire
        "2024-03-31T03:30:00+02:00",
    ]


def test_lord_howe_half_hour_shifts() -> None:
    gap = CronSchedule("15 2 * * *", "Australia/Lord_Howe")
    assert [f.isoformat() for f in gap.preview(at("UTC", 2024, 10, 4, 12), 3)] == [
        "2024-10-05T02:15:00+10:30",
        "2024-10-06T02:30:00+11:00",  # 02:00-02:30 does not exist
        "2024-10-07T02:15:00+11:00",
    ]
    overlap = CronSchedule("45 1 * * *", "Australia/Lord_Howe")
    assert [f.isoformat() for f in overlap.preview(at("UTC", 2024, 4, 5, 12), 3)] == [
        "2024-04-06T01:45:00+11:00",
        "2024-04-07T01:45:00+11:00",  # 01:30-02:00 happens twice; the first counts
        "2024-04-08T01:45:00+10:30",
    ]


def test_new_york_hourly_job_across_both_transitions() -> None:
    spec = CronSchedule("0 * * * *", "America/New_York")
    spring = spec.preview(at("America/New_York", 2025, 3, 9, 0, 30), 3)
    assert [f.isoformat() for f in spring] == [
        "2025-03-09T01:00:00-05:00",
        "2025-03-09T03:00:00-04:00",  # 02:00 is in the gap: it fires at 03:00, once
        "2025-03-09T04:00:00-04:00",
    ]
    autumn = spec.preview(at("America/New_York", 2025, 11, 2, 0, 30), 3)
    assert [f.isoformat() for f in autumn] == [
        "2025-11-02T01:00:00-04:00",
        "2025-11-02T02:00:00-05:00",  # 01:00 EST is the second 01:00: not a fire
        "2025-11-02T03:00:00-05:00",
    ]


def test_a_midnight_gap_fires_at_the_first_instant_of_the_day() -> None:
    # Havana springs forward from 00:00 to 01:00: midnight does not exist.
    spec = CronSchedule("0 0 * * *", "America/Havana")
    fires = spec.preview(at("UTC", 2024, 3, 9, 12), 2)
    assert [f.isoformat() for f in fires] == [
        "2024-03-10T01:00:00-04:00",
        "2024-03-11T00:00:00-04:00",
    ]


def test_a_tick_in_the_second_pass_of_the_overlap_sees_the_right_neighbours() -> None:
    spec = CronSchedule("*/15 * * * *", "Europe/Berlin")
    second_pass = fold1("Europe/Berlin", 2024, 10, 27, 2, 20)  # 01:20 UTC
    assert second_pass.utcoffset() == timedelta(hours=1)
    # The first pass already fired 02:00..02:45 CEST; nothing fires until 03:00 CET.
    assert spec.last_at_or_before(second_pass) == at("UTC", 2024, 10, 27, 0, 45)
    assert spec.next_after(second_pass) == at("UTC", 2024, 10, 27, 2, 0)
    first_pass = at("Europe/Berlin", 2024, 10, 27, 2, 20)
    assert spec.last_at_or_before(first_pass) == at("UTC", 2024, 10, 27, 0, 15)
    assert spec.next_after(first_pass) == at("UTC", 2024, 10, 27, 0, 30)


def test_oracle_agrees_with_the_examples() -> None:
    segs = segments("Europe/Berlin", 2024)
    assert first_instant_reading(datetime(2024, 3, 31, 2, 30), segs) == at("UTC", 2024, 3, 31, 1)
    assert first_instant_reading(datetime(2024, 10, 27, 2, 30), segs) == at(
        "UTC", 2024, 10, 27, 0, 30
    )


# -- the rule as a property ------------------------------------------------------------


def _field(values: list[int]) -> str:
    return ",".join(str(v) for v in sorted(set(values)))


@st.composite
def expressions(draw: st.DrawFn) -> str:
    """Five-field expressions with at most a few thousand fires a year, biased to the
    night hours when transitions happen."""
    minute = draw(
        st.one_of(
            st.integers(0, 59).map(str),
            st.lists(st.integers(0, 59), min_size=2, max_size=4).map(_field),
            st.sampled_from(["*/15", "*/20", "*/30", "0,30", "10-20/5", "*/7"]),
        )
    )
    dense_minutes = minute.startswith("*") or minute.count(",") >= 3 or "-" in minute
    night = st.integers(0, 4)
    hour = draw(
        st.one_of(
            night.map(str),
            st.lists(night, min_size=2, max_size=3).map(_field),
            st.sampled_from(["0-3", "1-2", "23,0,1"]),
            st.just("*") if not dense_minutes else st.just("2"),
            st.sampled_from(["*/2", "*/3"]) if not dense_minutes else st.just("1-3"),
        )
    )
    dom, month, dow = draw(
        st.sampled_from(
            [
                ("*", "*", "*"),
                ("*", "*", "*"),
                ("*", "*", "0"),  # Sundays: most transitions
                ("*", "*", "6,0"),
                ("1-10", "*", "*"),
                ("*", "3,4,9,10,11", "*"),
                ("25-31", "3,10", "*"),
            ]
        )
    )
    return f"{minute} {hour} {dom} {month} {dow}"


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
@given(
    zone=st.sampled_from(DST_ZONES),
    year=st.integers(2000, 2037),
    expression=expressions(),
)
def test_over_a_whole_year_no_fire_is_skipped_or_doubled(
    zone: str, year: int, expression: str
) -> None:
    spec = CronSchedule(expression, zone)
    expected, start = expected_year(expression, zone, year)
    end = first_instant_reading(datetime(year + 1, 1, 1), segments(zone, year))
    actual = actual_between(spec, start, end)
    # Not skipped: every matching wall-clock time's instant fires; not doubled: each
    # instant once (the chain is strictly increasing) ...
    assert actual == expected
    # ... and no wall-clock time fires twice (the repeated hour of a fall-back is quiet).
    walls = [f.astimezone(ZoneInfo(zone)).replace(tzinfo=None) for f in actual]
    assert len(set(walls)) == len(walls)
    # The previous-fire search agrees with the chain at every fire and just before it.
    for fire in actual[:: max(1, len(actual) // 50)]:
        assert spec.last_at_or_before(fire) == fire
        before = spec.last_at_or_before(fire - timedelta(microseconds=1))
        index = expected.index(fire)
        assert before == (expected[index - 1] if index else before)


def _transitions(zone: str, year: int) -> list[datetime]:
    return [seg[0] for seg in segments(zone, year)[1:]]


@pytest.mark.parametrize("zone", [z for z in DST_ZONES if z not in ("UTC", "Asia/Kolkata")])
@pytest.mark.parametrize("expression", ["* * * * *", "*/7 * * * *", "45 * * * *", "0,30 * * * *"])
def test_dense_expressions_across_every_transition(zone: str, expression: str) -> None:
    spec = CronSchedule(expression, zone)
    year = 2024 if zone != "Asia/Tehran" else 2021
    segs = segments(zone, year)
    transitions = _transitions(zone, year)
    assert transitions, f"{zone} has no transition in {year}"
    for moment in transitions:
        window_start = moment - timedelta(hours=6)
        window_end = moment + timedelta(hours=6)
        local_start = window_start.astimezone(ZoneInfo(zone)).replace(tzinfo=None)
        local_end = (window_end + timedelta(hours=3)).astimezone(ZoneInfo(zone))
        walls = naive_matches(
            expression, local_start - timedelta(hours=3), local_end.replace(tzinfo=None)
        )
        expected = sorted(
            {
                f
                for f in (first_instant_reading(w, segs) for w in walls)
                if window_start <= f < window_end
            }
        )
        actual = actual_between(spec, window_start, window_end)
        assert actual == expected, f"around {moment.isoformat()}"
        walls_fired = [f.astimezone(ZoneInfo(zone)).replace(tzinfo=None) for f in actual]
        assert len(set(walls_fired)) == len(walls_fired)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    zone=st.sampled_from(DST_ZONES),
    year=st.integers(2000, 2037),
    transition=st.integers(0, 3),
    offset_s=st.integers(-4 * 3600, 4 * 3600),
    expression=st.sampled_from(
        ["*/15 * * * *", "30 2 * * *", "0 * * * *", "45 1 * * *", "0 0 * * *", "*/7 1-3 * * *"]
    ),
)
def test_previous_and_next_fire_bracket_any_instant(
    zone: str, year: int, transition: int, offset_s: int, expression: str
) -> None:
    segs = segments(zone, year)
    moments = [s[0] for s in segs[1:]] or [datetime(year, 6, 1, tzinfo=UTC)]
    instant = moments[transition % len(moments)] + timedelta(seconds=offset_s, microseconds=7)
    spec = CronSchedule(expression, zone)
    previous = spec.last_at_or_before(instant)
    following = spec.next_after(instant)
    assert previous is not None
    assert previous <= instant < following
    # Nothing fires strictly between them, and both are fires of the rule.
    assert spec.next_after(previous) == following
    walls = naive_matches(
        expression,
        (previous - timedelta(hours=4)).astimezone(ZoneInfo(zone)).replace(tzinfo=None),
        (following + timedelta(hours=4)).astimezone(ZoneInfo(zone)).replace(tzinfo=None),
    )
    rule = sorted({first_instant_reading(w, segs) for w in walls})
    assert previous in rule
    assert following in rule
    assert rule[bisect.bisect_left(rule, previous) + 1] == following
