"""Shared fixtures: a real Postgres, and a freshly migrated schema per test.

The database is ``$PATCHBAY_TEST_DATABASE_URL`` when set, otherwise the embedded Postgres
in ``.patchbay/test-postgres``. Each test gets its own schema, migrated from scratch, so
tests are isolated and can run in parallel (pytest-xdist).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from patchbay.queue import QueueClient, migrate_sync

REPO = Path(__file__).resolve().parents[1]


def _resolve_test_database() -> str:
    url = os.environ.get("PATCHBAY_TEST_DATABASE_URL")
    if url:
        return url
    from patchbay.runtime.database import embedded_database_url

    return embedded_database_url(REPO / ".patchbay" / "test-postgres", announce=False)


@pytest.fixture(scope="session")
def database_url() -> str:
    """URL of the Postgres the tests use."""
    return _resolve_test_database()


@pytest.fixture
def schema(database_url: str) -> Iterator[str]:
    """A new schema with every migration applied; dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    migrate_sync(database_url, name)
    yield name
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(name)))


@pytest.fixture
async def client(database_url: str, schema: str) -> AsyncIterator[QueueClient]:
    """An open QueueClient on the test's schema, with quick maintenance."""
    async with QueueClient(database_url, schema=schema, maintenance_interval=0.2) as c:
        yield c


Eventually = Callable[..., Awaitable[None]]


@pytest.fixture
def eventually() -> Eventually:
    """``await eventually(predicate, within=10)``: poll a condition until it holds, or fail
    the test after ``within`` seconds (tests wait on state, never on fixed sleeps)."""

    async def wait(predicate: Callable[[], bool], within: float = 10.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not predicate():
            if loop.time() > deadline:
                raise AssertionError(f"condition not reached within {within}s")
            await asyncio.sleep(0.01)

    return wait
