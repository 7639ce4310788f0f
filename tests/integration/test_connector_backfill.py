"""Backfills of the example contacts connector on the real queue, against the fake API: a
range split into daily windows run as child jobs, progress and completion, and resuming
exactly the windows not done."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from patchbay_example_contacts import ContactsConnector
from patchbay_example_contacts.fake_api import FakeContactsApi, parse_time
from psycopg import sql

from patchbay.connectors import ConnectorExecutor
from patchbay.queue import InvalidOption, QueueClient
from patchbay.secrets import LocalKeyProvider, Vault, generate_master_key

TOKEN = "tok_backfill_0b7d4e"
TENANT = "acme"
INTEGRATION = "acme-contacts"
REF = f"secret://{TENANT}/contacts/token"
SINCE = datetime(2024, 1, 1, tzinfo=UTC)
UNTIL = datetime(2024, 1, 6, tzinfo=UTC)


@pytest.fixture
def api() -> Iterator[FakeContactsApi]:
    # 24 contacts a day, from SINCE, for 6 days; the backfill covers the first 5.
    with FakeContactsApi(
        contacts=144, tokens={TOKEN}, start=SINCE, spread=timedelta(days=6), page_size=10
    ) as server:
        yield server


@pytest.fixture
async def vault(database_url: str, schema: str) -> AsyncIterator[Vault]:
    keys = LocalKeyProvider([generate_master_key("k1")])
    async with Vault(database_url, schema=schema, keys=keys, cache_ttl=0) as v:
        await v.put(TENANT, "contacts/token", TOKEN)
        yield v


@pytest.fixture
async def executor(
    database_url: str, schema: str, vault: Vault
) -> AsyncIterator[ConnectorExecutor]:
    async with QueueClient(
        database_url, schema=schema, maintenance_interval=0.2, redact=vault.redactor
    ) as queue:
        executor = ConnectorExecutor(
            queue, [ContactsConnector()], vault=vault, retry_limit=2, retry_delay=0.1
        )
        await executor.ensure_queues()
        yield executor


def config(api: FakeContactsApi) -> dict[str, Any]:
    return {"base_url": api.url, "token": REF, "page_size": 10}


async def start_backfill(executor: ConnectorExecutor, api: FakeContactsApi) -> uuid.UUID:
    return await executor.start_backfill(
        "contacts",
        "contacts_history",
        tenant=TENANT,
        integration=INTEGRATION,
        config=config(api),
        since=SINCE,
        until=UNTIL,
    )


async def work(executor: ConnectorExecutor) -> None:
    await executor.start(concurrency=2, poll_interval=0.05)


async def status_when(
    executor: ConnectorExecutor,
    backfill_id: uuid.UUID,
    done: int,
    within: float = 30.0,
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        status = await executor.backfill_status(backfill_id)
        if status["windows_done"] >= done:
            return status
        if loop.time() > deadline:
            raise AssertionError(f"backfill not at {done} windows after {within}s: {status}")
        await asyncio.sleep(0.02)


async def window_jobs(executor: ConnectorExecutor, backfill_id: uuid.UUID) -> list[Any]:
    """(index, job id, job state, done_at) per window, by index."""
    query = sql.SQL(
        "select w.window_index, w.job_id, j.state::text, w.done_at"
        " from {s}.connector_backfill_window w left join {s}.job j on j.id = w.job_id"
        " where w.backfill_id = %s order by w.window_index"
    ).format(s=sql.Identifier(executor.queue.schema))
    async with executor.queue.pool.connection() as conn:
        cur = await conn.execute(query, (backfill_id,))
        return list(await cur.fetchall())


async def settled(executor: ConnectorExecutor, backfill_id: uuid.UUID) -> list[Any]:
    """Window rows once no window job waits or runs."""
    for _ in range(1500):
        rows = await window_jobs(executor, backfill_id)
        if all(r[2] in ("completed", "failed", "cancelled") for r in rows):
            return rows
        await asyncio.sleep(0.02)
    raise AssertionError(f"window jobs still running: {rows}")


async def record_ids(executor: ConnectorExecutor) -> set[str]:
    query = sql.SQL("select external_id from {}.connector_record where integration_id = %s").format(
        sql.Identifier(executor.queue.schema)
    )
    async with executor.queue.pool.connection() as conn:
        cur = await conn.execute(query, (INTEGRATION,))
        return {r[0] for r in await cur.fetchall()}


def in_range(api: FakeContactsApi, start: datetime, end: datetime) -> set[str]:
    return {c["id"] for c in api.contacts() if start <= parse_time(c["updated_at"]) < end}


def day_of(offset: int) -> tuple[datetime, datetime]:
    return SINCE + timedelta(days=offset), SINCE + timedelta(days=offset + 1)


def windows_requested(api: FakeContactsApi) -> set[str]:
    """The windows (by their start) the API was asked for, first pages only."""
    return {r.query["updated_since"] for r in api.log if "updated_since" in r.query}


async def test_a_backfill_runs_every_window_and_completes(
    executor: ConnectorExecutor, api: FakeContactsApi
) -> None:
    backfill_id = await start_backfill(executor, api)
    before = await executor.backfill_status(backfill_id)
    assert (before["status"], before["windows_total"], before["windows_done"]) == (
        "running",
        5,
        0,
    )
    jobs = (await executor.queue.list_jobs(queue="contacts.contacts_history")).jobs
    assert len(jobs) == 5
    assert {j.priority for j in jobs} == {-10}  # behind incremental syncs
    # Their own share of the provider's rate limit (unlimited until one is set).
    query = sql.SQL("select distinct rate_key from {}.job where queue = %s").format(
        sql.Identifier(executor.queue.schema)
    )
    async with executor.queue.pool.connection() as conn:
        cur = await conn.execute(query, ("contacts.contacts_history",))
        assert await cur.fetchall() == [("contacts:backfill",)]

    await work(executor)
    status = await status_when(executor, backfill_id, 5)
    assert status["status"] == "completed" and status["completed_at"] is not None
    assert await record_ids(executor) == in_range(api, SINCE, UNTIL)
    assert len(await record_ids(executor)) == 120  # 24 a day for 5 days; day 6 untouched
    assert windows_requested(api) == {f"2024-01-0{d}T00:00:00.000Z" for d in range(1, 6)}
    rows = await settled(executor, backfill_id)
    assert [r[2] for r in rows] == ["completed"] * 5
    assert all(r[3] is not None for r in rows)


async def test_resume_resends_only_the_windows_not_done(
    executor: ConnectorExecutor, api: FakeContactsApi
) -> None:
    backfill_id = await start_backfill(executor, api)
    rows = await window_jobs(executor, backfill_id)
    for index in (1, 3):  # e.g. cancelled by an operator before they ran
        await executor.queue.cancel(rows[index][1])
    await work(executor)
    await status_when(executor, backfill_id, 3)
    rows = await settled(executor, backfill_id)
    assert [r[2] for r in rows] == ["completed", "cancelled", "completed", "cancelled", "completed"]
    status = await executor.backfill_status(backfill_id)
    assert (status["status"], status["windows_done"]) == ("running", 3)
    missing = in_range(api, *day_of(1)) | in_range(api, *day_of(3))
    assert not missing & await record_ids(executor)

    api.reset_counters()
    assert await executor.resume_backfill(backfill_id) == 2
    status = await status_when(executor, backfill_id, 5)
    assert status["status"] == "completed"
    assert windows_requested(api) == {"2024-01-02T00:00:00.000Z", "2024-01-04T00:00:00.000Z"}
    assert await record_ids(executor) == in_range(api, SINCE, UNTIL)
    rows = await settled(executor, backfill_id)
    assert [r[2] for r in rows] == ["completed"] * 5

    # Nothing left to resume, and resuming twice sends nothing twice.
    assert await executor.resume_backfill(backfill_id) == 0


async def test_resume_leaves_windows_that_still_wait_alone(
    executor: ConnectorExecutor, api: FakeContactsApi
) -> None:
    backfill_id = await start_backfill(executor, api)
    assert await executor.resume_backfill(backfill_id) == 0  # all five are queued
    assert len((await executor.queue.list_jobs(queue="contacts.contacts_history")).jobs) == 5
    with pytest.raises(InvalidOption, match="no backfill"):
        await executor.resume_backfill(uuid.uuid4())


async def test_after_a_revoked_token_is_fixed_resume_finishes_the_backfill(
    executor: ConnectorExecutor, api: FakeContactsApi
) -> None:
    api.revoke(TOKEN)
    backfill_id = await start_backfill(executor, api)
    await work(executor)
    rows = await settled(executor, backfill_id)
    assert [r[2] for r in rows] == ["failed"] * 5  # AuthError: each at once, no retries
    assert api.requests == 5
    assert (await executor.backfill_status(backfill_id))["windows_done"] == 0

    api.grant(TOKEN)  # the operator fixed the credential
    assert await executor.resume_backfill(backfill_id) == 5
    status = await status_when(executor, backfill_id, 5)
    assert status["status"] == "completed"
    assert await record_ids(executor) == in_range(api, SINCE, UNTIL)


async def test_a_retried_window_resumes_from_its_own_checkpoint(
    executor: ConnectorExecutor, api: FakeContactsApi
) -> None:
    # The one-day backfill of Jan 3 (24 contacts, pages of 10): its third page fails past
    # the HTTP client's retries, so the window's job is retried by the queue.
    api.fail(503, times=4, after=2)
    backfill_id = await executor.start_backfill(
        "contacts",
        "contacts_history",
        tenant=TENANT,
        integration=INTEGRATION,
        config=config(api),
        since=day_of(2)[0],
        until=day_of(2)[1],
    )
    await work(executor)
    status = await status_when(executor, backfill_id, 1)
    assert status["status"] == "completed"
    [(_, job_id, state, _)] = await settled(executor, backfill_id)
    assert state == "completed"
    assert (await executor.queue.get_job(job_id)).attempt == 2
    day = sorted(
        (c for c in api.contacts() if c["id"] in in_range(api, *day_of(2))),
        key=lambda c: (c["updated_at"], c["id"]),
    )
    assert len(day) == 24
    ok = [r for r in api.log if r.status == 200]
    # Pages 1 and 2 (committed by attempt 1), then attempt 2's single page: the last 4,
    # asked for after the 20th contact of the window, not from the window's start.
    assert len(ok) == 3 and [r.status for r in api.log].count(503) == 4
    assert ok[2].query["after_id"] == day[19]["id"]
    assert ok[2].query["updated_before"] == "2024-01-04T00:00:00.000Z"
    assert "updated_since" not in ok[2].query
    assert await record_ids(executor) == {c["id"] for c in day}
