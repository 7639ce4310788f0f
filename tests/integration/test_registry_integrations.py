"""Registry: integrations (add, update, list, pause, resume, disable) and their audit
events, written in the same transaction as each change and exported to sinks after
commit; bad input gets a typed error and writes nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql
from pydantic import Field

from patchbay.connectors import (
    Connector,
    ConnectorConfig,
    InvalidConnector,
    JobContext,
    SecretField,
    Window,
    backfill,
    sync,
)
from patchbay.queue import InvalidInput
from patchbay.runtime import (
    AuditEvent,
    IntegrationExists,
    IntegrationNotFound,
    InvalidConfig,
    InvalidCron,
    InvalidId,
    InvalidTransition,
    Registry,
    ResumeContext,
    SecretNotReference,
    TenantDisabled,
    TenantNotFound,
    UnknownConnector,
)

TOKEN_VALUE = "sk_live_9f8e7d6c5b4a"


class DemoConfig(ConnectorConfig):
    """The test connector's config."""

    base_url: str
    token: SecretField
    page_size: int = Field(default=50, ge=1, le=500)


class Demo(Connector[DemoConfig]):
    """A connector for registry tests: one sync, one backfill."""

    name = "demo"
    version = "1.2.0"
    config_model = DemoConfig

    @sync(every="*/5 * * * *")
    async def items(self, ctx: JobContext[DemoConfig]) -> None:
        """Nothing to sync."""

    @backfill(window=timedelta(days=1))
    async def history(self, ctx: JobContext[DemoConfig], window: Window) -> None:
        """Nothing to backfill."""


CONFIG = {"base_url": "https://api.example.com", "token": "secret://acme/demo/token"}


