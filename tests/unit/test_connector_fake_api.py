"""The fake contacts API the example connector's tests and demo run against: a real HTTP
server on 127.0.0.1 whose paging, filters and failure switches must behave like the API it
fakes, or the connector tests would prove nothing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from patchbay_example_contacts.fake_api import FakeContactsApi, format_time, parse_time

TOKEN = "fake-api-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def api() -> Iterator[FakeContactsApi]:
    with FakeContactsApi(contacts=95, tokens={TOKEN}, page_size=20) as server:
        yield server


@pytest.fixture
def http(api: FakeContactsApi) -> Iterator[httpx.Client]:
    """One client per test: a new httpx client per request would cost an SSL context."""
    with httpx.Client(base_url=api.url, timeout=5) as client:
        yield client


def get(http: httpx.Client, path: str, **params: Any) -> httpx.Response:
    return http.get(path, params=params, headers=AUTH)


def list_all(http: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = dict(params, **({"cursor": cursor} if cursor else {}))
        body = get(http, "/v1/contacts", **query).json()
        found += body["data"]
        cursor = body["next_cursor"]
        if cursor is None:
            return found


def key(contact: dict[str, Any]) -> tuple[datetime, str]:
    return parse_time(contact["updated_at"]), contact["id"]


def test_pages_list_every_contact_once_in_updated_at_order(
    api: FakeContactsApi, http: httpx.Client
) -> None:
    found = list_all(http)
    assert len(found) == 95
    assert [c["id"] for c in found] == [c["id"] for c in api.contacts()]
    assert [key(c) for c in found] == sorted(key(c) for c in found)
    assert api.requests == 5  # 20 per page by default: 20, 20, 20, 20, 15
    assert {"id", "name", "email", "company", "created_at", "updated_at"} <= set(found[0])


def test_updated_at_is_spread_evenly_from_the_start(api: FakeContactsApi) -> None:
    contacts = api.contacts()
    first, last = parse_time(contacts[0]["updated_at"]), parse_time(contacts[-1]["updated_at"])
    assert first == datetime(2024, 1, 1, tzinfo=UTC)
    assert timedelta(days=29) < last - first < timedelta(days=30)


def test_limit_is_capped_and_validated(api: FakeContactsApi, http: httpx.Client) -> None:
    api.max_page_size = 30
    assert len(get(http, "/v1/contacts", limit=1000).json()["data"]) == 30
    assert len(get(http, "/v1/contacts", limit=7).json()["data"]) == 7
    bad = get(http, "/v1/contacts", limit="many")
    assert bad.status_code == 400 and "limit" in bad.json()["message"]
    assert get(http, "/v1/contacts", updated_since="yesterday").status_code == 400
    assert get(http, "/v1/contacts", cursor="!!").status_code == 400
    assert get(http, "/v1/contacts", after_id="c_000001").status_code == 400


def test_time_filters_select_a_half_open_window(api: FakeContactsApi, http: httpx.Client) -> None:
    contacts = api.contacts()
    since, before = contacts[10]["updated_at"], contacts[30]["updated_at"]
    window = list_all(http, updated_since=since, updated_before=before)
    assert [c["id"] for c in window] == [c["id"] for c in contacts[10:30]]
    after = list_all(http, updated_after=since)
    assert [c["id"] for c in after] == [c["id"] for c in contacts[11:]]


def test_position_filter_resumes_exactly_inside_a_group_sharing_updated_at(
    api: FakeContactsApi, http: httpx.Client
) -> None:
    moment = datetime(2030, 1, 1, tzinfo=UTC)
    tied = api.add_contacts(6, updated_at=moment)
    page = get(http, "/v1/contacts", updated_since=format_time(moment), limit=4).json()
    assert [c["id"] for c in page["data"]] == [c["id"] for c in tied[:4]]
    last = page["data"][-1]
    # A timestamp alone would skip the two contacts that share it; the position does not.
    rest = list_all(http, updated_after=last["updated_at"], after_id=last["id"])
    assert [c["id"] for c in rest] == [c["id"] for c in tied[4:]]
    assert list_all(http, updated_after=last["updated_at"]) == []


def test_touch_moves_a_contact_to_the_end(api: FakeContactsApi) -> None:
    first = api.contacts()[0]["id"]
    api.touch([first])
    contacts = api.contacts()
    assert contacts[-1]["id"] == first and "phone" in contacts[-1]


def test_tokens_missing_unknown_and_revoked_get_401(
    api: FakeContactsApi, http: httpx.Client
) -> None:
    assert http.get("/v1/me").status_code == 401
    wrong = http.get("/v1/me", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert wrong.headers["www-authenticate"].startswith("Bearer")
    assert get(http, "/v1/me").json() == {"account": "Example Co", "plan": "sandbox"}
    api.revoke(TOKEN)
    revoked = get(http, "/v1/me")
    assert revoked.status_code == 401 and revoked.json()["message"] == "token revoked"
    api.grant(TOKEN)
    assert get(http, "/v1/me").status_code == 200
    assert [r.authorized for r in api.log] == [False, True, True, True, True]


def test_scripted_failures_come_in_order_after_the_requests_let_through(
    api: FakeContactsApi, http: httpx.Client
) -> None:
    api.fail(429, retry_after=1.5, after=1)
    api.fail(500, times=2)
    statuses = [get(http, "/v1/me") for _ in range(5)]
    assert [r.status_code for r in statuses] == [200, 429, 500, 500, 200]
    assert statuses[1].headers["retry-after"] == "2"  # whole seconds, rounded up
    assert api.statuses == {200: 2, 429: 1, 500: 2}
    assert api.requests == 5
    api.reset_counters()
    assert (api.requests, api.log, dict(api.statuses)) == (0, [], {})


def test_rate_limit_is_a_fixed_window_with_retry_after(
    api: FakeContactsApi, http: httpx.Client
) -> None:
    now = [1000.0]
    api.clock = lambda: now[0]
    api.set_rate_limit((3, 10.0))
    statuses = [get(http, "/v1/me").status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    now[0] += 2.5
    limited = get(http, "/v1/me")
    assert limited.headers["retry-after"] == "8"  # what is left of the window, rounded up
    now[0] += 7.5
    assert get(http, "/v1/me").status_code == 200
    assert [r.at for r in api.log][-2:] == [1002.5, 1010.0]


def test_admin_endpoints_flip_switches_from_another_process(
    api: FakeContactsApi, http: httpx.Client
) -> None:
    admin = http
    assert admin.post("/_admin/fail", json={"status": 503}).json() == {"ok": True}
    assert get(http, "/v1/me").status_code == 503
    admin.post("/_admin/revoke", json={"token": TOKEN})
    assert get(http, "/v1/me").status_code == 401
    admin.post("/_admin/grant", json={"token": TOKEN})
    created = admin.post("/_admin/contacts", json={"count": 2})
    assert created.status_code == 201 and len(created.json()["data"]) == 2
    stats = admin.get("/_admin/stats").json()
    assert stats == {"requests": 2, "statuses": {"401": 1, "503": 1}, "contacts": 97}
    assert admin.post("/_admin/fail", json={}).status_code == 400
    assert admin.post("/_admin/unknown", json={}).status_code == 404


def test_unknown_routes_and_methods(api: FakeContactsApi, http: httpx.Client) -> None:
    assert get(http, "/v1/nothing").status_code == 404
    assert http.post("/v1/contacts", headers=AUTH).status_code == 405
