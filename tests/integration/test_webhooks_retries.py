"""The retry schedule, told by a FrozenClock (no sleeping through minutes): delays per
attempt with jitter, 429s and timeouts waiting at least 60 s, Retry-After up to a cap,
410 Gone and sustained failure disabling the endpoint (reported through the hook), and
every attempt recorded with its answer truncated."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from patchbay.connectors.webhooks import (
    DEFAULT_RETRY_SCHEDULE,
    Attempt,
    AttemptOutcome,
    DeliveryState,
    Endpoint,
    Webhooks,
    WebhookSettings,
)
from patchbay.connectors.webhooks._http import AttemptResult, next_delay, parse_retry_after
from patchbay.connectors.webhooks.testing import Receiver
from patchbay.queue import FrozenClock, QueueClient, Worker
from patchbay.secrets import (
    REDACTED,
    LocalKeyProvider,
    Vault,
    generate_master_key,
    install_log_redaction,
)

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(START)


@pytest.fixture
async def frozen_client(
    database_url: str, schema: str, clock: FrozenClock
) -> AsyncIterator[QueueClient]:
    async with QueueClient(database_url, schema=schema, clock=clock) as c:
        yield c


@pytest.fixture
async def vault(database_url: str, schema: str) -> AsyncIterator[Vault]:
    keys = LocalKeyProvider([generate_master_key("test")])
    async with Vault(database_url, schema=schema, keys=keys) as v:
        yield v


class Disabled:
    """An on_endpoint_disabled hook that records its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[Endpoint, str]] = []

    async def __call__(self, endpoint: Endpoint, reason: str) -> None:
        self.calls.append((endpoint, reason))


@pytest.fixture
def disabled() -> Disabled:
    return Disabled()


def make(
    client: QueueClient, vault: Vault, disabled: Disabled | None = None, **options: Any
) -> Webhooks:
    options.setdefault("allowed_networks", ["127.0.0.1/32"])
    options.setdefault("timeout", 5.0)
    # rand 0.5 is a jitter factor of exactly 1: delays are the schedule's.
    return Webhooks(client, vault, on_endpoint_disabled=disabled, rand=lambda: 0.5, **options)


