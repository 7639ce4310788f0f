"""Bad input is refused at the edge with a typed error, before any SQL runs.

The clients here point at a port nothing listens on: a call that got past validation would
fail with a connection error instead of the typed error these tests expect.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from patchbay.queue import (
    InvalidInput,
    InvalidName,
    InvalidOption,
    InvalidPayload,
    JobSpec,
    PayloadTooLarge,
    QueueClient,
    QueueSettings,
    SyncQueueClient,
)
from patchbay.queue._payload import encode_payload

NOWHERE = "postgresql://postgres@127.0.0.1:1/nowhere?connect_timeout=1"


@pytest.fixture
def sync_client() -> SyncQueueClient:
    return SyncQueueClient(NOWHERE, schema="patchbay", max_payload_bytes=1000)


BAD_QUEUE_NAMES: list[Any] = [
    "",
    " ",
    "has space",
    "-leading-dash",
    ".leading-dot",
    "x" * 201,
    "naïve",
    "nul\x00byte",
    "semi;colon",
    "quote'name",
    'dq"name',
    None,
    42,
    b"bytes",
]
GOOD_QUEUE_NAMES = ["a", "emails", "tenant-1.sync:crm/contacts", "_private", "x" * 200]


@pytest.mark.parametrize("name", BAD_QUEUE_NAMES, ids=repr)
def test_bad_queue_names_raise_invalid_name(sync_client: SyncQueueClient, name: Any) -> None:
    with pytest.raises(InvalidName, match="invalid queue name"):
        sync_client.send(name, {"a": 1})


@pytest.mark.parametrize("name", GOOD_QUEUE_NAMES)
def test_good_queue_names_pass_validation(name: str) -> None:
    from patchbay.queue.settings import validate_queue_name

    assert validate_queue_name(name) == name


# At most 54 characters: the NOTIFY channel "patchbay:<schema>" must fit in 63 bytes.
@pytest.mark.parametrize(
    "schema", ["Patchbay", "1abc", "a-b", "x" * 55, "x" * 64, "", "public; drop"]
)
def test_bad_schema_names_raise_invalid_name(schema: str) -> None:
    with pytest.raises(InvalidName, match="invalid schema name"):
        QueueClient(NOWHERE, schema=schema)
    with pytest.raises(InvalidName):
        SyncQueueClient(NOWHERE, schema=schema)


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"colour": "red"}, "unknown send option"),
        ({"retry_limt": 3}, "unknown send option"),
        ({"start_after": -1}, "start_after"),
        ({"start_after": timedelta(seconds=-5)}, "start_after"),
        ({"start_after": math.nan}, "start_after"),
        ({"start_after": math.inf}, "start_after"),
        ({"start_after": "soon"}, "start_after"),
        ({"start_after": datetime(2030, 1, 1)}, "timezone-aware"),
        ({"retry_delay": -0.5}, "retry_delay"),
        ({"retry_delay_max": math.nan}, "retry_delay_max"),
        ({"expire_in": 0}, "expire_in"),
        ({"expire_in": -10}, "expire_in"),
        ({"retry_limit": -1}, "retry_limit"),
        ({"retry_limit": 1.5}, "retry_limit"),
        ({"retry_limit": True}, "retry_limit"),
        ({"retry_backoff": "yes"}, "retry_backoff"),
        ({"priority": "high"}, "priority"),
        ({"priority": 2**31}, "priority"),
        ({"priority": 1.0}, "priority"),
        ({"dead_letter": "bad name"}, "invalid queue name"),
        ({"id": "not-a-uuid"}, "UUID"),
    ],
    ids=lambda v: repr(v) if isinstance(v, dict) else "",
)
def test_bad_send_options_raise_invalid_option(
    sync_client: SyncQueueClient, options: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(InvalidInput, match=fragment) as info:
        sync_client.send("q", {"a": 1}, **options)
    expected = InvalidName if "queue name" in fragment else InvalidOption
    assert type(info.value) is expected


class NotJson:
    pass


def _deep(n: int) -> Any:
    data: Any = 0
    for _ in range(n):
        data = [data]
    return data


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"x": math.nan}, "not JSON"),
        ({"x": math.inf}, "not JSON"),
        ({"x": -math.inf}, "not JSON"),
        ({"x": NotJson()}, "not JSON"),
        ({"x": {1, 2}}, "not JSON"),
        (b"bytes", "not JSON"),
        ({"x": "nul\x00inside"}, "NUL"),
        ({"nul\x00key": 1}, "NUL"),
        (["\\\x00"], "NUL"),
        ({"x": "lone \ud800 surrogate"}, "not valid Unicode"),
        ({"\udfff": 1}, "not valid Unicode"),
        (_deep(100_000), "nested too deeply"),
    ],
    ids=lambda v: type(v).__name__,
)
def test_bad_payloads_raise_invalid_payload(
    sync_client: SyncQueueClient, data: Any, fragment: str
) -> None:
    with pytest.raises(InvalidPayload, match=fragment):
        sync_client.send("q", data)


def test_oversized_payload_raises_payload_too_large(sync_client: SyncQueueClient) -> None:
    with pytest.raises(PayloadTooLarge, match="over the limit of 1000 bytes"):
        sync_client.send("q", "x" * 1000)  # 1002 bytes with the quotes
    # The limit counts UTF-8 bytes, not characters.
    with pytest.raises(PayloadTooLarge):
        sync_client.send("q", "é" * 500)
    assert len(encode_payload("x" * 998, limit=1000)) == 1000  # exactly at the limit is fine


def test_send_many_validates_every_item_before_writing(sync_client: SyncQueueClient) -> None:
    with pytest.raises(InvalidPayload, match="item 2"):
        sync_client.send_many("q", [{"ok": 1}, {"ok": 2}, {"bad": math.nan}])
    with pytest.raises(PayloadTooLarge, match="item 1"):
        sync_client.send_many("q", [{"ok": 1}, "y" * 5000])
    with pytest.raises(InvalidOption, match="JobSpec"):
        sync_client.send_many("q", [1, 2], id="0190b6e0-0000-7000-8000-000000000000")  # type: ignore[call-arg]
    with pytest.raises(InvalidOption, match="UUID"):
        sync_client.send_many("q", [JobSpec({"a": 1}, id="nope")])
    with pytest.raises(InvalidOption, match="priority"):
        sync_client.send_many("q", [JobSpec({"a": 1}, priority=True)])
    with pytest.raises(InvalidOption, match="start_after"):
        sync_client.send_many("q", [JobSpec({"a": 1}, start_after=-3)])


async def test_async_client_validates_before_touching_the_pool() -> None:
    client = QueueClient(NOWHERE, max_payload_bytes=50)  # never opened
    with pytest.raises(InvalidName):
        await client.send("bad name", {})
    with pytest.raises(InvalidOption):
        await client.send("q", {}, nope=1)  # type: ignore[call-arg]
    with pytest.raises(PayloadTooLarge):
        await client.send("q", "z" * 100)
    with pytest.raises(InvalidPayload):
        await client.send_many("q", [{"n": math.nan}])
    with pytest.raises(InvalidName):
        await client.create_queue("bad name")
    with pytest.raises(InvalidOption, match="unknown queue option"):
        await client.create_queue("q", retries=3)
    with pytest.raises(InvalidOption):
        await client.get_job("not-a-uuid")
    with pytest.raises(InvalidOption, match="unknown job state"):
        await client.list_jobs(state="sleeping")
    with pytest.raises(InvalidOption, match="cursor"):
        await client.list_jobs(cursor="garbage")
    with pytest.raises(InvalidOption, match="limit"):
        await client.list_jobs(limit=0)


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"retries": 3}, "unknown queue option"),
        ({"retry_limit": -1}, "retry_limit"),
        ({"retry_delay": -1.0}, "retry_delay"),
        ({"retry_delay": math.nan}, "retry_delay"),
        ({"retry_backoff": 1}, "retry_backoff"),
        ({"retry_delay_max": -1}, "retry_delay_max"),
        ({"expire_in": 0}, "expire_in"),
        ({"retention": math.inf}, "retention"),
        ({"dead_letter": "no spaces allowed"}, "invalid queue name"),
    ],
    ids=lambda v: repr(v) if isinstance(v, dict) else "",
)
def test_bad_queue_settings_raise_typed_errors(options: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidInput, match=fragment):
        QueueSettings.build(**options)


def test_queue_settings_defaults_and_durations() -> None:
    settings = QueueSettings.build(retry_delay=timedelta(minutes=1), expire_in=30)
    assert settings.retry_delay == 60.0
    assert settings.expire_in == 30.0
    assert settings.retry_limit == 2
    assert settings.retry_backoff is True
    assert settings.dead_letter is None


@pytest.mark.parametrize(
    "kwargs",
    [{"pool_max": 0}, {"pool_min": -1}, {"max_payload_bytes": 0}, {"maintenance_interval": 0}],
)
def test_bad_client_settings_raise_invalid_option(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidOption):
        QueueClient(NOWHERE, **kwargs)


def _storable(data: Any) -> bool:
    """What jsonb can hold: finite numbers, text without NUL or unpaired surrogates."""
    if isinstance(data, float):
        return math.isfinite(data)
    if isinstance(data, str):
        return "\x00" not in data and not any("\ud800" <= c <= "\udfff" for c in data)
    if isinstance(data, list):
        return all(_storable(v) for v in data)
    if isinstance(data, dict):
        return all(_storable(k) and _storable(v) for k, v in data.items())
    return True


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(JSONISH)
def test_payload_encoding_round_trips_exactly_what_jsonb_can_store(data: Any) -> None:
    if not _storable(data):
        with pytest.raises(InvalidPayload):
            encode_payload(data, limit=1 << 20)
        return
    text = encode_payload(data, limit=1 << 20)
    assert json.loads(text) == data
