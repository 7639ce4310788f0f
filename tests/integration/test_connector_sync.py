"""Sync jobs of the example contacts connector on the real queue, against the fake API over
HTTP and a real Postgres: the incremental cursor, full refresh, idempotent upserts, 429s,
revoked tokens, 5xx, crash consistency, fencing, version upgrades, tenant-scoped secrets
and redaction. Nothing of patchbay is mocked."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import psycopg
import pytest
from patchbay_example_contacts import ContactsConnector
from patchbay_example_contacts.fake_api import FakeContactsApi
from psycopg import sql

from patchbay.connectors import (
    ConfigError,
    Connector,
    ConnectorConfig,
    ConnectorExecutor,
    JobContext,
    RunInfo,
    RunStats,
    TransientError,
    sync,
)
from patchbay.queue import FrozenClock, JobRecord, QueueClient, Worker
from patchbay.secrets import LocalKeyProvider, RedactingFilter, Vault, generate_master_key

TOKEN = "tok_live_3f9a7c1e5b"
OTHER_TOKEN = "tok_globex_77d2e0"
TENANT = "acme"
INTEGRATION = "acme-contacts"
REF = f"secret://{TENANT}/contacts/token"
DONE = frozenset({"completed", "failed", "cancelled"})


# -- fixtures and helpers --------------------------------------------------------------------


@pytest.fixture
def api() -> Iterator[FakeContactsApi]:
    with FakeContactsApi(contacts=120, tokens={TOKEN, OTHER_TOKEN}, page_size=50) as server:
        yield server


@pytest.fixture
async def vault(database_url: str, schema: str) -> AsyncIterator[Vault]:
    keys = LocalKeyProvider([generate_master_key("k1")])
    async with Vault(database_url, schema=schema, keys=keys, cache_ttl=0) as v:
        await v.put(TENANT, "contacts/token", TOKEN)
        await v.put("globex", "contacts/token", OTHER_TOKEN)
        yield v


@pytest.fixture
async def queue(database_url: str, schema: str, vault: Vault) -> AsyncIterator[QueueClient]:
    # The vault's redactor scrubs resolved values from job errors and outputs.
    async with QueueClient(
        database_url, schema=schema, maintenance_interval=0.2, redact=vault.redactor
    ) as client:
        yield client


class Hooks:
    """Records what the executor tells the failure policy."""

    def __init__(self) -> None:
        self.successes: list[tuple[RunInfo, RunStats]] = []
        self.failures: list[tuple[RunInfo, BaseException, bool]] = []

    async def on_success(self, run: RunInfo, stats: RunStats) -> None:
        self.successes.append((run, stats))

    async def on_failure(self, run: RunInfo, error: BaseException, final: bool) -> None:
        self.failures.append((run, error, final))


def contacts_config(api: FakeContactsApi, **overrides: Any) -> dict[str, Any]:
    return {"base_url": api.url, "token": REF, "page_size": 50, **overrides}


async def start(
    queue: QueueClient,
    connectors: list[Connector[Any]],
    vault: Vault | None,
    hooks: Hooks | None = None,
    **settings: Any,
) -> tuple[ConnectorExecutor, list[Worker]]:
    settings.setdefault("retry_limit", 2)
    settings.setdefault("retry_delay", 0.1)
    executor = ConnectorExecutor(queue, connectors, vault=vault, hooks=hooks, **settings)
    workers = await executor.start(concurrency=2, poll_interval=0.05)
    return executor, workers


async def finished(queue: QueueClient, job_id: uuid.UUID | None, within: float = 20.0) -> JobRecord:
    """The job once it is completed, failed or cancelled."""
    assert job_id is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        job = await queue.get_job(job_id)
        if job.state in DONE:
            return job
        if loop.time() > deadline:
            raise AssertionError(f"job still {job.state} after {within}s: {job}")
        await asyncio.sleep(0.02)


async def run_sync(
    executor: ConnectorExecutor,
    api: FakeContactsApi,
    *,
    full_refresh: bool = False,
    **overrides: Any,
) -> JobRecord:
    job_id = await executor.send_sync(
        "contacts",
        "contacts",
        tenant=TENANT,
        integration=INTEGRATION,
        config=contacts_config(api, **overrides),
        full_refresh=full_refresh,
    )
    return await finished(executor.queue, job_id)


async def stored_records(queue: QueueClient, stream: str = "contacts") -> dict[str, Any]:
    """external id -> (data, xmin, updated_at) of the integration's stored records."""
    query = sql.SQL(
        "select external_id, data, xmin::text, updated_at from {}.connector_record"
        " where integration_id = %s and stream = %s"
    ).format(sql.Identifier(queue.schema))
    async with queue.pool.connection() as conn:
        cur = await conn.execute(query, (INTEGRATION, stream))
        return {row[0]: row[1:] for row in await cur.fetchall()}


