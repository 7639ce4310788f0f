"""Webhook delivery end to end: endpoints, signed POSTs a Standard Webhooks receiver
accepts (verified with the ``standardwebhooks`` package), filters, transactional sends,
secret rotation, and bad input that changes nothing."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from patchbay.connectors.webhooks import (
    AddressNotAllowed,
    Delivery,
    DeliveryState,
    InvalidEndpointUrl,
    InvalidEventType,
    InvalidSigningSecret,
    InvalidWebhookPayload,
    Webhooks,
    generate_secret,
)
from patchbay.connectors.webhooks.testing import Receiver
from patchbay.queue import InvalidInput, QueueClient
from patchbay.secrets import LocalKeyProvider, Vault, generate_master_key

LOOPBACK = ["127.0.0.1/32"]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@pytest.fixture
async def vault(database_url: str, schema: str) -> AsyncIterator[Vault]:
    keys = LocalKeyProvider([generate_master_key("test")])
    async with Vault(database_url, schema=schema, keys=keys) as v:
        yield v


@pytest.fixture
async def webhooks(client: QueueClient, vault: Vault) -> AsyncIterator[Webhooks]:
    async with Webhooks(client, vault, allowed_networks=LOOPBACK, timeout=5.0) as w:
        await w.setup()
        yield w


async def settled(
    webhooks: Webhooks, message_id: uuid.UUID, within: float = 10.0
) -> list[Delivery]:
    """The message's deliveries, once none is pending any more."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        deliveries = await webhooks.deliveries(message_id)
        if all(d.state is not DeliveryState.PENDING for d in deliveries):
            return deliveries
        if loop.time() > deadline:
            raise AssertionError(f"deliveries still pending after {within}s: {deliveries}")
        await asyncio.sleep(0.02)


async def _count(conn: psycopg.AsyncConnection[object], schema: str, table: str) -> int:
    cur = await conn.execute(f'select count(*) from "{schema}".{table}')
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])  # type: ignore[call-overload]


@pytest.mark.smoke
async def test_a_delivery_verifies_with_the_standardwebhooks_package(
    webhooks: Webhooks, receiver: Receiver, eventually: object
) -> None:
    endpoint = await webhooks.add_endpoint("acme", receiver.url, event_types=["invoice.paid"])
    secret = await webhooks.reveal_secret(endpoint.id)
    assert secret.startswith("whsec_")
    sent = await webhooks.send_event("acme", "invoice.paid", {"invoice": "in_1", "amount": 42})
    assert len(sent.delivery_ids) == 1
    await webhooks.work(concurrency=2, poll_interval=0.05)
    await eventually(lambda: receiver.count() == 1)  # type: ignore[operator]

    request = receiver.requests[0]
    assert request.headers["webhook-id"] == str(sent.message_id)
    assert request.headers["content-type"] == "application/json"
    payload = Webhook(secret).verify(request.body, request.headers)
    assert payload["type"] == "invoice.paid"
    assert payload["data"] == {"invoice": "in_1", "amount": 42}
    assert payload["timestamp"].endswith("Z")
    # A receiver with another secret rejects it.
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(request.body, request.headers)

    deliveries = await settled(webhooks, sent.message_id)
    assert deliveries[0].state is DeliveryState.SUCCEEDED
    assert deliveries[0].attempts == 1
    attempts = await webhooks.attempts(sent.message_id)
    assert [(a.attempt, a.status, a.outcome.value) for a in attempts] == [(1, 200, "succeeded")]


async def test_event_filters_pick_the_endpoints(webhooks: Webhooks) -> None:
    url = "http://127.0.0.1:9/hook"
    every = await webhooks.add_endpoint("acme", url)
    invoices = await webhooks.add_endpoint("acme", url, event_types=["invoice.*"])
    paid = await webhooks.add_endpoint("acme", url, event_types=["invoice.paid", "refund"])
    other_tenant = await webhooks.add_endpoint("globex", url)
    disabled = await webhooks.add_endpoint("acme", url)
    await webhooks.disable_endpoint(disabled.id, "paused")

    async def targets(event_type: str) -> set[uuid.UUID]:
        sent = await webhooks.send_event("acme", event_type, {})
        return {d.endpoint_id for d in await webhooks.deliveries(sent.message_id)}

    assert await targets("invoice.paid") == {every.id, invoices.id, paid.id}
    assert await targets("invoice.voided") == {every.id, invoices.id}
    assert await targets("refund") == {every.id, paid.id}
    assert await targets("invoices.paid") == {every.id}  # 'invoice.*' needs the dot
    assert await targets("customer.created") == {every.id}
    assert other_tenant.id not in await targets("invoice.paid")


async def test_a_rolled_back_send_leaves_no_message_and_no_job(
    webhooks: Webhooks, client: QueueClient, schema: str, database_url: str
) -> None:
    await webhooks.add_endpoint("acme", "http://127.0.0.1:9/hook")
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        sent = await webhooks.send_event("acme", "order.created", {"n": 1}, conn=conn)
        assert len(sent.delivery_ids) == 1
        await conn.rollback()
        assert await _count(conn, schema, "webhook_message") == 0
        assert await _count(conn, schema, "webhook_delivery") == 0
        assert await _count(conn, schema, "job") == 0

        kept = await webhooks.send_event("acme", "order.created", {"n": 2}, conn=conn)
        await conn.commit()
        assert await _count(conn, schema, "webhook_message") == 1
    job = await client.get_job(kept.delivery_ids[0])
    assert job.queue == "webhook.deliver"
    # Jobs carry the delivery's id, nothing else.
    assert job.data == {"delivery_id": str(kept.delivery_ids[0])}


