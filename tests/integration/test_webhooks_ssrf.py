"""Server-side request forgery: webhooks reach global addresses only, unless a network is
explicitly allowed; the host is resolved and every address checked when the endpoint is
added and again at each connection, so DNS rebinding cannot turn a public name into a
local one."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import pytest

from patchbay.connectors.webhooks import (
    AddressNotAllowed,
    AddressPolicy,
    AttemptOutcome,
    DeliveryState,
    InvalidEndpointUrl,
    Webhooks,
)
from patchbay.connectors.webhooks.testing import Receiver
from patchbay.queue import QueueClient
from patchbay.secrets import LocalKeyProvider, Vault, generate_master_key

PUBLIC = "93.184.216.34"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@pytest.fixture
async def vault(database_url: str, schema: str) -> AsyncIterator[Vault]:
    keys = LocalKeyProvider([generate_master_key("test")])
    async with Vault(database_url, schema=schema, keys=keys) as v:
        yield v


class FakeDns:
    """A resolver that answers from a script: each name's answers in turn, the last one
    repeated; it records every question."""

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.asked.append(host)
        script = self.answers.get(host)
        if not script:
            raise OSError(f"no such host {host}")
        return script.pop(0) if len(script) > 1 else script[0]


async def settled_attempt(webhooks: Webhooks, message_id: Any) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while not (attempts := await webhooks.attempts(message_id)):
        assert loop.time() < deadline, "no attempt recorded"
        await asyncio.sleep(0.01)
    return attempts[0]


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "100.64.0.1",  # shared address space (carrier-grade NAT)
        "169.254.169.254",  # cloud metadata
        "0.0.0.0",
        "224.0.0.1",
        "255.255.255.255",
        "192.0.2.1",  # documentation
        "198.18.0.1",  # benchmarking
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "fd12:3456::1",
        "ff02::1",
        "::ffff:127.0.0.1",  # IPv4-mapped
        "::ffff:169.254.169.254",
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
        "2001:db8::1",  # documentation
        "not-an-address",
    ],
)
def test_non_global_addresses_are_refused_by_default(address: str) -> None:
    assert not AddressPolicy().allows(address)
    assert AddressPolicy(allow_private_networks=True).allows(address) == (
        address != "not-an-address"
    )


@pytest.mark.smoke
def test_global_addresses_and_allowed_networks_pass() -> None:
    policy = AddressPolicy()
    for address in (PUBLIC, "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"):
        assert policy.allows(address), address
    narrow = AddressPolicy(allowed_networks=(ipaddress.ip_network("127.0.0.1/32"),))
    assert narrow.allows("127.0.0.1")
    assert not narrow.allows("127.0.0.2") and not narrow.allows("10.0.0.1")
    with pytest.raises(AddressNotAllowed, match=r"127\.0\.0\.1"):
        policy.check("mixed.test", [PUBLIC, "127.0.0.1"])  # one bad address is enough


async def test_loopback_is_refused_when_not_allowed(
    client: QueueClient, vault: Vault, receiver: Receiver
) -> None:
    # Added while loopback was allowed; delivered by a service that does not allow it.
    async with Webhooks(client, vault, allowed_networks=["127.0.0.1/32"]) as permissive:
        await permissive.add_endpoint("acme", receiver.url)
    async with Webhooks(client, vault) as strict:
        with pytest.raises(AddressNotAllowed):
            await strict.add_endpoint("acme", receiver.url)
        with pytest.raises(AddressNotAllowed):
            await strict.add_endpoint("acme", f"http://localhost:{receiver.port}/hook")
        sent = await strict.send_event("acme", "a", {})
        await strict.work(concurrency=1, poll_interval=0.02)
        attempt = await settled_attempt(strict, sent.message_id)
    assert attempt.outcome is AttemptOutcome.REFUSED and attempt.status is None
    assert "127.0.0.1" in (attempt.error or "")
    assert receiver.count() == 0
    # A refusal is a failed attempt like any other: the schedule goes on.
    (delivery,) = await strict.deliveries(sent.message_id)
    assert delivery.state is DeliveryState.PENDING and delivery.attempts == 1


async def test_dns_rebinding_is_refused_at_connect_time(
    client: QueueClient, vault: Vault, receiver: Receiver
) -> None:
    # The name is public when the endpoint is added, then points at the receiver on
    # loopback (an attacker's DNS flipping its answer).
    dns = FakeDns({"rebind.test": [[PUBLIC], ["127.0.0.1"]]})
    async with Webhooks(client, vault, resolver=dns) as webhooks:
        await webhooks.add_endpoint("acme", f"http://rebind.test:{receiver.port}/hook")
        sent = await webhooks.send_event("acme", "a", {})
        await webhooks.work(concurrency=1, poll_interval=0.02)
        attempt = await settled_attempt(webhooks, sent.message_id)
    assert dns.asked == ["rebind.test", "rebind.test"]  # checked at add and at delivery
    assert attempt.outcome is AttemptOutcome.REFUSED
    assert "'rebind.test' resolves to non-global address(es) 127.0.0.1" in (attempt.error or "")
    assert receiver.count() == 0


async def test_the_connection_goes_to_the_address_that_was_checked(
    client: QueueClient, vault: Vault, receiver: Receiver
) -> None:
    # An allowed name is connected to by the address the check saw, and the request still
    # names the host (Host header), as it would for a public name.
    dns = FakeDns({"hooks.test": [["127.0.0.1"]]})
    async with Webhooks(client, vault, resolver=dns, allowed_networks=["127.0.0.1/32"]) as w:
        await w.add_endpoint("acme", f"http://hooks.test:{receiver.port}/in")
        sent = await w.send_event("acme", "a", {})
        await w.work(concurrency=1, poll_interval=0.02)
        attempt = await settled_attempt(w, sent.message_id)
    assert attempt.outcome is AttemptOutcome.SUCCEEDED
    assert receiver.requests[0].headers["host"] == f"hooks.test:{receiver.port}"
    assert receiver.requests[0].path == "/in"


async def test_names_with_a_private_address_or_none_are_refused_when_added(
    client: QueueClient, vault: Vault
) -> None:
    dns = FakeDns({"mixed.test": [[PUBLIC, "10.0.0.7"]], "empty.test": [[]]})
    async with Webhooks(client, vault, resolver=dns) as webhooks:
        with pytest.raises(AddressNotAllowed, match=r"10\.0\.0\.7"):
            await webhooks.add_endpoint("acme", "https://mixed.test/hook")
        with pytest.raises(AddressNotAllowed, match="no address"):
            await webhooks.add_endpoint("acme", "https://empty.test/hook")
        with pytest.raises(InvalidEndpointUrl, match="cannot resolve"):
            await webhooks.add_endpoint("acme", "https://nowhere.test/hook")
        with pytest.raises(InvalidEndpointUrl):
            await webhooks.add_endpoint("acme", "file:///etc/passwd")
        with pytest.raises(InvalidEndpointUrl):
            await webhooks.add_endpoint("acme", "gopher://example.com/")
        assert await webhooks.list_endpoints() == []