async def stored_state(
    queue: QueueClient, job_type: str = "contacts", integration: str = INTEGRATION
) -> tuple[dict[str, Any], int] | None:
    query = sql.SQL(
        "select state, state_version from {}.connector_state"
        " where integration_id = %s and job_type = %s"
    ).format(sql.Identifier(queue.schema))
    async with queue.pool.connection() as conn:
        cur = await conn.execute(query, (integration, job_type))
        row = await cur.fetchone()
    return None if row is None else (row[0], row[1])


def position(contact: dict[str, Any]) -> dict[str, str]:
    return {"updated_after": contact["updated_at"], "after_id": contact["id"]}


# -- incremental sync and full refresh -------------------------------------------------------


@pytest.mark.smoke
async def test_incremental_sync_reads_only_what_changed_and_upserts_idempotently(
    queue: QueueClient, vault: Vault, api: FakeContactsApi
) -> None:
    executor, _ = await start(queue, [ContactsConnector()], vault)
    first = await run_sync(executor, api)
    assert (first.state, first.attempt) == ("completed", 1)
    assert first.output == {
        "records": {"contacts": 120},
        "checkpoints": 4,  # one per page, one at the end
        "http_requests": 3,
    }
    records = await stored_records(queue)
    contacts = api.contacts()
    assert set(records) == {c["id"] for c in contacts}
    assert records[contacts[0]["id"]][0] == contacts[0]
    assert await stored_state(queue) == (position(contacts[-1]), 2)

    api.reset_counters()
    touched = [contacts[3]["id"], contacts[70]["id"]]
    api.touch(touched)
    new = api.add_contacts(3)
    second = await run_sync(executor, api)
    assert second.state == "completed"
    assert second.output["records"] == {"contacts": 5}
    # One request, resuming after the position the first run stored.
    assert len(api.log) == 1
    assert api.log[0].query == {"limit": "50", **position(contacts[-1])}

    after = await stored_records(queue)
    assert len(after) == 123
    changed = {cid for cid in after if after[cid][1] != records.get(cid, (None, None))[1]}
    assert changed == set(touched) | {c["id"] for c in new}  # nothing else was rewritten
    assert "phone" in after[touched[0]][0]
    assert await stored_state(queue) == (position(new[-1]), 2)


async def test_full_refresh_reads_everything_and_rewrites_nothing_unchanged(
    queue: QueueClient, vault: Vault, api: FakeContactsApi
) -> None:
    executor, _ = await start(queue, [ContactsConnector()], vault)
    await run_sync(executor, api)
    before = await stored_records(queue)
    api.reset_counters()

    refresh = await run_sync(executor, api, full_refresh=True)
    assert refresh.state == "completed"
    assert refresh.output["records"] == {"contacts": 120}
    assert "updated_after" not in api.log[0].query  # from the start, whatever the cursor
    after = await stored_records(queue)
    assert {cid: row[1:] for cid, row in after.items()} == {
        cid: row[1:] for cid, row in before.items()
    }  # same row versions, same updated_at: an unchanged record is not rewritten
    assert await stored_state(queue) == (position(api.contacts()[-1]), 2)


