"""What the benchmarks share."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import psycopg
from psycopg import sql

from patchbay.queue import migrate_sync


@contextlib.asynccontextmanager
async def temp_schema(url: str, prefix: str = "bench") -> AsyncIterator[str]:
    """A freshly migrated schema for one benchmark run, dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    await asyncio.to_thread(migrate_sync, url, name)
    try:
        yield name
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("drop schema {} cascade").format(sql.Identifier(name)))