async def test_a_send_inside_an_autocommit_connection_is_atomic_on_its_own(
    webhooks: Webhooks, database_url: str, schema: str
) -> None:
    await webhooks.add_endpoint("acme", "http://127.0.0.1:9/hook")
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        sent = await webhooks.send_event("acme", "a", None, conn=conn)
        assert len(sent.delivery_ids) == 1
        with pytest.raises(InvalidWebhookPayload):
            await webhooks.send_event("acme", "a", {"x": float("nan")}, conn=conn)
        assert await _count(conn, schema, "webhook_message") == 1


async def test_message_ids_make_sends_idempotent(webhooks: Webhooks) -> None:
    await webhooks.add_endpoint("acme", "http://127.0.0.1:9/hook")
    mid = uuid.uuid4()
    first = await webhooks.send_event("acme", "a", {"v": 1}, message_id=mid)
    again = await webhooks.send_event("acme", "a", {"v": 2}, message_id=mid)
    assert first.created and not again.created
    assert again.delivery_ids == ()
    assert (await webhooks.get_message(mid)).payload == {"v": 1}


async def test_rotation_sends_both_signatures_during_the_grace_period(
    webhooks: Webhooks, receiver: Receiver, eventually: object
) -> None:
    endpoint = await webhooks.add_endpoint("acme", receiver.url)
    old = await webhooks.reveal_secret(endpoint.id)
    rotated = await webhooks.rotate_secret(endpoint.id, grace=3600)
    new = await webhooks.reveal_secret(endpoint.id)
    assert new != old and rotated.previous_secret_ref is not None
    await webhooks.work(concurrency=2, poll_interval=0.05)
    await webhooks.send_event("acme", "a", {"n": 1})
    await eventually(lambda: receiver.count() == 1)  # type: ignore[operator]
    request = receiver.requests[0]
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    # A receiver still on the old secret and one already on the new both accept it.
    Webhook(old).verify(request.body, request.headers)
    Webhook(new).verify(request.body, request.headers)

    # Grace over (a second rotation with no grace): only the newest secret signs, and
    # the secret two rotations back is gone from the vault.
    await webhooks.rotate_secret(endpoint.id, grace=0)
    newest = await webhooks.reveal_secret(endpoint.id)
    await webhooks.send_event("acme", "a", {"n": 2})
    await eventually(lambda: receiver.count() == 2)  # type: ignore[operator]
    request = receiver.requests[1]
    assert len(request.headers["webhook-signature"].split(" ")) == 1
    Webhook(newest).verify(request.body, request.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new).verify(request.body, request.headers)
    versions = [s.versions for s in await webhooks.vault.list_secrets("acme")]
    assert versions == [(2, 3)]


async def test_bad_input_is_refused_and_writes_nothing(
    webhooks: Webhooks, database_url: str, schema: str
) -> None:
    cases = [
        ("ftp://example.com/x", InvalidEndpointUrl),
        ("http://user:pw@example.com/x", InvalidEndpointUrl),
        ("not a url", InvalidEndpointUrl),
        ("http://127.0.0.2/x", AddressNotAllowed),  # loopback outside the allowed /32
        ("http://10.0.0.1/x", AddressNotAllowed),
        ("http://169.254.169.254/latest/meta-data", AddressNotAllowed),
        ("http://[::1]/x", AddressNotAllowed),
        ("http://[::ffff:10.0.0.1]/x", AddressNotAllowed),
    ]
    for url, error in cases:
        with pytest.raises(error):
            await webhooks.add_endpoint("acme", url)
    with pytest.raises(InvalidEventType):
        await webhooks.add_endpoint("acme", "http://127.0.0.1:9/x", event_types=[])
    with pytest.raises(InvalidEventType):
        await webhooks.add_endpoint("acme", "http://127.0.0.1:9/x", event_types=["a b"])
    with pytest.raises(InvalidSigningSecret):
        await webhooks.add_endpoint("acme", "http://127.0.0.1:9/x", secret="whsec_c2hvcnQ=")
    with pytest.raises(InvalidInput):  # the queue room's base class of bad input
        await webhooks.add_endpoint("no tenant!", "http://127.0.0.1:9/x")
    with pytest.raises(InvalidWebhookPayload):
        await webhooks.send_event("acme", "a", {"blob": "x" * 300_000})
    with pytest.raises(InvalidWebhookPayload):
        await webhooks.send_event("acme", "a", {"f": object()})
    with pytest.raises(InvalidEventType):
        await webhooks.send_event("acme", "", {})
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        for table in ("webhook_endpoint", "webhook_message", "webhook_delivery", "job"):
            assert await _count(conn, schema, table) == 0, table
        cur = await conn.execute(f'select count(*) from "{schema}".secret')
        assert (await cur.fetchone()) == (0,)


async def test_endpoint_listing_update_and_delete(webhooks: Webhooks) -> None:
    a = await webhooks.add_endpoint("acme", "http://127.0.0.1:9/a", description="billing")
    b = await webhooks.add_endpoint("acme", "http://127.0.0.1:9/b", event_types=["x"])
    await webhooks.add_endpoint("globex", "http://127.0.0.1:9/c")
    assert [e.id for e in await webhooks.list_endpoints("acme")] == [a.id, b.id]
    assert len(await webhooks.list_endpoints()) == 3
    changed = await webhooks.update_endpoint(b.id, event_types=None, url="http://127.0.0.1:9/d")
    assert changed.event_types is None and changed.url == "http://127.0.0.1:9/d"
    assert changed.description == ""
    assert json.loads(json.dumps(changed.to_json()))["id"] == str(b.id)
    await webhooks.delete_endpoint(a.id)
    assert [e.id for e in await webhooks.list_endpoints("acme")] == [b.id]
    names = [s.name for s in await webhooks.vault.list_secrets("acme")]
    assert names == [f"webhooks/endpoint/{b.id}"]