# -- provider errors ---------------------------------------------------------------------------


async def test_429_requeues_the_job_without_spending_an_attempt(
    queue: QueueClient, vault: Vault, api: FakeContactsApi
) -> None:
    hooks = Hooks()
    executor, workers = await start(queue, [ContactsConnector()], vault, hooks)
    api.fail(429, retry_after=1, after=1)  # the second page answers 429, Retry-After: 1
    job = await run_sync(executor, api)

    assert (job.state, job.attempt, job.error) == ("completed", 1, None)
    sync_worker = next(w for w in workers if w.queue == "contacts.contacts")
    assert sync_worker.snoozed == 1
    assert not hooks.failures  # a rate limit is not a failure
    statuses = [r.status for r in api.log]
    assert statuses == [200, 429, 200, 200]
    limited, resumed = api.log[1], api.log[2]
    assert resumed.at - limited.at >= 0.9  # waited for Retry-After
    # The second run resumed from the first page's checkpoint, not from the start.
    first_page = api.contacts()[:50]
    assert resumed.query == {"limit": "50", **position(first_page[-1])}
    assert len(await stored_records(queue)) == 120
    assert job.output["records"] == {"contacts": 70}  # the run that completed


async def test_a_revoked_token_fails_the_job_at_once_without_retries(
    queue: QueueClient, vault: Vault, api: FakeContactsApi
) -> None:
    hooks = Hooks()
    executor, _ = await start(queue, [ContactsConnector()], vault, hooks, retry_limit=4)
    api.revoke(TOKEN)
    job = await run_sync(executor, api)

    assert (job.state, job.attempt) == ("failed", 1)
    assert job.error is not None
    assert job.error["type"] == "patchbay.connectors.errors.AuthError"
    assert "401" in job.error["message"]
    assert api.requests == 1  # neither the client nor the queue tried again
    [(run, error, final)] = hooks.failures
    assert (run.tenant, run.integration, run.job_type, final) == (
        TENANT,
        INTEGRATION,
        "contacts",
        True,
    )
    assert type(error).__name__ == "AuthError"
    assert await stored_state(queue) is None
    assert TOKEN not in json.dumps(job.error)


async def test_5xx_is_retried_by_the_http_client_within_one_attempt(
    queue: QueueClient, vault: Vault, api: FakeContactsApi
) -> None:
    executor, _ = await start(queue, [ContactsConnector()], vault)
    api.fail(500, times=2, after=1)
    job = await run_sync(executor, api)
    assert (job.state, job.attempt) == ("completed", 1)
    assert [r.status for r in api.log] == [200, 500, 500, 200, 200]
    assert job.output["http_requests"] == 5
    assert len(await stored_records(queue)) == 120


async def test_5xx_past_the_clients_retries_is_retried_by_the_queue_from_the_checkpoint(
    queue: QueueClient, vault: Vault, api: FakeContactsApi
) -> None:
    hooks = Hooks()
    executor, _ = await start(queue, [ContactsConnector()], vault, hooks)
    api.fail(503, times=4, after=1)  # HttpClient tries 4 times: page 2 fails for good
    job = await run_sync(executor, api)

    assert (job.state, job.attempt) == ("completed", 2)
    [(_, error, final)] = hooks.failures
    assert (type(error).__name__, final) == ("RequestFailed", False)
    events = await queue.job_events(job.id)
    assert [e.kind for e in events if e.kind == "retrying"] == ["retrying"]
    # Attempt 2 began after page 1, which attempt 1 had committed with its cursor.
    first_page = api.contacts()[:50]
    second_attempt = api.log[5]
    assert [r.status for r in api.log[:5]] == [200, 503, 503, 503, 503]
    assert second_attempt.query == {"limit": "50", **position(first_page[-1])}
    assert len(await stored_records(queue)) == 120


