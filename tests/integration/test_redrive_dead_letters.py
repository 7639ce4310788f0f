"""Dead-letter redrive: copies in a dead-letter queue move back to the queue they failed
in (all, or by id), queued at once under that queue's policy, and run again."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from conftest import Eventually

from patchbay.queue import (
    InvalidJobState,
    Job,
    JobNotFound,
    JobRecord,
    JobState,
    QueueClient,
    QueueNotFound,
)


async def _fail(job: Job) -> None:
    raise RuntimeError(f"bad {job.data}")


async def _dead_letter(
    client: QueueClient, eventually: Eventually, items: list[object], **send: object
) -> list[JobRecord]:
    """Send ``items`` to queue "src", fail them for good, return their copies in "dlq"."""
    ids = [await client.send("src", item, **send) for item in items]  # type: ignore[arg-type]
    worker = await client.work("src", _fail)
    await eventually(lambda: worker.failed == len(ids))
    await worker.stop()
    copies = (await client.list_jobs(queue="dlq")).jobs
    by_origin = {c.origin_id: c for c in copies}
    return [by_origin[i] for i in ids]


@pytest.fixture
async def queues(client: QueueClient) -> QueueClient:
    await client.create_queue("dlq")
    await client.create_queue("src", retry_limit=0, dead_letter="dlq")
    return client


async def test_redrive_all_moves_every_copy_back_and_it_runs_again(
    queues: QueueClient, eventually: Eventually
) -> None:
    client = queues
    copies = await _dead_letter(client, eventually, [1, 2, 3])
    assert all(c.origin_queue == "src" and c.state is JobState.QUEUED for c in copies)

    assert await client.redrive("dlq") == 3
    assert (await client.list_jobs(queue="dlq")).jobs == []
    for copy in copies:
        moved = await client.get_job(copy.id)
        assert (moved.queue, moved.state, moved.data) == ("src", JobState.QUEUED, copy.data)
        assert (moved.origin_queue, moved.origin_id) == ("src", copy.origin_id)

    seen: list[int] = []

    async def ok(job: Job) -> None:
        seen.append(job.data)

    worker = await client.work("src", ok)
    await eventually(lambda: worker.completed == 3)
    await worker.stop()
    assert sorted(seen) == [1, 2, 3]
    assert await client.redrive("dlq") == 0


async def test_redrive_by_id_moves_exactly_those(
    queues: QueueClient, eventually: Eventually
) -> None:
    client = queues
    a, b, c = await _dead_letter(client, eventually, ["a", "b", "c"])
    assert await client.redrive("dlq", ids=[str(a.id), c.id, a.id]) == 2
    assert (await client.get_job(a.id)).queue == "src"
    assert (await client.get_job(b.id)).queue == "dlq"
    assert (await client.get_job(c.id)).queue == "src"
    assert await client.redrive("dlq", ids=[]) == 0


async def test_redrive_by_id_is_all_or_nothing(queues: QueueClient, eventually: Eventually) -> None:
    client = queues
    (copy,) = await _dead_letter(client, eventually, ["x"])
    original = copy.origin_id
    assert original is not None
    plain = await client.send("dlq", "not a copy")
    cases: list[tuple[list[object], type[Exception], str]] = [
        ([copy.id, uuid.uuid4()], JobNotFound, "not found"),
        ([copy.id, plain], InvalidJobState, "not a dead-letter copy"),
        ([copy.id, original], InvalidJobState, "in queue 'src'"),
    ]
    for ids, error, message in cases:
        with pytest.raises(error, match=message):
            await client.redrive("dlq", ids=ids)  # type: ignore[arg-type]
        assert (await client.get_job(copy.id)).queue == "dlq"
    with pytest.raises(QueueNotFound):
        await client.redrive("nope")


async def test_active_copies_are_skipped_and_refused_by_id(
    queues: QueueClient, eventually: Eventually, database_url: str, schema: str
) -> None:
    client = queues
    busy, idle = await _dead_letter(client, eventually, ["busy", "idle"])
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            f"update \"{schema}\".job set state = 'active', attempt = 1 where id = %s",
            (busy.id,),
        )
    with pytest.raises(InvalidJobState, match="running it"):
        await client.redrive("dlq", ids=[busy.id])
    assert await client.redrive("dlq") == 1
    assert (await client.get_job(busy.id)).queue == "dlq"
    assert (await client.get_job(idle.id)).queue == "src"


async def test_copies_whose_source_queue_is_gone_stay(
    client: QueueClient, eventually: Eventually
) -> None:
    await client.create_queue("dlq")
    await client.create_queue("src", retry_limit=0, dead_letter="dlq")
    (copy,) = await _dead_letter(client, eventually, ["orphan"])
    await client.delete_queue("src")
    with pytest.raises(QueueNotFound, match="no longer exists"):
        await client.redrive("dlq", ids=[copy.id])
    assert await client.redrive("dlq") == 0
    assert (await client.get_job(copy.id)).queue == "dlq"


async def test_a_redriven_job_takes_its_source_policy_and_keys(
    client: QueueClient, eventually: Eventually, database_url: str, schema: str
) -> None:
    await client.create_queue("dlq")
    await client.create_queue("dlq2")
    await client.create_queue("src", retry_limit=0, dead_letter="dlq")
    (copy,) = await _dead_letter(client, eventually, ["keyed"], group="integration-7")
    await client.update_queue("src", retry_limit=4, expire_in=60, dead_letter="dlq2")

    assert await client.redrive("dlq", ids=[copy.id]) == 1
    moved = await client.get_job(copy.id)
    assert (moved.retry_limit, moved.expire_in, moved.dead_letter) == (4, 60.0, "dlq2")
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            f'select group_key from "{schema}".job where id = %s', (copy.id,)
        ).fetchone()
    assert row == ("integration-7",)  # back under the integration's concurrency limit


async def test_a_redrive_is_recorded_when_the_source_queue_records_events(
    client: QueueClient, eventually: Eventually
) -> None:
    await client.create_queue("dlq")
    await client.create_queue("src", retry_limit=0, dead_letter="dlq", events=True)
    (copy,) = await _dead_letter(client, eventually, ["e"])
    await client.redrive("dlq")
    (event,) = await client.job_events(copy.id)
    assert (event.kind, event.queue, event.from_state, event.to_state) == (
        "redriven",
        "src",
        JobState.QUEUED,
        JobState.QUEUED,
    )
    assert event.data == {"from_queue": "dlq"}
