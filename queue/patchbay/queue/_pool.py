"""The client's connection pool: psycopg_pool's, with reconnection attempts at most
:data:`RECONNECT_DELAY_MAX` seconds apart.

Guarantee: once Postgres accepts connections again after an outage of any length, the
pool makes its next attempt within ``RECONNECT_DELAY_MAX`` seconds (plus jitter), so
workers resume within that. psycopg_pool alone doubles the delay after each failed attempt
(1, 2, 4, ... s, for up to ``reconnect_timeout``): after a 35 s outage the workers sat
idle for another 25 s before its next attempt.

How it fails: psycopg_pool logs each failed attempt, so an outage logs about one line per
``RECONNECT_DELAY_MAX`` seconds per connection being re-made, instead of one per doubling.
The cap relies on psycopg_pool internals (``AttemptWithBackoff`` and
``_add_connection``, both unchanged since 3.0; the dependency is pinned below 4), and
tests/reliability/test_long_outage.py checks the resulting resume time.
"""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool
from psycopg_pool.base import AttemptWithBackoff

__all__ = ["RECONNECT_DELAY_MAX", "QueuePool"]

RECONNECT_DELAY_MAX = 5.0


class _CappedAttempt(AttemptWithBackoff):
    """psycopg_pool's exponential backoff, never waiting more than the cap."""

    def update_delay(self, now: float) -> None:
        super().update_delay(now)
        self.delay = min(self.delay, RECONNECT_DELAY_MAX)


class QueuePool(AsyncConnectionPool):
    """An AsyncConnectionPool whose reconnection attempts are capped (see the module)."""

    async def _add_connection(
        self, attempt: AttemptWithBackoff | None, growing: bool = False
    ) -> None:
        if attempt is None:
            attempt = _CappedAttempt(timeout=self.reconnect_timeout)
        await super()._add_connection(attempt, growing)