# -- consistency -----------------------------------------------------------------------------


class ItemsConfig(ConnectorConfig):
    """Config of the scripted test connector."""

    label: str = "items"


Script = Callable[[JobContext[ItemsConfig]], Awaitable[None]]


class Scripted(Connector[ItemsConfig]):
    """A connector whose sync runs a test's script."""

    name = "scripted"
    config_model = ItemsConfig

    def __init__(self, script: Script) -> None:
        self.script = script

    @sync()
    async def items(self, ctx: JobContext[ItemsConfig]) -> None:
        await self.script(ctx)


async def send_items(executor: ConnectorExecutor) -> uuid.UUID | None:
    return await executor.send_sync(
        "scripted", "items", tenant=TENANT, integration=INTEGRATION, config={}
    )


async def test_a_crash_keeps_only_the_checkpointed_records_and_cursor(
    queue: QueueClient,
) -> None:
    seen_states: list[dict[str, Any]] = []

    async def script(ctx: JobContext[ItemsConfig]) -> None:
        seen_states.append(dict(ctx.state))
        if ctx.job is not None and ctx.job.attempt == 1:
            ctx.emit("items", [{"id": "1"}, {"id": "2"}])
            await ctx.checkpoint({"cursor": 2})
            ctx.emit("items", [{"id": "3"}])
            ctx.state["cursor"] = 3
            raise RuntimeError("crashed after emitting item 3")

    executor, _ = await start(queue, [Scripted(script)], None, retry_limit=0)
    job = await finished(queue, await send_items(executor))
    assert job.state == "failed" and job.error is not None
    assert job.error["type"] == "builtins.RuntimeError"
    assert set(await stored_records(queue, "items")) == {"1", "2"}
    assert await stored_state(queue, "items") == ({"cursor": 2}, 1)

    # The retry starts from the checkpoint, and its own writes land.
    await queue.retry(job.id)
    retried = await finished(queue, job.id)
    assert retried.state == "completed"
    assert seen_states == [{}, {"cursor": 2}]


async def test_a_stale_attempts_checkpoint_writes_nothing(
    database_url: str, schema: str, eventually: Callable[..., Awaitable[None]]
) -> None:
    clock = FrozenClock()
    entered, release = asyncio.Event(), asyncio.Event()
    refused: list[BaseException] = []

    async def script(ctx: JobContext[ItemsConfig]) -> None:
        assert ctx.job is not None
        attempt = ctx.job.attempt
        ctx.emit("items", [{"id": f"from-attempt-{attempt}"}])
        if attempt == 1:
            entered.set()
            await release.wait()  # meanwhile its lease expires and attempt 2 runs
            try:
                await ctx.checkpoint({"attempt": 1})
            except Exception as exc:
                refused.append(exc)
                raise
        else:
            await ctx.checkpoint({"attempt": attempt})

    async with QueueClient(database_url, schema=schema, clock=clock, maintenance=False) as queue:
        executor, workers = await start(queue, [Scripted(script)], None, expire_in=30)
        job_id = await send_items(executor)
        await asyncio.wait_for(entered.wait(), 10)
        clock.advance(31)
        assert await queue.expire_leases() == 1
        clock.advance(60)  # past the retry delay
        job = await finished(queue, job_id)
        assert (job.state, job.attempt) == ("completed", 2)

        release.set()
        await eventually(lambda: workers[0].stale_writes == 1)
        assert [type(e).__name__ for e in refused] == ["_LeaseLost"]
        assert "lost its lease; nothing was written" in str(refused[0])
        assert set(await stored_records(queue, "items")) == {"from-attempt-2"}
        assert await stored_state(queue, "items") == ({"attempt": 2}, 1)
        assert (await queue.get_job(job.id)).state == "completed"


