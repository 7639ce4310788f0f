"""``patchbay webhooks ...`` as an operator runs it: the real command in a subprocess,
against the test database and a real local receiver."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook

from patchbay.connectors.webhooks import Webhooks
from patchbay.connectors.webhooks.testing import Receiver
from patchbay.queue import QueueClient
from patchbay.secrets import (
    LocalKeyProvider,
    Vault,
    format_master_key,
    generate_master_key,
    parse_master_keys,
)

PATCHBAY = str(Path(sys.executable).parent / "patchbay")
KEY = format_master_key(generate_master_key("k1"))


class Cli:
    def __init__(self, url: str, schema: str, home: Path) -> None:
        self.base = [PATCHBAY, "--database-url", url, "--schema", schema, "webhooks"]
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PATCHBAY_")}
        self.env["PATCHBAY_HOME"] = str(home)
        self.env["PATCHBAY_MASTER_KEYS"] = KEY

    def __call__(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*self.base, *args], capture_output=True, text=True, env=self.env, timeout=60
        )
        assert (result.returncode == 0) == ok, result.stdout + result.stderr
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--json").stdout)


@pytest.fixture
def cli(database_url: str, schema: str, tmp_path: Path) -> Cli:
    return Cli(database_url, schema, tmp_path / "home")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


async def _deliver(database_url: str, schema: str, send: list[tuple[str, str]]) -> list[str]:
    """Send events with the Python API and wait until each is delivered or failed."""
    keys = LocalKeyProvider(parse_master_keys(KEY, source="test"))
    async with (
        Vault(database_url, schema=schema, keys=keys) as vault,
        QueueClient(database_url, schema=schema) as client,
        Webhooks(client, vault, allowed_networks=["127.0.0.1/32"], retry_schedule=[0]) as w,
    ):
        await w.work(concurrency=2, poll_interval=0.02)
        ids = []
        for tenant, event_type in send:
            sent = await w.send_event(tenant, event_type, {"event": event_type})
            for _ in range(1000):
                deliveries = await w.deliveries(sent.message_id)
                if all(d.state.value != "pending" for d in deliveries):
                    break
                await asyncio.sleep(0.02)
            ids.append(str(sent.message_id))
        return ids


def test_endpoint_lifecycle_delivery_and_replay(
    cli: Cli, receiver: Receiver, database_url: str, schema: str
) -> None:
    # Loopback is refused unless allowed.
    refused = cli("endpoints", "add", "acme", receiver.url, ok=False)
    assert "non-global" in refused.stderr and "127.0.0.1" in refused.stderr

    added = cli.json(
        "endpoints",
        "add",
        "acme",
        receiver.url,
        "--event-type",
        "invoice.*",
        "--allow-network",
        "127.0.0.1/32",
    )
    secret = added["secret"]
    assert secret.startswith("whsec_") and added["event_types"] == ["invoice.*"]
    endpoint_id = added["id"]
    text = cli("endpoints", "add", "globex", receiver.url, "--allow-private-networks").stdout
    assert "signing secret (shown once" in text

    listed = cli.json("endpoints", "list", "acme")
    assert [e["id"] for e in listed] == [endpoint_id]
    assert secret not in json.dumps(listed)
    table = cli("endpoints", "list").stdout
    assert "invoice.*" in table and "globex" in table and secret not in table

    (message_id,) = asyncio.run(_deliver(database_url, schema, [("acme", "invoice.paid")]))
    Webhook(secret).verify(receiver.requests[0].body, receiver.requests[0].headers)

    messages = cli.json("messages", "list", "acme")
    assert [(m["id"], m["event_type"], m["payload"]) for m in messages] == [
        (message_id, "invoice.paid", {"event": "invoice.paid"})
    ]
    assert "invoice.paid" in cli("messages", "list").stdout
    attempts = cli.json("attempts", message_id)
    assert [(a["attempt"], a["status"], a["outcome"]) for a in attempts] == [(1, 200, "succeeded")]
    assert "succeeded" in cli("attempts", message_id).stdout

    assert cli.json("messages", "replay", message_id) == {"deliveries": 1}
    since = "2000-01-01T00:00:00"
    assert cli.json("messages", "replay", "--tenant", "acme", "--since", since) == {"deliveries": 1}
    assert "queued 0 deliveries" in (
        cli("messages", "replay", "--tenant", "acme", "--since", since, "--failed-only").stdout
    )
    usage = cli("messages", "replay", message_id, "--tenant", "acme", ok=False)
    assert "not both" in usage.stderr

    disabled = cli.json("endpoints", "disable", endpoint_id, "--reason", "receiver moving")
    assert disabled["enabled"] is False and disabled["disabled_reason"] == "receiver moving"
    assert cli.json("endpoints", "list", "--disabled")[0]["id"] == endpoint_id
    replay_refused = cli("messages", "replay", message_id, "--endpoint", endpoint_id, ok=False)
    assert "disabled" in replay_refused.stderr
    assert cli.json("endpoints", "enable", endpoint_id)["enabled"] is True

    rotated = cli.json("endpoints", "rotate-secret", endpoint_id, "--grace", "60")
    assert rotated["secret"] != secret and rotated["previous_secret_ref"] is not None

    missing = cli("attempts", "00000000-0000-0000-0000-000000000000", ok=False)
    assert "not found" in missing.stderr
