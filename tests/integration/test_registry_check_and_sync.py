"""Registry: ``check=True`` runs the connector's check() with secrets resolved through the
vault for the integration's tenant only; ``sync_now`` and ``start_backfill`` enqueue the
integration's jobs (tenant, group = integration, fairness key = tenant) with their audit
events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

from patchbay.connectors import (
    AuthError,
    CheckContext,
    Connector,
    ConnectorConfig,
    ConnectorExecutor,
    JobContext,
    JobTypeNotFound,
    SecretField,
    Window,
    backfill,
    sync,
)
from patchbay.queue import QueueClient
from patchbay.runtime import (
    CheckFailed,
    InvalidTransition,
    Registry,
    TenantDisabled,
)
from patchbay.secrets import REDACTED, LocalKeyProvider, Vault, generate_master_key

KEYS = LocalKeyProvider([generate_master_key("k1")])
GOOD = "tok_good_0123456789"
BAD = "tok_revoked_9876543210"


class CheckedConfig(ConnectorConfig):
    """A token and what the check should do."""

    token: SecretField
    mode: str = "token"


class Checked(Connector[CheckedConfig]):
    """A connector whose check() resolves its token and insists on GOOD."""

    name = "checked"
    config_model = CheckedConfig
    hang = asyncio.Event()

    @sync(every="*/5 * * * *")
    async def items(self, ctx: JobContext[CheckedConfig]) -> None:
        """Nothing to sync."""

    @sync(every="0 * * * *")
    async def users(self, ctx: JobContext[CheckedConfig]) -> None:
        """Nothing to sync."""

    @backfill(window=timedelta(days=1))
    async def history(self, ctx: JobContext[CheckedConfig], window: Window) -> None:
        """Nothing to backfill."""

    async def check(self, ctx: CheckContext[CheckedConfig]) -> None:
        """Refuse any token but GOOD, echoing it (the registry must redact it)."""
        if ctx.config.mode == "hang":
            await self.hang.wait()
        if ctx.config.mode == "other-tenant":
            await ctx.secret("secret://globex/api/token")
        token = await ctx.secret(ctx.config.token)
        if token != GOOD:
            raise AuthError(f"401 Unauthorized: token {token} was revoked")


def count(database_url: str, schema: str, table: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            sql.SQL("select count(*) from {}.{}").format(
                sql.Identifier(schema), sql.Identifier(table)
            )
        ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
async def vault(database_url: str, schema: str) -> AsyncIterator[Vault]:
    async with Vault(database_url, schema=schema, keys=KEYS, cache_ttl=0) as v:
        await v.put("acme", "api/good", GOOD)
        await v.put("acme", "api/bad", BAD)
        await v.put("globex", "api/token", "globex-token-value")
        yield v


@pytest.fixture
async def registry(database_url: str, schema: str, vault: Vault) -> AsyncIterator[Registry]:
    async with Registry(
        database_url, schema=schema, connectors=[Checked], vault=vault, check_timeout=0.5
    ) as r:
        await r.add_tenant("acme")
        await r.add_tenant("globex")
        yield r


async def test_check_passes_with_a_good_credential(registry: Registry) -> None:
    added = await registry.add_integration(
        "acme-checked",
        tenant="acme",
        connector="checked",
        config={"token": "secret://acme/api/good"},
        check=True,
    )
    assert added.config == {"token": "secret://acme/api/good"}
    [created] = await registry.events("acme-checked")
    assert created.data["checked"] is True


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"token": "secret://acme/api/bad"}, "AuthError: 401 Unauthorized: token"),
        ({"token": "secret://acme/api/missing"}, "not found|no secret|SecretNotFound"),
        ({"token": "secret://acme/api/good", "mode": "other-tenant"}, "globex"),
        ({"token": "secret://acme/api/good", "mode": "hang"}, "did not finish within 0.5 s"),
    ],
)
async def test_a_failed_check_writes_nothing(
    registry: Registry, database_url: str, schema: str, config: dict[str, Any], message: str
) -> None:
    with pytest.raises(CheckFailed, match=message) as info:
        await registry.add_integration(
            "acme-checked", tenant="acme", connector="checked", config=config, check=True
        )
    text = str(info.value)
    assert BAD not in text and "globex-token-value" not in text
    if "bad" in config["token"]:
        assert REDACTED in text
    assert count(database_url, schema, "integration") == 0
    assert count(database_url, schema, "integration_event") == 0


async def test_check_without_a_vault_says_so(database_url: str, schema: str) -> None:
    async with Registry(database_url, schema=schema, connectors=[Checked]) as registry:
        await registry.add_tenant("acme")
        with pytest.raises(CheckFailed, match="no vault"):
            await registry.add_integration(
                "acme-checked",
                tenant="acme",
                connector="checked",
                config={"token": "secret://acme/api/good"},
                check=True,
            )
        # Without check=True, references are not resolved at all.
        await registry.add_integration(
            "acme-checked", tenant="acme", connector="checked", config={"token": "secret://acme/x"}
        )


@pytest.fixture
async def executor(database_url: str, schema: str) -> AsyncIterator[ConnectorExecutor]:
    async with QueueClient(database_url, schema=schema, maintenance=False) as client:
        yield ConnectorExecutor(client, [Checked()])


def jobs(database_url: str, schema: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            sql.SQL(
                "select queue, group_key, fairness_key, data->>'tenant', data->>'integration',"
                " data->'config' from {}.job order by queue, created_at"
            ).format(sql.Identifier(schema))
        ).fetchall()


async def test_sync_now_enqueues_each_sync_job_type(
    registry: Registry, executor: ConnectorExecutor, database_url: str, schema: str
) -> None:
    config = {"token": "secret://acme/api/good"}
    await registry.add_integration(
        "acme-checked", tenant="acme", connector="checked", config=config
    )
    ids = await registry.sync_now("acme-checked", executor, actor="ops")
    assert len(ids) == 2 and all(i is not None for i in ids)
    assert jobs(database_url, schema) == [
        ("checked.items", "acme-checked", "acme", "acme", "acme-checked", config),
        ("checked.users", "acme-checked", "acme", "acme", "acme-checked", config),
    ]
    event = (await registry.events("acme-checked"))[-1]
    assert event.kind == "sync_requested"
    assert event.data == {
        "job_types": ["items", "users"],
        "jobs": [str(i) for i in ids],
        "by": "ops",
    }

    [one] = await registry.sync_now("acme-checked", executor, job_type="users", full_refresh=True)
    record = await executor.queue.get_job(one)  # type: ignore[arg-type]
    assert record.queue == "checked.users" and record.data["full_refresh"] is True
    with pytest.raises(JobTypeNotFound):
        await registry.sync_now("acme-checked", executor, job_type="nope")


async def test_sync_now_of_a_paused_integration_is_allowed_of_a_disabled_one_not(
    registry: Registry, executor: ConnectorExecutor, database_url: str, schema: str
) -> None:
    config = {"token": "secret://acme/api/good"}
    await registry.add_integration(
        "acme-checked", tenant="acme", connector="checked", config=config
    )
    await registry.pause("acme-checked")
    assert len(await registry.sync_now("acme-checked", executor, job_type="items")) == 1
    await registry.disable("acme-checked")
    events = count(database_url, schema, "integration_event")
    with pytest.raises(InvalidTransition, match="disabled"):
        await registry.sync_now("acme-checked", executor)
    with pytest.raises(InvalidTransition, match="disabled"):
        await registry.start_backfill(
            "acme-checked",
            executor,
            since=datetime(2024, 1, 1, tzinfo=UTC),
            until=datetime(2024, 1, 2, tzinfo=UTC),
        )
    await registry.resume("acme-checked")
    await registry.disable_tenant("acme")
    with pytest.raises(TenantDisabled):
        await registry.sync_now("acme-checked", executor)
    assert count(database_url, schema, "job") == 1
    assert count(database_url, schema, "integration_event") == events + 1  # the resume


async def test_backfill_enqueues_its_windows(
    registry: Registry, executor: ConnectorExecutor, database_url: str, schema: str
) -> None:
    config = {"token": "secret://acme/api/good"}
    await registry.add_integration(
        "acme-checked", tenant="acme", connector="checked", config=config
    )
    since = datetime(2024, 1, 1, tzinfo=UTC)
    backfill_id = await registry.start_backfill(
        "acme-checked", executor, since=since, until=since + timedelta(days=3)
    )
    status = await executor.backfill_status(backfill_id)
    assert status["windows_total"] == 3
    assert status["integration_id"] == "acme-checked" and status["tenant"] == "acme"
    queued = jobs(database_url, schema)
    assert [q[0] for q in queued] == ["checked.history"] * 3
    assert {(q[3], q[4]) for q in queued} == {("acme", "acme-checked")}
    event = (await registry.events("acme-checked"))[-1]
    assert event.kind == "backfill_started"
    assert event.data == {
        "job_type": "history",
        "backfill_id": str(backfill_id),
        "since": since.isoformat(),
        "until": (since + timedelta(days=3)).isoformat(),
    }