# -- versions ------------------------------------------------------------------------------------


async def test_an_old_job_and_old_state_are_upgraded_when_read(
    queue: QueueClient, vault: Vault, api: FakeContactsApi
) -> None:
    executor, _ = await start(queue, [ContactsConnector()], vault)
    await executor.ensure_queues()
    since = api.contacts()[99]["updated_at"]
    insert = sql.SQL(
        "insert into {}.connector_state (integration_id, job_type, state, state_version)"
        " values (%s, 'contacts', %s::jsonb, 1)"
    ).format(sql.Identifier(queue.schema))
    async with queue.pool.connection() as conn:
        await conn.execute(insert, (INTEGRATION, json.dumps({"since": since})))
    # A job sent by version 1 of the connector, whose config called base_url api_url.
    old_job = {
        "format": 1,
        "v": 1,
        "tenant": TENANT,
        "integration": INTEGRATION,
        "config": {"api_url": api.url, "token": REF, "page_size": 50},
        "full_refresh": False,
        "correlation_id": "v1-job",
    }
    job = await finished(queue, await queue.send("contacts.contacts", old_job))

    assert job.state == "completed", job.error
    assert api.log[0].query == {"limit": "50", "updated_after": since}
    assert job.output["records"] == {"contacts": 20}
    assert await stored_state(queue) == (position(api.contacts()[-1]), 2)


async def test_state_newer_than_the_connector_is_refused(
    queue: QueueClient, vault: Vault, api: FakeContactsApi
) -> None:
    executor, _ = await start(queue, [ContactsConnector()], vault, retry_limit=0)
    insert = sql.SQL(
        "insert into {}.connector_state (integration_id, job_type, state, state_version)"
        " values (%s, 'contacts', '{{}}'::jsonb, 3)"
    ).format(sql.Identifier(queue.schema))
    async with queue.pool.connection() as conn:
        await conn.execute(insert, (INTEGRATION,))
    job = await run_sync(executor, api)
    assert job.state == "failed" and job.error is not None
    assert "state version 3 is newer than this connector understands (2)" in (job.error["message"])
    assert api.requests == 0


# -- secrets ---------------------------------------------------------------------------------------


async def test_send_refuses_a_config_with_another_tenants_secret_or_a_bad_field(
    queue: QueueClient, vault: Vault, api: FakeContactsApi
) -> None:
    executor, _ = await start(queue, [ContactsConnector()], vault)
    other = contacts_config(api, token="secret://globex/contacts/token")
    with pytest.raises(ConfigError, match="references a secret of tenant 'globex'"):
        await executor.send_sync(
            "contacts", "contacts", tenant=TENANT, integration=INTEGRATION, config=other
        )
    pasted = contacts_config(api, token=TOKEN)  # a token where its reference belongs
    with pytest.raises(ConfigError, match="token: Value error, must be a secret ref") as bad:
        await executor.send_sync(
            "contacts", "contacts", tenant=TENANT, integration=INTEGRATION, config=pasted
        )
    assert TOKEN not in str(bad.value)  # the error names the field, not what was in it
    assert (await queue.list_jobs()).jobs == []


async def test_a_job_resolves_only_its_own_tenants_secrets(
    queue: QueueClient, vault: Vault, api: FakeContactsApi
) -> None:
    hooks = Hooks()
    executor, _ = await start(queue, [ContactsConnector()], vault, hooks, retry_limit=4)
    await executor.ensure_queues()
    # A job written by something other than send_sync (which refuses it): acme's job
    # naming globex's token.
    payload = {
        "format": 1,
        "v": 2,
        "tenant": TENANT,
        "integration": INTEGRATION,
        "config": contacts_config(api, token="secret://globex/contacts/token"),
        "full_refresh": False,
        "correlation_id": "cross-tenant",
    }
    job = await finished(queue, await queue.send("contacts.contacts", payload))

    assert (job.state, job.attempt) == ("failed", 1)  # a config problem: not retried
    assert job.error is not None
    assert job.error["type"] == "patchbay.connectors.errors.ConfigError"
    assert "names tenant 'globex', but the caller acts for tenant 'acme'" in (job.error["message"])
    assert "patchbay.secrets.errors.CrossTenantReference" in job.error["traceback"]
    assert api.requests == 0
    assert OTHER_TOKEN not in json.dumps(job.error)
    assert [final for _, _, final in hooks.failures] == [True]