def query(database_url: str, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(statement, params).fetchall()  # type: ignore[arg-type]


def execute(database_url: str, statement: str, *params: Any) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute(statement, params)  # type: ignore[arg-type]


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
async def registry(database_url: str, schema: str) -> AsyncIterator[Registry]:
    async with Registry(database_url, schema=schema, connectors=[Demo]) as r:
        await r.add_tenant("acme")
        await r.add_tenant("globex")
        yield r


async def test_add_show_list(registry: Registry) -> None:
    added = await registry.add_integration(
        "acme-demo", tenant="acme", connector="demo", config=CONFIG, schedule="*/30 * * * *"
    )
    assert added.tenant_id == "acme" and added.connector == "demo"
    assert added.status == "active" and added.consecutive_failures == 0
    # Stored as given (validated, defaults left to the model), secrets as references.
    assert added.config == CONFIG
    assert added.schedule == "*/30 * * * *"
    assert await registry.get_integration("acme-demo") == added

    await registry.add_integration(
        "globex-demo",
        tenant="globex",
        connector="demo",
        config=DemoConfig(base_url="https://g", token="secret://globex/t", page_size=9),
    )
    listed = await registry.list_integrations()
    assert [i.id for i in listed] == ["acme-demo", "globex-demo"]
    assert listed[1].config == {
        "base_url": "https://g",
        "token": "secret://globex/t",
        "page_size": 9,
    }
    assert [i.id for i in await registry.list_integrations(tenant="globex")] == ["globex-demo"]
    assert await registry.list_integrations(connector="other") == []
    assert await registry.list_integrations(status="paused") == []

    [created] = await registry.events("acme-demo")
    assert created.kind == "created" and created.tenant_id == "acme"
    assert created.data == {"connector": "demo", "version": "1.2.0", "schedule": "*/30 * * * *"}
    assert json.loads(json.dumps(added.to_json()))["config"] == CONFIG


async def test_lifecycle_events(registry: Registry, database_url: str, schema: str) -> None:
    await registry.add_integration("acme-demo", tenant="acme", connector="demo", config=CONFIG)
    paused = await registry.pause("acme-demo", reason="customer asked", actor="ops@example")
    assert paused.status == "paused"
    assert (await registry.pause("acme-demo")).status == "paused"  # no-op, no event
    resumed = await registry.resume("acme-demo", actor="ops@example")
    assert resumed.status == "active"
    assert (await registry.resume("acme-demo")).status == "active"  # no-op, no event
    disabled = await registry.disable("acme-demo", reason="churned")
    assert disabled.status == "disabled"
    assert (await registry.disable("acme-demo")).status == "disabled"
    with pytest.raises(InvalidTransition, match="disabled"):
        await registry.pause("acme-demo")
    back = await registry.resume("acme-demo")
    assert back.status == "active"

    events = await registry.events("acme-demo")
    assert [(e.kind, e.data) for e in events] == [
        ("created", {"connector": "demo", "version": "1.2.0"}),
        ("paused", {"from": "active", "reason": "customer asked", "by": "ops@example"}),
        ("resumed", {"from": "paused", "consecutive_failures": 0, "by": "ops@example"}),
        ("disabled", {"from": "active", "reason": "churned"}),
        ("resumed", {"from": "disabled", "consecutive_failures": 0}),
    ]
    assert [e.id for e in events] == sorted(e.id for e in events)
    assert count(database_url, schema, "integration_event") == 5

    after = await registry.events("acme-demo", since_id=events[1].id, limit=2)
    assert [e.id for e in after] == [events[2].id, events[3].id]
    stream = await registry.stream(since_id=events[3].id)
    assert [e.id for e in stream] == [events[4].id]


async def test_resume_resets_failures_and_calls_the_hook_in_its_transaction(
    database_url: str, schema: str
) -> None:
    seen: list[ResumeContext] = []

    async def on_resume(ctx: ResumeContext) -> None:
        seen.append(ctx)
        # Writes through the hook's connection commit with the resume.
        await ctx.connection.execute(
            sql.SQL(
                "insert into {}.incident (id, scope, integration_id, title, status)"
                " values (gen_random_uuid(), 'integration', %s, 'resolved by hook', 'resolved')"
            ).format(sql.Identifier(schema)),
            (ctx.integration.id,),
        )

    async with Registry(
        database_url, schema=schema, connectors=[Demo], on_resume=on_resume
    ) as registry:
        await registry.add_tenant("acme")
        await registry.add_integration("acme-demo", tenant="acme", connector="demo", config=CONFIG)
        execute(
            database_url,
            f'update "{schema}".integration set status = %s, consecutive_failures = 3'
            " where id = 'acme-demo'",
            "needs_attention",
        )
        resumed = await registry.resume("acme-demo", actor="support")
        assert resumed.status == "active" and resumed.consecutive_failures == 0
        [ctx] = seen
        assert ctx.previous_status == "needs_attention" and ctx.actor == "support"
        assert ctx.integration == resumed
        assert count(database_url, schema, "incident") == 1
        last = (await registry.events("acme-demo"))[-1]
        assert (last.kind, last.data) == (
            "resumed",
            {"from": "needs_attention", "consecutive_failures": 3, "by": "support"},
        )


async def test_a_failing_resume_hook_writes_nothing(database_url: str, schema: str) -> None:
    async def on_resume(ctx: ResumeContext) -> None:
        raise RuntimeError("incident store unavailable")

    sunk: list[AuditEvent] = []
    async with Registry(
        database_url,
        schema=schema,
        connectors=[Demo],
        on_resume=on_resume,
        event_sinks=[sunk.append],
    ) as registry:
        await registry.add_tenant("acme")
        await registry.add_integration("acme-demo", tenant="acme", connector="demo", config=CONFIG)
        await registry.pause("acme-demo")
        events_before = count(database_url, schema, "integration_event")
        with pytest.raises(RuntimeError, match="incident store"):
            await registry.resume("acme-demo")
        assert (await registry.get_integration("acme-demo")).status == "paused"
        assert count(database_url, schema, "integration_event") == events_before
        assert [e.kind for e in sunk] == ["created", "paused"]


async def test_resume_is_refused_while_the_tenant_is_disabled(registry: Registry) -> None:
    await registry.add_integration("acme-demo", tenant="acme", connector="demo", config=CONFIG)
    await registry.pause("acme-demo")
    await registry.disable_tenant("acme")
    with pytest.raises(TenantDisabled, match="acme"):
        await registry.resume("acme-demo")
    assert (await registry.get_integration("acme-demo")).status == "paused"


async def test_update_config_and_schedule(registry: Registry) -> None:
    await registry.add_integration("acme-demo", tenant="acme", connector="demo", config=CONFIG)
    changed = await registry.update_integration(
        "acme-demo", config={**CONFIG, "page_size": 200}, schedule="@daily", actor="ops"
    )
    assert changed.config["page_size"] == 200 and changed.schedule == "@daily"
    same = await registry.update_integration("acme-demo", config={**CONFIG, "page_size": 200})
    assert same == changed
    cleared = await registry.update_integration("acme-demo", clear_schedule=True)
    assert cleared.schedule is None
    kinds = [(e.kind, e.data) for e in await registry.events("acme-demo")]
    assert kinds[1:] == [
        (
            "config_changed",
            {
                "config_fields": ["page_size"],
                "schedule": {"from": None, "to": "@daily"},
                "by": "ops",
            },
        ),
        ("config_changed", {"schedule": {"from": "@daily", "to": None}}),
    ]
    with pytest.raises(SecretNotReference):
        await registry.update_integration("acme-demo", config={**CONFIG, "token": TOKEN_VALUE})
    with pytest.raises(InvalidCron):
        await registry.update_integration("acme-demo", schedule="every day")
    assert await registry.get_integration("acme-demo") == cleared


async def test_sinks_hear_each_event_after_commit(database_url: str, schema: str) -> None:
    received: list[tuple[str, str, int]] = []

    def sync_sink(event: AuditEvent) -> None:
        # After commit: another connection sees the event's row.
        rows = query(
            database_url, f'select kind from "{schema}".integration_event where id = %s', event.id
        )
        received.append(("sync", rows[0][0], event.id))

    async def async_sink(event: AuditEvent) -> None:
        received.append(("async", event.kind, event.id))

    def broken_sink(event: AuditEvent) -> None:
        raise ValueError("the stream is down")

    async with Registry(
        database_url,
        schema=schema,
        connectors=[Demo],
        event_sinks=[broken_sink, sync_sink, async_sink],
    ) as registry:
        await registry.add_tenant("acme")
        await registry.add_integration("acme-demo", tenant="acme", connector="demo", config=CONFIG)
        await registry.pause("acme-demo")
        await registry.pause("acme-demo")  # nothing changes, nothing is sent
        with pytest.raises(IntegrationExists):
            await registry.add_integration(
                "acme-demo", tenant="acme", connector="demo", config=CONFIG
            )
        recorded = await registry.record_event("acme-demo", "synced", {"records": {"items": 3}})
        ids = [e.id for e in await registry.events("acme-demo")]
    assert recorded.data == {"records": {"items": 3}}
    assert received == [
        ("sync", "created", ids[0]),
        ("async", "created", ids[0]),
        ("sync", "paused", ids[1]),
        ("async", "paused", ids[1]),
        ("sync", "synced", ids[2]),
        ("async", "synced", ids[2]),
    ]


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"connector": "nope"}, UnknownConnector, "no connector named 'nope' \\(known: demo\\)"),
        ({"tenant": "nobody"}, TenantNotFound, "nobody"),
        ({"tenant": "off"}, TenantDisabled, "'off' is disabled"),
        ({"integration_id": "taken"}, IntegrationExists, "'taken' exists already"),
        ({"integration_id": "no spaces"}, InvalidId, "integration id"),
        ({"schedule": "*/5 * *"}, InvalidCron, "field"),
        ({"config": {"token": "secret://acme/t"}}, InvalidConfig, "base_url: Field required"),
        (
            {"config": {**CONFIG, "page_size": 0}},
            InvalidConfig,
            "page_size: Input should be greater than or equal to 1",
        ),
        ({"config": {**CONFIG, "extra": 1}}, InvalidConfig, "extra: Extra inputs"),
        ({"config": [("base_url", "x")]}, InvalidConfig, "must be an object"),
        ({"config": {**CONFIG, "token": TOKEN_VALUE}}, SecretNotReference, "token: .*reference"),
        (
            {"config": {**CONFIG, "token": "secret://globex/demo/token"}},
            SecretNotReference,
            "tenant 'globex'",
        ),
    ],
)
async def test_bad_integration_input_is_refused_and_writes_nothing(
    registry: Registry,
    database_url: str,
    schema: str,
    changes: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    await registry.add_tenant("off")
    await registry.disable_tenant("off")
    await registry.add_integration("taken", tenant="acme", connector="demo", config=CONFIG)
    before = (
        count(database_url, schema, "integration"),
        count(database_url, schema, "integration_event"),
    )
    arguments: dict[str, Any] = {
        "integration_id": "acme-new",
        "tenant": "acme",
        "connector": "demo",
        "config": CONFIG,
        **changes,
    }
    integration_id = arguments.pop("integration_id")
    with pytest.raises(error, match=message) as info:
        await registry.add_integration(integration_id, **arguments)
    assert isinstance(info.value, InvalidInput | LookupError)
    # Never echo a secret value that was pasted into the config.
    assert TOKEN_VALUE not in str(info.value)
    after = (
        count(database_url, schema, "integration"),
        count(database_url, schema, "integration_event"),
    )
    assert after == before


async def test_unknown_integration(registry: Registry) -> None:
    for call in (
        registry.get_integration("nope"),
        registry.pause("nope"),
        registry.resume("nope"),
        registry.disable("nope"),
        registry.events("nope"),
        registry.record_event("nope", "synced"),
        registry.update_integration("nope", schedule="@daily"),
    ):
        with pytest.raises(IntegrationNotFound, match="nope") as info:
            await call
        assert isinstance(info.value, LookupError)
    with pytest.raises(InvalidInput, match="limit"):
        await registry.events("nope", limit=0)
    with pytest.raises(InvalidInput, match="kind"):
        await registry.record_event("nope", "Not A Kind")


async def test_connectors_default_to_the_installed_plugins(
    database_url: str, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("patchbay.runtime.registry.discover", lambda: {"demo": Demo})
    async with Registry(database_url, schema=schema) as registry:
        assert registry.connectors == {"demo": Demo}
        await registry.add_tenant("acme")
        added = await registry.add_integration(
            "acme-demo", tenant="acme", connector="demo", config=CONFIG
        )
        assert added.connector == "demo"


def test_connector_mappings_are_checked() -> None:
    with pytest.raises(InvalidConnector, match="registered under the name 'other'"):
        Registry("postgresql://unused/db", connectors={"other": Demo})
    with pytest.raises(InvalidConnector, match="not a Connector"):
        Registry("postgresql://unused/db", connectors=[dict])  # type: ignore[list-item]


async def test_concurrent_adds_of_one_id_make_one_integration_and_one_event(
    database_url: str, schema: str
) -> None:
    async with Registry(database_url, schema=schema, connectors=[Demo], pool_size=8) as registry:
        await registry.add_tenant("acme")
        results = await asyncio.gather(
            *(
                registry.add_integration(
                    "acme-demo",
                    tenant="acme",
                    connector="demo",
                    config={**CONFIG, "page_size": n},
                )
                for n in range(1, 9)
            ),
            return_exceptions=True,
        )
        added = [r for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, IntegrationExists)]
        assert len(added) == 1 and len(refused) == 7, results
        assert await registry.get_integration("acme-demo") == added[0]
        assert [e.kind for e in await registry.events("acme-demo")] == ["created"]


async def test_concurrent_pauses_and_resumes_record_every_change_in_order(
    database_url: str, schema: str
) -> None:
    async with Registry(database_url, schema=schema, connectors=[Demo], pool_size=8) as registry:
        await registry.add_tenant("acme")
        await registry.add_integration("acme-demo", tenant="acme", connector="demo", config=CONFIG)
        calls = [registry.pause("acme-demo"), registry.resume("acme-demo")] * 6
        await asyncio.gather(*calls)
        events = await registry.events("acme-demo")
        # Each recorded change starts from the status the previous one left.
        status = "active"
        for event in events[1:]:
            assert event.data["from"] == status, events
            status = "paused" if event.kind == "paused" else "active"
        assert (await registry.get_integration("acme-demo")).status == status
