"""Cron expressions in IANA time zones: the fire instants of a schedule.

croniter is used only on naive wall-clock times, where there is no DST; this module maps
each matching wall-clock time to one instant by the rule documented in
:mod:`patchbay.queue.schedules`: a wall-clock time fires at the first instant at which the
zone's clocks read that time or later. So a time in a spring-forward gap fires at the
first instant after the gap, a time repeated by a fall-back fires at its first occurrence
only, and wall-clock times that map to the same instant are one fire.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from .errors import InvalidSchedule

__all__ = ["CronSchedule", "parse_zone"]

ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_FIELDS = "minute hour day-of-month month day-of-week"
_MINUTE = timedelta(minutes=1)
# Matching wall-clock times skipped past in one search: the repeated hour of a fall-back
# holds at most 60 per hour of overlap for "* * * * *"; anything near this is a bug.
_MAX_STEPS = 100_000


def parse_zone(tz: object) -> ZoneInfo:
    """``tz`` as a ZoneInfo, or InvalidSchedule naming the problem."""
    if not isinstance(tz, str) or not 1 <= len(tz) <= 100:
        raise InvalidSchedule(
            f"tz must be an IANA time zone name such as 'Europe/Berlin', got {tz!r}"
        )
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise InvalidSchedule(
            f"unknown time zone {tz!r}: use an IANA name such as 'UTC' or 'America/New_York'"
        ) from exc


def _normalize(expression: object) -> str:
    if not isinstance(expression, str) or not 1 <= len(expression) <= 200:
        raise InvalidSchedule(f"cron must be a string of 1-200 characters, got {expression!r}")
    text = expression.strip()
    alias = ALIASES.get(text.lower())
    if alias is not None:
        return alias
    fields = text.split()
    if len(fields) != 5:
        raise InvalidSchedule(
            f"cron {expression!r} has {len(fields)} field(s); use five ({_FIELDS}) "
            f"or one of {', '.join(ALIASES)}"
        )
    for field in fields:
        for part in field.split(","):
            # croniter's "R" (random) and "H" (hashed) would give each process its own
            # fire times; no month or weekday name starts with either letter.
            if part[:1].upper() in {"R", "H"}:
                raise InvalidSchedule(
                    f"cron {expression!r}: random (R) and hashed (H) fields are not supported"
                )
    return " ".join(fields)


class CronSchedule:
    """A five-field cron expression in an IANA time zone; all instants are aware UTC."""

    __slots__ = ("_iter", "expression", "key", "zone")

    def __init__(self, expression: str, tz: str = "UTC") -> None:
        self.zone = parse_zone(tz)
        normalized = _normalize(expression)
        self.expression = normalized
        if not croniter.is_valid(normalized):
            raise InvalidSchedule(f"invalid cron expression {expression!r} ({_FIELDS})")
        try:
            expanded: Any = croniter.expand(normalized)
            self._iter = croniter(normalized, datetime(2000, 1, 1), day_or=True)
            # An expression that never matches (30 February) fails here, not at a tick.
            self._iter.get_next(datetime)
        except CroniterError as exc:
            raise InvalidSchedule(f"cron {expression!r} never fires: {exc}") from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidSchedule(f"invalid cron expression {expression!r}: {exc}") from exc
        # Equal keys fire at the same instants ("*/5" and "0-59/5", "7" and "0" for Sunday).
        self.key = (repr(expanded), self.zone.key)

    def __repr__(self) -> str:
        return f"CronSchedule({self.expression!r}, {self.zone.key!r})"

    # -- wall-clock time to instant ------------------------------------------------------

    def _wall(self, instant: datetime) -> tuple[datetime, timedelta]:
        """The zone's naive wall-clock time at ``instant``, and how much of a fall-back
        overlap is still ahead when ``instant`` is in its second pass (else zero)."""
        local = instant.astimezone(self.zone)
        repeat = timedelta(0)
        if local.fold:
            first = local.replace(fold=0).utcoffset()
            second = local.utcoffset()
            if first is not None and second is not None and first > second:
                repeat = first - second
        return local.replace(tzinfo=None, fold=0), repeat

    def instant_of(self, wall: datetime) -> datetime:
        """The instant a matching wall-clock time fires: the first at which the zone's
        clocks read ``wall`` or later."""
        first = wall.replace(tzinfo=self.zone, fold=0)
        instant = first.astimezone(UTC)
        if instant.astimezone(self.zone).replace(tzinfo=None) == wall:
            # fold=0 is the first occurrence of a repeated time.
            return instant
        # ``wall`` lies in a spring-forward gap: find the transition, the first whole second
        # whose wall-clock time is past ``wall`` (tz transitions fall on whole seconds).
        before = math.floor(wall.replace(tzinfo=self.zone, fold=1).timestamp())
        after = math.ceil(instant.timestamp())
        while after - before > 1:
            middle = (before + after) // 2
            if datetime.fromtimestamp(middle, self.zone).replace(tzinfo=None) > wall:
                after = middle
            else:
                before = middle
        return datetime.fromtimestamp(after, UTC)

    # -- fire times ----------------------------------------------------------------------

    def next_after(self, instant: datetime) -> datetime:
        """The first fire strictly after ``instant``."""
        wall, _ = self._wall(instant)
        self._iter.set_current(wall, force=True)
        return next(self._scan(self._iter, instant))

    def fires_after(self, instant: datetime) -> Iterator[datetime]:
        """The fires strictly after ``instant``, in order, each instant once."""
        wall, _ = self._wall(instant)
        return self._scan(croniter(self.expression, wall, day_or=True), instant)

    def _scan(self, it: Any, instant: datetime) -> Iterator[datetime]:
        last = instant
        skipped = 0
        while True:
            fire = self.instant_of(it.get_next(datetime))
            if fire > last:
                skipped = 0
                last = fire
                yield fire
            else:
                # The rest of a repeated hour (already fired in its first pass), or a gap
                # time landing on the same instant as the fire before it.
                skipped += 1
                if skipped > _MAX_STEPS:
                    raise RuntimeError(f"{self!r}: no fire after {instant.isoformat()}")

    def last_at_or_before(self, instant: datetime) -> datetime | None:
        """The latest fire at or before ``instant`` (None if there is none)."""
        wall, repeat = self._wall(instant)
        # Matching times are whole minutes; the first minute past the wall-clock time (past
        # the end of a repeated hour, in its second pass) is a safe starting point.
        start = wall.replace(second=0, microsecond=0) + repeat + _MINUTE
        it = self._iter
        it.set_current(start, force=True)
        try:
            for _ in range(_MAX_STEPS):
                fire = self.instant_of(it.get_prev(datetime))
                if fire <= instant:
                    return fire
        except CroniterError:
            return None
        raise RuntimeError(f"{self!r}: no fire found before {instant.isoformat()}")

    def preview(self, after: datetime, count: int) -> list[datetime]:
        """The next ``count`` fires strictly after ``after``, in the schedule's zone."""
        fires = self.fires_after(after)
        return [next(fires).astimezone(self.zone) for _ in range(count)]