class LeakyContacts(ContactsConnector):
    """A careless connector: it logs the token and puts it in its error."""

    name = "leaky"

    @sync()
    async def contacts(self, ctx: JobContext[Any]) -> None:
        token = await ctx.secret(ctx.config.token)
        ctx.log.warning("calling %s with token %s", ctx.config.base_url, token)
        raise TransientError(f"the API refused Authorization: Bearer {token}")


async def test_the_token_never_reaches_job_rows_errors_or_logs(
    queue: QueueClient, vault: Vault, api: FakeContactsApi, caplog: pytest.LogCaptureFixture
) -> None:
    # As a daemon does: the vault's redactor on the log handlers.
    caplog.handler.addFilter(RedactingFilter(vault.redactor))
    caplog.set_level(logging.INFO)
    executor, _ = await start(queue, [LeakyContacts(), ContactsConnector()], vault, retry_limit=0)
    leaky = await finished(
        queue,
        await executor.send_sync(
            "leaky",
            "contacts",
            tenant=TENANT,
            integration=INTEGRATION,
            config=contacts_config(api),
        ),
    )
    api.revoke(TOKEN)
    revoked = await run_sync(executor, api)

    assert leaky.state == revoked.state == "failed"
    assert leaky.error is not None
    assert "Bearer [REDACTED]" in leaky.error["message"]
    assert TOKEN not in leaky.error["traceback"]
    async with queue.pool.connection() as conn:
        cur = await conn.execute(
            sql.SQL("select j::text from {}.job j").format(sql.Identifier(queue.schema))
        )
        rows = [r[0] for r in await cur.fetchall()]
        cur = await conn.execute(
            sql.SQL("select e::text from {}.job_event e").format(sql.Identifier(queue.schema))
        )
        rows += [r[0] for r in await cur.fetchall()]
    assert len(rows) >= 2
    assert all(TOKEN not in row for row in rows)
    assert REF in rows[0]  # jobs carry the reference
    assert "with token [REDACTED]" in caplog.text
    assert TOKEN not in caplog.text


async def test_without_a_vault_a_secret_reference_is_a_config_error(
    queue: QueueClient, api: FakeContactsApi
) -> None:
    executor, _ = await start(queue, [ContactsConnector()], None, retry_limit=3)
    job = await run_sync(executor, api)
    assert (job.state, job.attempt) == ("failed", 1)
    assert job.error is not None and "no vault is configured" in job.error["message"]


async def test_records_of_two_integrations_stay_apart(
    queue: QueueClient, vault: Vault, api: FakeContactsApi, database_url: str
) -> None:
    executor, _ = await start(queue, [ContactsConnector()], vault)
    await run_sync(executor, api)
    other = await executor.send_sync(
        "contacts",
        "contacts",
        tenant=TENANT,
        integration="acme-contacts-eu",
        config=contacts_config(api, page_size=100),
    )
    assert (await finished(queue, other)).state == "completed"
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            sql.SQL(
                "select integration_id, count(*) from {}.connector_record group by 1 order by 1"
            ).format(sql.Identifier(queue.schema))
        ).fetchall()
    assert rows == [("acme-contacts", 120), ("acme-contacts-eu", 120)]
    eu_state = await stored_state(queue, integration="acme-contacts-eu")
    assert eu_state == (position(api.contacts()[-1]), 2)