async def wait_for(predicate: Any, within: float = 10.0) -> None:
    """Poll an async predicate until it holds (a deadline, not a fixed sleep)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await predicate():
        if loop.time() > deadline:
            raise AssertionError(f"condition not reached within {within}s")
        await asyncio.sleep(0.01)


async def attempts_reach(webhooks: Webhooks, message_id: Any, n: int) -> list[Attempt]:
    """The message's attempts once there are ``n``, and its jobs are back in the queue
    (so moving the clock now cannot shift the snooze the worker is writing)."""
    found: list[Attempt] = []

    async def enough() -> bool:
        nonlocal found
        found = await webhooks.attempts(message_id)
        return len(found) >= n

    await wait_for(enough)
    for delivery in await webhooks.deliveries(message_id):
        await wait_for(lambda d=delivery.id: _job_not_active(webhooks.client, d))
    return found


async def _job_not_active(client: QueueClient, job_id: Any) -> bool:
    return (await client.get_job(job_id)).state.value != "active"


async def idle_fetches(worker: Worker, n: int = 3) -> None:
    """Wait until the worker has fetched ``n`` more times (and so passed over anything
    not yet due)."""
    target = worker.fetches + n
    await wait_for(lambda: _true_async(worker.fetches >= target))


async def _true_async(value: bool) -> bool:
    return value


async def test_failures_follow_the_default_schedule_then_fail(
    frozen_client: QueueClient, vault: Vault, clock: FrozenClock, receiver: Receiver
) -> None:
    receiver.default = receiver.default.__class__(status=500)
    async with make(frozen_client, vault) as webhooks:
        await webhooks.add_endpoint("acme", receiver.url)
        sent = await webhooks.send_event("acme", "a", {"n": 1})
        worker = await webhooks.work(concurrency=2, poll_interval=0.02)
        attempts = await attempts_reach(webhooks, sent.message_id, 1)
        for n, delay in enumerate(DEFAULT_RETRY_SCHEDULE[1:], start=1):
            last = attempts[-1]
            assert last.attempt == n and last.status == 500
            assert last.outcome is AttemptOutcome.FAILED
            assert last.attempted_at == clock.now()
            assert last.next_attempt_at == clock.now() + timedelta(seconds=delay)
            job = await frozen_client.get_job(sent.delivery_ids[0])
            assert job.start_after == last.next_attempt_at
            # Not due yet: nothing happens however often the worker looks.
            clock.advance(delay - 0.5)
            await idle_fetches(worker)
            assert receiver.count() == n
            clock.advance(0.5)
            attempts = await attempts_reach(webhooks, sent.message_id, n + 1)
        assert len(attempts) == len(DEFAULT_RETRY_SCHEDULE) == 8
        assert attempts[-1].next_attempt_at is None
        delivery = await webhooks.get_delivery(sent.delivery_ids[0])
        await wait_for(lambda: _delivery_state(webhooks, delivery.id, DeliveryState.FAILED))
        # The queue's own attempt budget was never spent: every wait was a snooze.
        job = await frozen_client.get_job(sent.delivery_ids[0])
        await wait_for(lambda: _job_state(frozen_client, job.id, "completed"))
        assert (await frozen_client.get_job(job.id)).attempt == 1
        # 28 hours of failures are less than 5 days: the endpoint stays enabled.
        assert (await webhooks.list_endpoints("acme"))[0].enabled


async def _job_state(client: QueueClient, job_id: Any, state: str) -> bool:
    return (await client.get_job(job_id)).state.value == state


async def _delivery_state(webhooks: Webhooks, delivery_id: Any, state: DeliveryState) -> bool:
    return (await webhooks.get_delivery(delivery_id)).state is state


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ({"status": 400}, 5.0),  # other 4xx: retried on schedule
        ({"status": 503}, 5.0),
        ({"status": 429}, 60.0),  # at least 60 s
        ({"status": 429, "headers": {"Retry-After": "120"}}, 120.0),
        ({"status": 503, "headers": {"Retry-After": "90"}}, 90.0),
        ({"status": 429, "headers": {"Retry-After": "999999"}}, 3600.0),  # capped
        ({"status": 429, "headers": {"Retry-After": "soon"}}, 60.0),  # unreadable
        ({"status": 302, "headers": {"Location": "http://169.254.169.254/"}}, 5.0),
    ],
)
async def test_the_next_delay_depends_on_the_answer(
    frozen_client: QueueClient,
    vault: Vault,
    clock: FrozenClock,
    receiver: Receiver,
    answer: dict[str, Any],
    expected: float,
) -> None:
    receiver.respond(**answer)
    async with make(frozen_client, vault) as webhooks:
        await webhooks.add_endpoint("acme", receiver.url)
        sent = await webhooks.send_event("acme", "a", {})
        await webhooks.work(concurrency=1, poll_interval=0.02)
        (attempt,) = await attempts_reach(webhooks, sent.message_id, 1)
    assert attempt.status == answer["status"]
    assert attempt.next_attempt_at == clock.now() + timedelta(seconds=expected)
    assert receiver.count() == 1  # a redirect is not followed


async def test_a_timeout_waits_at_least_a_minute(
    frozen_client: QueueClient, vault: Vault, clock: FrozenClock, receiver: Receiver
) -> None:
    receiver.respond(200, delay=2.0)
    async with make(frozen_client, vault, timeout=0.3) as webhooks:
        await webhooks.add_endpoint("acme", receiver.url)
        sent = await webhooks.send_event("acme", "a", {})
        await webhooks.work(concurrency=1, poll_interval=0.02)
        (attempt,) = await attempts_reach(webhooks, sent.message_id, 1)
    assert attempt.outcome is AttemptOutcome.TIMEOUT and attempt.status is None
    assert "0.3s" in (attempt.error or "")
    assert 250 <= attempt.duration_ms < 2000
    assert attempt.next_attempt_at == clock.now() + timedelta(seconds=60)


def test_jitter_stays_within_twenty_percent() -> None:
    settings = WebhookSettings()
    failed = AttemptResult(AttemptOutcome.FAILED, status=500)
    for attempt, base in enumerate(DEFAULT_RETRY_SCHEDULE[1:], start=1):
        low = next_delay(settings, attempt, failed, 0.0)
        high = next_delay(settings, attempt, failed, 0.999999)
        assert low == pytest.approx(base * 0.8)
        assert high == pytest.approx(base * 1.2, rel=1e-5)
    assert next_delay(settings, len(DEFAULT_RETRY_SCHEDULE), failed, 0.5) is None
    throttled = AttemptResult(AttemptOutcome.FAILED, status=429)
    assert next_delay(settings, 1, throttled, 0.0) == 60.0  # the floor is not jittered down
    late = AttemptResult(AttemptOutcome.FAILED, status=503, retry_after=7 * 3600.0)
    assert next_delay(settings, 6, late, 0.5) == 10 * 3600.0  # the schedule is longer
    custom = WebhookSettings.build(retry_schedule=[0, 1, 2], jitter=0)
    assert [next_delay(custom, n, failed, 0.3) for n in (1, 2, 3)] == [1.0, 2.0, None]


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC).timestamp()
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after("Mon, 02 Mar 2026 09:02:00 GMT", now) == 120.0
    assert parse_retry_after("Mon, 02 Mar 2026 08:00:00 GMT", now) == 0.0
    assert parse_retry_after("later", now) is None
    assert parse_retry_after(None, now) is None
    assert parse_retry_after("nan", now) is None


async def test_410_gone_disables_the_endpoint_at_once(
    frozen_client: QueueClient, vault: Vault, receiver: Receiver, disabled: Disabled
) -> None:
    receiver.respond(410)
    async with make(frozen_client, vault, disabled) as webhooks:
        endpoint = await webhooks.add_endpoint("acme", receiver.url)
        first = await webhooks.send_event("acme", "a", {"n": 1})
        second = await webhooks.send_event("acme", "a", {"n": 2})
        await webhooks.work(concurrency=1, poll_interval=0.02)
        await wait_for(lambda: _true_async(len(disabled.calls) == 1))
        gone = await webhooks.get_endpoint(endpoint.id)
        assert not gone.enabled and "410 Gone" in (gone.disabled_reason or "")
        (reported, reason) = disabled.calls[0]
        assert reported.id == endpoint.id and not reported.enabled and "410" in reason
        states = {
            (await webhooks.get_delivery(d)).state
            for d in (*first.delivery_ids, *second.delivery_ids)
        }
        assert states == {DeliveryState.FAILED, DeliveryState.CANCELLED}
        assert receiver.count() == 1  # the other delivery was cancelled, not sent
        # New events skip the disabled endpoint.
        assert (await webhooks.send_event("acme", "a", {})).delivery_ids == ()


async def test_an_endpoint_failing_for_the_whole_period_is_disabled_and_reported(
    frozen_client: QueueClient,
    vault: Vault,
    clock: FrozenClock,
    receiver: Receiver,
    disabled: Disabled,
) -> None:
    receiver.default = receiver.default.__class__(status=502)
    async with make(frozen_client, vault, disabled, disable_after=3600) as webhooks:
        endpoint = await webhooks.add_endpoint("acme", receiver.url)
        sent = await webhooks.send_event("acme", "a", {})
        await webhooks.work(concurrency=2, poll_interval=0.02)
        await attempts_reach(webhooks, sent.message_id, 1)
        assert (await webhooks.get_endpoint(endpoint.id)).failing_since == START
        # Attempts at +5 s, +305 s, +2105 s: failing for less than the hour.
        for n, delay in enumerate((5, 300, 1800), start=2):
            clock.advance(delay)
            await attempts_reach(webhooks, sent.message_id, n)
        assert (await webhooks.get_endpoint(endpoint.id)).enabled
        assert disabled.calls == []
        clock.advance(7200)  # the attempt at +9305 s fails too: over the hour
        await wait_for(lambda: _true_async(len(disabled.calls) == 1))
    gone = await webhooks.get_endpoint(endpoint.id)
    assert not gone.enabled
    assert gone.disabled_reason == "every delivery attempt failed since 2026-03-02 09:00:00 UTC"
    assert disabled.calls[0][0].id == endpoint.id
    assert disabled.calls[0][1] == gone.disabled_reason
    # The delivery that tipped it is not retried either.
    delivery = await webhooks.get_delivery(sent.delivery_ids[0])
    assert delivery.state is DeliveryState.CANCELLED and delivery.attempts == 5
    assert delivery.last_error == f"endpoint disabled: {gone.disabled_reason}"
    assert receiver.count() == 5


async def test_the_default_hook_logs_the_disabled_endpoint(
    frozen_client: QueueClient,
    vault: Vault,
    receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver.respond(410)
    async with make(frozen_client, vault) as webhooks:
        endpoint = await webhooks.add_endpoint("acme", receiver.url)
        await webhooks.send_event("acme", "a", {})
        await webhooks.work(concurrency=1, poll_interval=0.02)
        await wait_for(lambda: _true_async("was disabled" in caplog.text))
    assert f"webhook endpoint {endpoint.id} of tenant acme" in caplog.text
    assert "410 Gone" in caplog.text


async def _attempts_to(webhooks: Webhooks, message_id: Any, endpoint_id: Any, before: int) -> bool:
    return len(await webhooks.attempts(message_id)) > before


async def test_a_success_ends_the_failure_streak(
    frozen_client: QueueClient, vault: Vault, clock: FrozenClock, receiver: Receiver
) -> None:
    receiver.respond(500)
    async with make(frozen_client, vault) as webhooks:
        endpoint = await webhooks.add_endpoint("acme", receiver.url)
        sent = await webhooks.send_event("acme", "a", {})
        await webhooks.work(concurrency=1, poll_interval=0.02)
        await attempts_reach(webhooks, sent.message_id, 1)
        assert (await webhooks.get_endpoint(endpoint.id)).failing_since == START
        clock.advance(5)
        await attempts_reach(webhooks, sent.message_id, 2)
        await wait_for(
            lambda: _delivery_state(webhooks, sent.delivery_ids[0], DeliveryState.SUCCEEDED)
        )
        assert (await webhooks.get_endpoint(endpoint.id)).failing_since is None


async def test_attempts_record_status_headers_and_a_truncated_body(
    frozen_client: QueueClient,
    vault: Vault,
    receiver: Receiver,
    database_url: str,
    schema: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with make(frozen_client, vault, response_body_limit=100) as webhooks:
        endpoint = await webhooks.add_endpoint("acme", receiver.url)
        secret = await webhooks.reveal_secret(endpoint.id)
        # A careless receiver echoing the secret in its error body and a header.
        receiver.respond(
            500,
            headers={"X-Request-Id": "req-1", "X-Echo": secret},
            body=(f"bad signature for {secret}; " + "x" * 10_000).encode(),
        )
        sent = await webhooks.send_event("acme", "a", {"n": 1})
        await webhooks.work(concurrency=1, poll_interval=0.02)
        (attempt,) = await attempts_reach(webhooks, sent.message_id, 1)
    assert attempt.status == 500 and attempt.error == "HTTP 500 Internal Server Error"
    assert attempt.body_truncated
    assert attempt.response_body is not None
    assert attempt.response_body.startswith(f"bad signature for {REDACTED}; xxx")
    assert attempt.response_headers is not None
    assert attempt.response_headers["x-request-id"] == "req-1"
    assert attempt.response_headers["x-echo"] == REDACTED
    assert attempt.duration_ms > 0 and attempt.url == receiver.url

    # The secret is nowhere in the schema's rows (the vault holds only ciphertext), nor
    # in the log.
    key_b64 = secret.removeprefix("whsec_")
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute(
            "select table_name from information_schema.tables where table_schema = %s",
            (schema,),
        )
        tables = [r[0] for r in await cur.fetchall()]
        assert {"job", "webhook_attempt", "webhook_endpoint"} <= set(tables)
        for table in tables:
            cur = await conn.execute(f'select t::text from "{schema}"."{table}" t')
            for (text,) in await cur.fetchall():
                assert secret not in text and key_b64 not in text, table
    # patchbay's own log lines never hold it (httpcore's debug trace shows response
    # headers as the receiver sent them: the daemon's log redaction scrubs those).
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("patchbay")]
    assert ours and not any(secret in line or key_b64 in line for line in ours)
    install_log_redaction(vault.redactor, logging.getLogger("httpcore"))
    flt = install_log_redaction(vault.redactor)
    caplog.handler.addFilter(flt)
    logging.getLogger("httpcore.http11").debug("echo %s", secret)
    assert secret not in caplog.records[-1].getMessage()


async def test_a_refused_connection_is_a_failed_attempt_on_schedule(
    frozen_client: QueueClient, vault: Vault, clock: FrozenClock
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with make(frozen_client, vault) as webhooks:
        await webhooks.add_endpoint("acme", f"http://127.0.0.1:{port}/hook")
        sent = await webhooks.send_event("acme", "a", {})
        await webhooks.work(concurrency=1, poll_interval=0.02)
        (attempt,) = await attempts_reach(webhooks, sent.message_id, 1)
    assert attempt.outcome is AttemptOutcome.FAILED and attempt.status is None
    assert (attempt.error or "").startswith("ConnectError")
    assert attempt.response_headers is None and attempt.response_body is None
    assert attempt.next_attempt_at == clock.now() + timedelta(seconds=5)
