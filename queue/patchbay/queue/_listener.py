"""The LISTEN connection that wakes idle workers.

Guarantee: while connected, a worker wakes as soon as a runnable job of its queue commits.
If the connection drops, the listener reconnects with capped backoff and then wakes every
worker once, because notifications sent while it was away are lost; the workers' polling
covers the gap in between.

State model: ``connected`` is an event set while LISTEN is active; ``reconnects`` counts
successful re-listens (a test signal).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import psycopg
from psycopg import sql

__all__ = ["Listener"]

log = logging.getLogger("patchbay.queue.listener")


class Listener:
    """Dispatches NOTIFY payloads (queue names) of one channel to a callback."""

    def __init__(
        self, conninfo: str, channel: str, on_notify: Callable[[str | None], None]
    ) -> None:
        self._conninfo = conninfo
        self._channel = channel
        self._on_notify = on_notify
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        self.reconnects = 0
        self.backend_pid: int | None = None

    async def start(self) -> None:
        """Start listening (idempotent); returns once LISTEN is active or first failed."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="listener")
            try:
                await asyncio.wait_for(self.connected.wait(), timeout=10)
            except TimeoutError:
                log.warning("listener not connected yet; workers poll until it is")

    async def stop(self) -> None:
        """Stop listening and close the connection."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self.connected.clear()

    async def _run(self) -> None:
        failures = 0
        first = True
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True, application_name="patchbay-listener"
                ) as conn:
                    await conn.execute(sql.SQL("listen {}").format(sql.Identifier(self._channel)))
                    self.backend_pid = conn.info.backend_pid
                    self.connected.set()
                    if not first:
                        self.reconnects += 1
                        log.info("listener reconnected")
                        self._on_notify(None)
                    first = False
                    failures = 0
                    async for note in conn.notifies():
                        self._on_notify(note.payload)
            except asyncio.CancelledError:
                raise
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                self.connected.clear()
                failures += 1
                delay = min(5.0, 0.05 * 2**failures)
                if failures in (1, 10) or failures % 100 == 0:
                    log.warning("listener connection lost (%s); reconnecting in %.2fs", exc, delay)
                # Workers poll meanwhile; wake them so nothing waits a full poll interval.
                self._on_notify(None)
                await asyncio.sleep(delay)
