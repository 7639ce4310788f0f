"""The example contacts connector without the queue: plugin discovery, its declaration, its
config model, its version upgrades, the SDK's HTTP client against the fake API (retries and
error mapping), ``check()`` and local runs (``run_local``)."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from importlib.metadata import entry_points
from typing import Any

import pytest
from patchbay_example_contacts import ContactsConfig, ContactsConnector
from patchbay_example_contacts.fake_api import FakeContactsApi, format_time
from pydantic import ValidationError

from patchbay.connectors import (
    ENTRY_POINT_GROUP,
    AuthError,
    CheckContext,
    ConfigError,
    HttpClient,
    RateLimited,
    RequestFailed,
    RequestRejected,
    discover,
    load_connector,
    run_local,
)
from patchbay.connectors.connector import upgrade

TOKEN = "unit-token-5f0c2a"
REF = "secret://local/contacts/token"
SECRETS = {REF: TOKEN}


@pytest.fixture
def api() -> Iterator[FakeContactsApi]:
    with FakeContactsApi(contacts=60, tokens={TOKEN}, page_size=25) as server:
        yield server


def config(api: FakeContactsApi, **overrides: Any) -> dict[str, Any]:
    return {"base_url": api.url, "token": REF, "page_size": 25, **overrides}


@pytest.fixture
async def http() -> AsyncIterator[HttpClient]:
    client = HttpClient(headers={"Authorization": f"Bearer {TOKEN}"}, attempts=3)
    yield client
    await client.aclose()


# -- the plugin ----------------------------------------------------------------------------


@pytest.mark.smoke
def test_the_plugin_is_found_through_its_entry_point() -> None:
    points = {p.name: p.value for p in entry_points(group=ENTRY_POINT_GROUP)}
    assert points["contacts"] == "patchbay_example_contacts:ContactsConnector"
    assert discover()["contacts"] is ContactsConnector
    assert load_connector("contacts") is ContactsConnector
    assert load_connector("patchbay_example_contacts:ContactsConnector") is ContactsConnector


def test_it_declares_a_sync_and_a_daily_backfill() -> None:
    ContactsConnector.validate_class()
    jobs = ContactsConnector.job_types()
    assert (jobs["contacts"].kind, jobs["contacts"].every) == ("sync", "*/15 * * * *")
    history = jobs["contacts_history"]
    assert (history.kind, history.window) == ("backfill", timedelta(days=1))
    assert history.priority < jobs["contacts"].priority  # backfills yield to syncs
    assert ContactsConnector.queue_name("contacts_history") == "contacts.contacts_history"
    described = ContactsConnector().describe()
    assert described["config_schema"]["properties"]["token"]["format"] == "secret-ref"
    assert described["config_schema"]["required"] == ["base_url", "token"]


def test_config_holds_references_never_tokens() -> None:
    good = ContactsConfig.model_validate({"base_url": "https://api.example.com/", "token": REF})
    assert good.base_url == "https://api.example.com" and good.page_size == 100
    for bad in (
        {"base_url": "https://api.example.com", "token": TOKEN},  # a value, not a reference
        {"base_url": "ftp://api.example.com", "token": REF},
        {"base_url": "https://api.example.com", "token": REF, "page_size": 0},
        {"base_url": "https://api.example.com", "token": REF, "colour": "red"},
    ):
        with pytest.raises(ValidationError):
            ContactsConfig.model_validate(bad)


def test_version_1_payloads_and_state_are_upgraded() -> None:
    old_config = {"api_url": "https://api.example.com", "token": REF}
    new_config = upgrade(old_config, 1, 2, ContactsConnector.payload_upgrades, "job payload")
    assert new_config == {"base_url": "https://api.example.com", "token": REF}
    ContactsConfig.model_validate(new_config)
    old_state = {"since": "2024-01-05T00:00:00.000Z"}
    new_state = upgrade(old_state, 1, 2, ContactsConnector.state_upgrades, "state")
    assert new_state == {"updated_after": "2024-01-05T00:00:00.000Z"}
    assert upgrade(new_state, 2, 2, ContactsConnector.state_upgrades, "state") == new_state


# -- the SDK's HTTP client against the fake -------------------------------------------------


async def test_5xx_is_retried_by_the_client_until_it_passes(
    api: FakeContactsApi, http: HttpClient
) -> None:
    api.fail(500, times=2)
    response = await http.get(f"{api.url}/v1/me")
    assert response.status_code == 200
    assert [r.status for r in api.log] == [500, 500, 200]
    assert http.requests == 3


async def test_5xx_past_the_attempts_is_a_transient_request_failure(
    api: FakeContactsApi, http: HttpClient
) -> None:
    api.fail(503, times=3)
    with pytest.raises(RequestFailed) as failed:
        await http.get(f"{api.url}/v1/me")
    assert failed.value.status == 503 and failed.value.retryable
    assert api.requests == 3


async def test_connection_errors_are_retried_then_fail_without_status() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = HttpClient(attempts=2)
    with pytest.raises(RequestFailed) as failed:
        await client.get(f"http://127.0.0.1:{port}/v1/me")
    await client.aclose()
    assert failed.value.status is None and client.requests == 2


async def test_401_is_an_auth_error_at_once(api: FakeContactsApi, http: HttpClient) -> None:
    api.revoke(TOKEN)
    with pytest.raises(AuthError) as failed:
        await http.get(f"{api.url}/v1/me")
    assert failed.value.retryable is False
    assert TOKEN not in str(failed.value)
    assert api.requests == 1


async def test_429_is_rate_limited_with_the_providers_retry_after(
    api: FakeContactsApi, http: HttpClient
) -> None:
    api.fail(429, retry_after=7)
    with pytest.raises(RateLimited) as limited:
        await http.get(f"{api.url}/v1/me")
    assert limited.value.retry_after == 7.0 == limited.value.delay
    assert api.requests == 1  # not retried in place: the job gives its slot back


@pytest.mark.parametrize("status", [400, 404, 410, 422])
async def test_a_client_error_in_get_json_is_rejected_at_once_not_retried(
    api: FakeContactsApi, http: HttpClient, status: int
) -> None:
    api.fail(status, times=3)
    with pytest.raises(RequestRejected) as rejected:
        await http.get_json(f"{api.url}/v1/me")
    assert rejected.value.status == status and rejected.value.retryable is False
    assert api.requests == 1  # the same request would fail the same way


@pytest.mark.parametrize("status", [408, 409, 425])
async def test_client_errors_that_may_pass_stay_transient_in_get_json(
    api: FakeContactsApi, http: HttpClient, status: int
) -> None:
    api.fail(status)
    with pytest.raises(RequestFailed) as failed:
        await http.get_json(f"{api.url}/v1/me")
    assert failed.value.status == status and failed.value.retryable


async def test_paginate_stops_at_a_rejected_page(api: FakeContactsApi, http: HttpClient) -> None:
    api.fail(404, after=1)
    pages = http.paginate(f"{api.url}/v1/contacts", params={"limit": 25})
    assert len((await anext(pages)).items) == 25
    with pytest.raises(RequestRejected):
        await anext(pages)


async def test_paginate_follows_cursors(api: FakeContactsApi, http: HttpClient) -> None:
    pages = [p async for p in http.paginate(f"{api.url}/v1/contacts", params={"limit": 25})]
    assert [len(p.items) for p in pages] == [25, 25, 10]
    assert pages[-1].cursor is None


# -- check() ----------------------------------------------------------------------------------


async def check(api: FakeContactsApi, **overrides: Any) -> int:
    http = HttpClient()

    async def resolve(ref: str) -> str:
        return SECRETS[ref]

    try:
        await ContactsConnector().check(
            CheckContext(
                tenant="local",
                integration="local",
                config=ContactsConfig.model_validate(config(api, **overrides)),
                http=http,
                resolve=resolve,
                log=logging.LoggerAdapter(logging.getLogger("test"), {}),
            )
        )
    finally:
        await http.aclose()
    return http.requests


async def test_check_calls_the_api_with_the_token(api: FakeContactsApi) -> None:
    assert await check(api) == 1
    assert [(r.path, r.authorized, r.status) for r in api.log] == [("/v1/me", True, 200)]


async def test_check_reports_a_revoked_token_and_a_wrong_url(api: FakeContactsApi) -> None:
    api.revoke(TOKEN)
    with pytest.raises(AuthError):
        await check(api)
    api.grant(TOKEN)
    with pytest.raises(ConfigError, match="does not look like the contacts API"):
        await check(api, base_url=f"{api.url}/elsewhere")


# -- local runs -------------------------------------------------------------------------------


@pytest.mark.smoke
async def test_local_sync_then_an_incremental_one(api: FakeContactsApi) -> None:
    first = await run_local(ContactsConnector(), "contacts", config(api), secrets=SECRETS)
    assert [c["id"] for c in first.records["contacts"]] == [c["id"] for c in api.contacts()]
    last = api.contacts()[-1]
    assert first.state == {"updated_after": last["updated_at"], "after_id": last["id"]}
    assert first.stats.http_requests == 3
    assert first.stats.checkpoints == 4  # one per page, and the one at the end

    api.reset_counters()
    touched = api.contacts()[5]["id"]
    api.touch([touched])
    new = api.add_contacts(2)
    second = await run_local(
        ContactsConnector(), "contacts", config(api), state=first.state, secrets=SECRETS
    )
    assert [c["id"] for c in second.records["contacts"]] == [touched] + [c["id"] for c in new]
    assert api.log[0].query["updated_after"] == last["updated_at"]
    assert api.log[0].query["after_id"] == last["id"]
    assert second.state["after_id"] == new[-1]["id"]


async def test_a_page_boundary_inside_a_group_sharing_updated_at_loses_nothing(
    api: FakeContactsApi,
) -> None:
    first = await run_local(ContactsConnector(), "contacts", config(api), secrets=SECRETS)
    moment = datetime(2031, 1, 1, tzinfo=UTC)
    tied = api.add_contacts(7, updated_at=moment)
    # Three runs of pages of 3 contacts: each resumes inside the group of seven.
    state = first.state
    seen: list[str] = []
    for _ in range(3):
        run = await run_local(
            ContactsConnector(),
            "contacts",
            config(api, page_size=3),
            state=state,
            secrets=SECRETS,
        )
        seen += [c["id"] for c in run.records.get("contacts", [])]
        state = run.state
    assert seen == [c["id"] for c in tied]
    assert state == {"updated_after": format_time(moment), "after_id": tied[-1]["id"]}


async def test_local_backfill_lists_each_day_within_its_window(api: FakeContactsApi) -> None:
    since = datetime(2024, 1, 3, tzinfo=UTC)
    until = datetime(2024, 1, 6, 12, tzinfo=UTC)
    run = await run_local(
        ContactsConnector(),
        "contacts_history",
        config(api),
        secrets=SECRETS,
        since=since,
        until=until,
    )
    expected = [
        c["id"] for c in api.contacts() if since <= datetime.fromisoformat(c["updated_at"]) < until
    ]
    assert [c["id"] for c in run.records["contacts"]] == expected
    windows = [(r.query["updated_since"], r.query["updated_before"]) for r in api.log]
    assert windows == [
        ("2024-01-03T00:00:00.000Z", "2024-01-04T00:00:00.000Z"),
        ("2024-01-04T00:00:00.000Z", "2024-01-05T00:00:00.000Z"),
        ("2024-01-05T00:00:00.000Z", "2024-01-06T00:00:00.000Z"),
        ("2024-01-06T00:00:00.000Z", "2024-01-06T12:00:00.000Z"),
    ]


async def test_a_missing_secret_is_a_config_error(api: FakeContactsApi) -> None:
    with pytest.raises(ConfigError, match="no value given for secret://local/contacts/token"):
        await run_local(ContactsConnector(), "contacts", config(api), secrets={})
    assert api.requests == 0
