"""Queues: explicit creation with defaults jobs inherit, idempotent create, update, delete,
and dead-letter references."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest
from psycopg import sql

from patchbay.queue import (
    InvalidName,
    InvalidOption,
    QueueAlreadyExists,
    QueueClient,
    QueueNotFound,
)


def count_rows(url: str, schema: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            sql.SQL("select count(*) from {}.{}").format(
                sql.Identifier(schema), sql.Identifier(table)
            )
        ).fetchone()
    assert row is not None
    return int(row[0])


async def test_create_queue_stores_settings_and_is_idempotent(client: QueueClient) -> None:
    info = await client.create_queue(
        "emails",
        retry_limit=5,
        retry_delay=timedelta(seconds=2),
        retry_backoff=False,
        retry_delay_max=60,
        expire_in=120,
        retention=3600,
    )
    assert (info.name, info.retry_limit, info.retry_delay) == ("emails", 5, 2.0)
    assert (info.retry_backoff, info.retry_delay_max) == (False, 60.0)
    assert (info.expire_in, info.retention, info.dead_letter) == (120.0, 3600.0, None)
    again = await client.create_queue(
        "emails",
        retry_limit=5,
        retry_delay=2,
        retry_backoff=False,
        retry_delay_max=60,
        expire_in=120,
        retention=3600,
    )
    assert again == info  # same row, same created_at: nothing was written
    assert [q.name for q in await client.list_queues()] == ["emails"]


async def test_create_existing_queue_with_other_settings_raises(client: QueueClient) -> None:
    await client.create_queue("q", retry_limit=1)
    with pytest.raises(QueueAlreadyExists, match="update_queue"):
        await client.create_queue("q", retry_limit=2)
    with pytest.raises(QueueAlreadyExists):
        await client.create_queue("q")  # defaults differ from retry_limit=1
    assert (await client.get_queue("q")).retry_limit == 1


async def test_default_settings(client: QueueClient) -> None:
    info = await client.create_queue("plain")
    assert (info.retry_limit, info.retry_delay, info.retry_backoff) == (2, 0.0, True)
    assert (info.retry_delay_max, info.expire_in) == (None, 900.0)
    assert (info.retention, info.dead_letter) == (14 * 24 * 3600.0, None)


async def test_update_queue_changes_given_settings_only(client: QueueClient) -> None:
    await client.create_queue("dlq")
    created = await client.create_queue("q", retry_limit=1, expire_in=30)
    job_before = await client.send("q", {})
    updated = await client.update_queue("q", retry_limit=7, dead_letter="dlq")
    assert (updated.retry_limit, updated.dead_letter) == (7, "dlq")
    assert updated.expire_in == 30.0  # kept
    assert updated.updated_at >= created.updated_at
    # Jobs already sent keep the policy they were sent with; new ones take the new one.
    assert (await client.get_job(job_before)).retry_limit == 1
    assert (await client.get_job(await client.send("q", {}))).retry_limit == 7
    with pytest.raises(QueueNotFound):
        await client.update_queue("missing", retry_limit=1)
    with pytest.raises(InvalidOption):
        await client.update_queue("q", retry_limit=-1)
    with pytest.raises(InvalidOption, match="unknown queue option"):
        await client.update_queue("q", nonsense=True)
    assert (await client.get_queue("q")).retry_limit == 7


async def test_delete_queue_removes_it_and_its_jobs(
    client: QueueClient, database_url: str, schema: str
) -> None:
    await client.create_queue("gone")
    await client.create_queue("stays")
    await client.send_many("gone", [1, 2, 3])
    kept = await client.send("stays", {})
    await client.delete_queue("gone")
    with pytest.raises(QueueNotFound):
        await client.get_queue("gone")
    with pytest.raises(QueueNotFound):
        await client.delete_queue("gone")
    with pytest.raises(QueueNotFound):
        await client.send("gone", {})
    assert count_rows(database_url, schema, "job") == 1
    assert (await client.get_job(kept)).queue == "stays"


async def test_dead_letter_queue_must_exist(client: QueueClient, schema: str) -> None:
    with pytest.raises(QueueNotFound, match="dead-letter queue 'dlq' does not exist"):
        await client.create_queue("q", dead_letter="dlq")
    assert count_rows(client.conninfo, schema, "queue") == 0
    await client.create_queue("dlq")
    info = await client.create_queue("q", dead_letter="dlq")
    assert info.dead_letter == "dlq"
    await client.create_queue("other")
    with pytest.raises(QueueNotFound):
        await client.update_queue("other", dead_letter="missing")
    assert (await client.get_queue("other")).dead_letter is None


async def test_dead_letter_loops_are_refused_and_change_nothing(
    client: QueueClient, schema: str
) -> None:
    with pytest.raises(InvalidOption, match="own dead-letter queue"):
        await client.create_queue("self", dead_letter="self")
    await client.create_queue("a")
    await client.create_queue("b", dead_letter="a")
    await client.create_queue("c", dead_letter="b")
    with pytest.raises(InvalidOption, match="would form a loop"):
        await client.update_queue("a", dead_letter="c")  # a -> c -> b -> a
    with pytest.raises(InvalidOption, match="own dead-letter queue"):
        await client.update_queue("a", dead_letter="a")
    assert (await client.get_queue("a")).dead_letter is None
    assert count_rows(client.conninfo, schema, "queue") == 3
    # A chain that does not come back is fine, and so is re-saving the same settings.
    await client.create_queue("d", dead_letter="c")
    assert (await client.update_queue("d", retry_limit=5)).dead_letter == "c"


async def test_deleting_a_dead_letter_queue_unlinks_it(client: QueueClient) -> None:
    await client.create_queue("dlq")
    await client.create_queue("q", dead_letter="dlq")
    await client.delete_queue("dlq")
    assert (await client.get_queue("q")).dead_letter is None


async def test_queue_names_are_validated(client: QueueClient) -> None:
    for bad in ("", "a b", "x" * 201, "../etc"):
        with pytest.raises(InvalidName):
            await client.create_queue(bad)
        with pytest.raises(InvalidName):
            await client.get_queue(bad)
    info = await client.create_queue("tenant-7.crm:contacts/sync")
    assert info.name == "tenant-7.crm:contacts/sync"


async def test_list_queues_is_sorted(client: QueueClient) -> None:
    for name in ("b", "a", "c.z", "c.a"):
        await client.create_queue(name)
    assert [q.name for q in await client.list_queues()] == ["a", "b", "c.a", "c.z"]
