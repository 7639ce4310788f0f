"""Clocks: where time-dependent statements get ``now`` from.

Every time-dependent statement takes ``coalesce(%(now)s, now())``: the system clock passes
``None`` so the database's clock rules (one clock for all daemons); tests pass a
:class:`FrozenClock` to make leases, retries and schedules deterministic without sleeping.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol

__all__ = ["Clock", "FrozenClock", "SystemClock"]


class Clock(Protocol):
    """Gives the ``now`` parameter of time-dependent statements."""

    def now(self) -> datetime | None:
        """The time to use, or None for the database's ``now()``."""
        ...


class SystemClock:
    """The database's clock (``now()`` of the transaction)."""

    def now(self) -> datetime | None:
        """Always None: the database decides."""
        return None


class FrozenClock:
    """A clock that moves only when told to; for tests."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime.now(UTC)

    def now(self) -> datetime:
        """The frozen time."""
        return self._now

    def advance(self, by: float | timedelta) -> datetime:
        """Move forward by seconds or a timedelta; returns the new time."""
        self._now += by if isinstance(by, timedelta) else timedelta(seconds=by)
        return self._now

    def set(self, to: datetime) -> None:
        """Jump to an absolute time."""
        self._now = to
