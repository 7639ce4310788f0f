"""Replay: one message again (to all its endpoints or one), or every message of a time
range, optionally only where delivery failed; replays carry the same webhook-id and
body, so receivers can deduplicate."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks import Webhook

from patchbay.connectors.webhooks import (
    DeliveryState,
    EndpointDisabled,
    EndpointNotFound,
    MessageNotFound,
    Webhooks,
)
from patchbay.connectors.webhooks.testing import Receiver
from patchbay.queue import FrozenClock, QueueClient
from patchbay.secrets import LocalKeyProvider, Vault, generate_master_key

T0 = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(T0)


@pytest.fixture
async def webhooks(database_url: str, schema: str, clock: FrozenClock) -> AsyncIterator[Webhooks]:
    keys = LocalKeyProvider([generate_master_key("test")])
    async with (
        Vault(database_url, schema=schema, keys=keys) as vault,
        QueueClient(database_url, schema=schema, clock=clock, redact=vault.redactor) as client,
        # One attempt per delivery: a failure settles at once.
        Webhooks(client, vault, allowed_networks=["127.0.0.1/32"], retry_schedule=[0]) as w,
    ):
        await w.work(concurrency=2, poll_interval=0.02)
        yield w


async def settle(webhooks: Webhooks, message_id: uuid.UUID) -> list[DeliveryState]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while True:
        states = [d.state for d in await webhooks.deliveries(message_id)]
        if DeliveryState.PENDING not in states:
            return states
        assert loop.time() < deadline, f"still pending: {states}"
        await asyncio.sleep(0.01)


async def test_replaying_one_message_sends_the_same_id_and_body(
    webhooks: Webhooks, receiver: Receiver
) -> None:
    endpoint = await webhooks.add_endpoint("acme", receiver.url)
    other = await webhooks.add_endpoint("acme", receiver.url + "/2")
    secret = await webhooks.reveal_secret(endpoint.id)
    sent = await webhooks.send_event("acme", "invoice.paid", {"id": "in_1"})
    assert await settle(webhooks, sent.message_id) == [DeliveryState.SUCCEEDED] * 2

    again = await webhooks.replay_message(sent.message_id, endpoint_id=endpoint.id)
    assert len(again) == 1
    assert await settle(webhooks, sent.message_id) == [DeliveryState.SUCCEEDED] * 3
    first, replayed = [r for r in receiver.requests if r.path == "/hook"]
    assert replayed.headers["webhook-id"] == first.headers["webhook-id"] == str(sent.message_id)
    assert replayed.body == first.body
    Webhook(secret).verify(replayed.body, replayed.headers)
    deliveries = await webhooks.deliveries(sent.message_id)
    # (All made at the same frozen instant: compared as a set.)
    assert {(d.endpoint_id, d.replay) for d in deliveries} == {
        (endpoint.id, False),
        (other.id, False),
        (endpoint.id, True),
    }
    # Without an endpoint: every enabled endpoint it matches.
    assert len(await webhooks.replay_message(sent.message_id)) == 2
    await webhooks.disable_endpoint(other.id)
    assert len(await webhooks.replay_message(sent.message_id)) == 1


async def test_replay_refuses_unknown_foreign_and_disabled_targets(
    webhooks: Webhooks, receiver: Receiver
) -> None:
    mine = await webhooks.add_endpoint("acme", receiver.url)
    foreign = await webhooks.add_endpoint("globex", receiver.url)
    sent = await webhooks.send_event("acme", "a", {})
    with pytest.raises(MessageNotFound):
        await webhooks.replay_message(uuid.uuid4())
    with pytest.raises(EndpointNotFound):
        await webhooks.replay_message(sent.message_id, endpoint_id=uuid.uuid4())
    with pytest.raises(EndpointNotFound, match="not an endpoint of tenant 'acme'"):
        await webhooks.replay_message(sent.message_id, endpoint_id=foreign.id)
    await webhooks.disable_endpoint(mine.id, "maintenance")
    with pytest.raises(EndpointDisabled, match="maintenance"):
        await webhooks.replay_message(sent.message_id, endpoint_id=mine.id)
    with pytest.raises(EndpointDisabled):
        await webhooks.replay("acme", T0 - HOUR, endpoint_id=mine.id)


async def test_replay_by_time_range_and_only_what_failed(
    webhooks: Webhooks, receiver: Receiver, clock: FrozenClock
) -> None:
    endpoint = await webhooks.add_endpoint("acme", receiver.url)
    await webhooks.add_endpoint("globex", receiver.url)
    ids: list[uuid.UUID] = []
    for n in range(5):  # one message an hour; the 2nd and 4th fail
        if n in (1, 3):
            receiver.respond(500)
        sent = await webhooks.send_event("acme", "tick", {"n": n})
        await settle(webhooks, sent.message_id)
        ids.append(sent.message_id)
        clock.advance(HOUR)
    foreign = await webhooks.send_event("globex", "tick", {})  # never replayed for acme
    await settle(webhooks, foreign.message_id)
    listed = await webhooks.list_messages("acme", since=T0 + HOUR, until=T0 + 3 * HOUR)
    assert [m.id for m in listed] == [ids[2], ids[1]]  # newest first, until excluded
    assert [m.payload["n"] for m in listed] == [2, 1]

    before = receiver.count()
    # Small batches: the keyset walk over the range must not skip or repeat messages.
    queued = await webhooks.replay("acme", T0, T0 + 5 * HOUR, failed_only=True, batch_size=2)
    assert queued == 2
    for mid in ids:
        await settle(webhooks, mid)
    replayed_ids = {r.headers["webhook-id"] for r in receiver.requests[before:]}
    assert replayed_ids == {str(ids[1]), str(ids[3])}
    # Nothing failed any more: a second recovery finds nothing to do.
    assert await webhooks.replay("acme", T0, failed_only=True) == 0

    assert await webhooks.replay("acme", T0 + HOUR, T0 + 3 * HOUR, endpoint_id=endpoint.id) == 2
    assert await webhooks.replay("acme", T0, batch_size=1) == 5
    for mid in ids:
        await settle(webhooks, mid)
    states = [d.state for mid in ids for d in await webhooks.deliveries(mid)]
    assert states.count(DeliveryState.FAILED) == 2  # the original failures stay recorded


async def test_purge_deletes_old_messages_with_their_deliveries_and_attempts(
    webhooks: Webhooks, receiver: Receiver, clock: FrozenClock
) -> None:
    await webhooks.add_endpoint("acme", receiver.url)
    old = [await webhooks.send_event("acme", "a", {"n": n}) for n in range(3)]
    for sent in old:
        await settle(webhooks, sent.message_id)
    clock.advance(24 * HOUR)
    recent = await webhooks.send_event("acme", "a", {"n": 3})
    await settle(webhooks, recent.message_id)
    assert await webhooks.purge(T0 + HOUR, batch_size=2) == 3
    for sent in old:
        with pytest.raises(MessageNotFound):
            await webhooks.attempts(sent.message_id)
    assert len(await webhooks.attempts(recent.message_id)) == 1
    assert await webhooks.purge(T0 + HOUR) == 0
