"""The tenant-aware scheduler's fan-out and the failure policy, on a real Postgres."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from conftest import Eventually
from psycopg import sql

from patchbay.connectors import (
    AuthError,
    Connector,
    ConnectorConfig,
    ConnectorExecutor,
    JobContext,
    sync,
)
from patchbay.queue import FrozenClock, JobState, QueueClient
from patchbay.runtime.failure_policy import NOTIFY_QUEUE, FailurePolicy, FailureTracker
from patchbay.runtime.scheduler import SYNC_ALL_QUEUE, TenantScheduler


class FlakyConfig(ConnectorConfig):
    mode: str = "ok"


class Flaky(Connector[FlakyConfig]):
    name = "flaky"
    version = "1.0.0"
    config_model = FlakyConfig

    @sync(every="*/5 * * * *")
    async def items(self, ctx: JobContext[FlakyConfig]) -> None:
        if ctx.config.mode == "auth":
            raise AuthError("401 Unauthorized: token revoked")
        if ctx.config.mode == "boom":
            raise RuntimeError("upstream exploded (request 12345)")
        ctx.emit("items", [{"id": "1", "n": 1}])


def _exec(conn: psycopg.Connection[Any], schema: str, text: str, *args: Any) -> None:
    conn.execute(sql.SQL(text).format(s=sql.Identifier(schema)), args)


def add_tenant(url: str, schema: str, tenant: str, **limits: Any) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        _exec(
            conn,
            schema,
            "insert into {s}.tenant (id, name, starts_per_interval, sync_schedule,"
            " max_concurrent, fairness_weight) values (%s, %s, %s, %s, %s, %s)",
            tenant,
            tenant.title(),
            limits.get("starts_per_interval"),
            limits.get("sync_schedule"),
            limits.get("max_concurrent"),
            limits.get("fairness_weight", 1),
        )


def add_integration(
    url: str,
    schema: str,
    ident: str,
    tenant: str,
    mode: str = "ok",
    status: str = "active",
    schedule: str | None = None,
) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        _exec(
            conn,
            schema,
            "insert into {s}.integration (id, tenant_id, connector, config, status,"
            " schedule) values (%s, %s, 'flaky', %s, %s, %s)",
            ident,
            tenant,
            json.dumps({"mode": mode}),
            status,
            schedule,
        )


def integration_row(url: str, schema: str, ident: str) -> dict[str, Any]:
    with psycopg.connect(url) as conn:
        cur = conn.cursor(row_factory=psycopg.rows.dict_row)
        cur.execute(
            sql.SQL("select * from {}.integration where id = %s").format(sql.Identifier(schema)),
            (ident,),
        )
        row = cur.fetchone()
    assert row is not None
    return row


@pytest.mark.smoke
async def test_fan_out_sends_one_sync_per_due_active_integration(
    database_url: str, schema: str
) -> None:
    clock = FrozenClock()
    async with QueueClient(database_url, schema=schema, clock=clock) as client:
        executor = ConnectorExecutor(client, [Flaky()])
        scheduler = TenantScheduler(client, executor, clock=clock)
        await scheduler.ensure_queues()
        add_tenant(database_url, schema, "acme")
        add_tenant(database_url, schema, "globex", starts_per_interval=10)
        for i in range(3):
            add_integration(database_url, schema, f"acme-{i}", "acme")
        add_integration(database_url, schema, "acme-paused", "acme", status="paused")
        add_integration(database_url, schema, "acme-att", "acme", status="needs_attention")
        add_integration(database_url, schema, "globex-0", "globex")

        first = await scheduler.fan_out("acme")
        assert (first.sent, first.not_due) == (3, 0)
        again = await scheduler.fan_out("acme")  # nothing due until the next */5 fire
        assert (again.sent, again.not_due) == (0, 3)
        clock.advance(timedelta(minutes=5))
        assert (await scheduler.fan_out("acme")).sent == 3
        # One waiting sync per integration: the third round joined the waiting jobs.
        stats = (await client.stats("flaky.items"))[0]
        assert stats.queued == 3

        await scheduler.fan_out("globex")
        page = await client.list_jobs(queue="flaky.items", limit=100)
        globex = [j for j in page.jobs if j.data["tenant"] == "globex"]
        assert len(globex) == 1
        async with client.pool.connection() as conn:
            cur = await conn.execute(
                sql.SQL(
                    "select group_key, fairness_key, rate_key, singleton_key from {}.job"
                    " where id = %s"
                ).format(sql.Identifier(schema)),
                (globex[0].id,),
            )
            assert await cur.fetchone() == ("globex-0", "globex", "tenant:globex", "globex-0")
        assert [r["key"] for r in await client.rate_limits()] == ["tenant:globex"]


async def test_tenant_schedule_enqueues_sync_all_once_per_fire(
    database_url: str, schema: str
) -> None:
    clock = FrozenClock()
    async with QueueClient(database_url, schema=schema, clock=clock) as client:
        scheduler = TenantScheduler(client, ConnectorExecutor(client, [Flaky()]), clock=clock)
        await scheduler.ensure_queues()
        add_tenant(database_url, schema, "acme")
        await scheduler.schedule_tenant("acme", "*/10 * * * *")
        info = await client.schedules.get("sync_all:acme")
        assert info.next_fire_at is not None
        clock.set(info.next_fire_at + timedelta(seconds=1))
        await client.schedules.tick()
        await client.schedules.tick()
        assert (await client.stats(SYNC_ALL_QUEUE))[0].queued == 1


async def _run_until_failed(
    client: QueueClient, tracker: FailureTracker, eventually: Eventually, jobs: list[Any]
) -> None:
    await eventually(lambda: all(j.done() for j in jobs), within=30)


async def test_auth_error_needs_attention_at_once_with_one_incident_and_notification(
    database_url: str, schema: str, eventually: Eventually
) -> None:
    async with QueueClient(database_url, schema=schema) as client:
        tracker = FailureTracker(client)
        await tracker.ensure_queue()
        executor = ConnectorExecutor(client, [Flaky()], hooks=tracker, retry_delay=0)
        scheduler = TenantScheduler(client, executor)
        await scheduler.ensure_queues()
        add_tenant(database_url, schema, "acme")
        add_integration(database_url, schema, "acme-crm", "acme", mode="auth")
        await scheduler.fan_out("acme")
        worker = (await executor.start(concurrency=2, poll_interval=0.05))[0]
        await eventually(lambda: worker.failed >= 1)
        await worker.drain()
        row = integration_row(database_url, schema, "acme-crm")
        assert row["status"] == "needs_attention"
        assert row["consecutive_failures"] == 1
        assert row["last_error"]["type"] == "AuthError"
        incidents = await tracker.incidents(status="open")
        assert len(incidents) == 1 and incidents[0]["level"] == "attention"
        assert "needs attention" in incidents[0]["title"]
        # Paused: the scheduler no longer sends its syncs.
        assert (await scheduler.fan_out("acme")).sent == 0
        notes = (await client.list_jobs(queue=NOTIFY_QUEUE)).jobs
        assert [n.data["transition"] for n in notes] == ["opened"]

        assert await tracker.resume("acme-crm", by="support")
        row = integration_row(database_url, schema, "acme-crm")
        assert (row["status"], row["consecutive_failures"]) == ("active", 0)
        assert await tracker.incidents(status="open") == []
        notes = (await client.list_jobs(queue=NOTIFY_QUEUE)).jobs
        assert sorted(n.data["transition"] for n in notes) == ["opened", "resolved"]


async def test_transient_failures_warn_then_need_attention_after_three(
    database_url: str, schema: str, eventually: Eventually
) -> None:
    async with QueueClient(database_url, schema=schema) as client:
        tracker = FailureTracker(client, policy=FailurePolicy(attention_after=3))
        await tracker.ensure_queue()
        executor = ConnectorExecutor(client, [Flaky()], hooks=tracker, retry_limit=0, retry_delay=0)
        scheduler = TenantScheduler(client, executor)
        await scheduler.ensure_queues()
        add_tenant(database_url, schema, "acme")
        add_integration(database_url, schema, "acme-crm", "acme", mode="boom")
        worker = (await executor.start(concurrency=1, poll_interval=0.05))[0]
        for expected in (1, 2, 3):
            await executor.send_sync(
                "flaky", "items", tenant="acme", integration="acme-crm", config={"mode": "boom"}
            )
            await eventually(lambda e=expected: worker.failed >= e)  # type: ignore[misc]
            await worker.drain()
            incidents = await tracker.incidents(status="open")
            level = incidents[0]["level"]
            assert level == ("attention" if expected == 3 else "warning")
            assert incidents[0]["failure_count"] == expected
        assert integration_row(database_url, schema, "acme-crm")["status"] == "needs_attention"
        notes = sorted(
            n.data["transition"] for n in (await client.list_jobs(queue=NOTIFY_QUEUE)).jobs
        )
        assert notes == ["escalated", "opened"]


async def test_a_success_resolves_a_warning_by_itself(
    database_url: str, schema: str, eventually: Eventually
) -> None:
    async with QueueClient(database_url, schema=schema) as client:
        tracker = FailureTracker(client)
        await tracker.ensure_queue()
        executor = ConnectorExecutor(client, [Flaky()], hooks=tracker, retry_limit=0)
        await TenantScheduler(client, executor).ensure_queues()
        add_tenant(database_url, schema, "acme")
        add_integration(database_url, schema, "acme-crm", "acme")
        worker = (await executor.start(concurrency=1, poll_interval=0.05))[0]
        await executor.send_sync(
            "flaky", "items", tenant="acme", integration="acme-crm", config={"mode": "boom"}
        )
        await eventually(lambda: worker.failed == 1)
        await worker.drain()
        assert (await tracker.incidents(status="open"))[0]["level"] == "warning"
        await executor.send_sync(
            "flaky", "items", tenant="acme", integration="acme-crm", config={"mode": "ok"}
        )
        await eventually(lambda: worker.completed == 1)
        await worker.drain()
        assert await tracker.incidents(status="open") == []
        row = integration_row(database_url, schema, "acme-crm")
        assert row["consecutive_failures"] == 0 and row["last_success_at"] is not None


async def test_many_tenants_failing_the_same_way_open_one_provider_incident(
    database_url: str, schema: str, eventually: Eventually
) -> None:
    async with QueueClient(database_url, schema=schema) as client:
        tracker = FailureTracker(client, policy=FailurePolicy(provider_threshold=3))
        await tracker.ensure_queue()
        executor = ConnectorExecutor(client, [Flaky()], hooks=tracker, retry_limit=0)
        await TenantScheduler(client, executor).ensure_queues()
        for t in range(5):
            add_tenant(database_url, schema, f"t{t}")
            add_integration(database_url, schema, f"t{t}-crm", f"t{t}", mode="auth")
        # One at a time, so which failure crosses the threshold is deterministic.
        worker = (await executor.start(concurrency=1, poll_interval=0.05))[0]
        for t in range(5):
            await executor.send_sync(
                "flaky", "items", tenant=f"t{t}", integration=f"t{t}-crm", config={"mode": "auth"}
            )
        await eventually(lambda: worker.failed == 5)
        await worker.drain()
        incidents = await tracker.incidents(status="open")
        providers = [i for i in incidents if i["scope"] == "provider"]
        children = [i for i in incidents if i["scope"] == "integration"]
        assert len(providers) == 1 and len(children) == 5
        assert sum(1 for c in children if c["parent_id"] == providers[0]["id"]) >= 3
        notes = [n.data for n in (await client.list_jobs(queue=NOTIFY_QUEUE, limit=100)).jobs]
        # The two tenants that failed before the provider incident existed, then one
        # provider alert instead of three more.
        assert sum(1 for n in notes if n["scope"] == "provider") == 1
        assert len(notes) == 3
        for t in range(5):
            await tracker.resume(f"t{t}-crm")
        assert await tracker.incidents(status="open") == []
        assert (
            await client.get_job(  # the notify jobs exist and are queued, not failed
                (await client.list_jobs(queue=NOTIFY_QUEUE, limit=1)).jobs[0].id
            )
        ).state in (JobState.QUEUED, JobState.COMPLETED)


async def test_tenant_limits_apply_to_its_syncs(database_url: str, schema: str) -> None:
    async with QueueClient(database_url, schema=schema) as client:
        executor = ConnectorExecutor(client, [Flaky()])
        scheduler = TenantScheduler(client, executor)
        await scheduler.ensure_queues()
        add_tenant(database_url, schema, "acme", max_concurrent=2, fairness_weight=3)
        for i in range(4):
            add_integration(database_url, schema, f"acme-{i}", "acme")
        assert (await scheduler.fan_out("acme")).sent == 4
        async with client.pool.connection() as conn:
            cur = await conn.execute(
                sql.SQL("select distinct group_key from {}.job where queue = 'flaky.items'").format(
                    sql.Identifier(schema)
                )
            )
            assert [r[0] for r in await cur.fetchall()] == ["acme"]
            cur = await conn.execute(
                sql.SQL(
                    "select max_active from {s}.job_group_limit where group_key = 'acme';"
                ).format(s=sql.Identifier(schema))
            )
            assert (await cur.fetchone()) == (2,)
            cur = await conn.execute(
                sql.SQL("select weight from {}.fairness_weight where fairness_key = 'acme'").format(
                    sql.Identifier(schema)
                )
            )
            assert (await cur.fetchone()) == (3,)
        # Two of the tenant's four syncs may run at once; the others wait for the group.
        async with client.pool.connection() as conn:
            cur = await conn.execute(
                client.sql["job_fetch_fair"],
                {"queue": "flaky.items", "limit": 10, "max_keys": 10, "after": None, "now": None},
            )
            assert len(await cur.fetchall()) == 2
        # A manual sync of an integration already waiting joins it (stately policy).
        again = await executor.send_sync(
            "flaky", "items", tenant="acme", integration="acme-3", config={"mode": "ok"}
        )
        waiting = [
            j.id
            for j in (await client.list_jobs(queue="flaky.items", state="queued")).jobs
            if j.data["integration"] == "acme-3"
        ]
        assert waiting == [again]


async def test_resuming_through_the_registry_resolves_the_incident_in_its_transaction(
    database_url: str, schema: str, eventually: Eventually
) -> None:
    from patchbay.runtime.registry import Registry

    async with QueueClient(database_url, schema=schema) as client:
        tracker = FailureTracker(client)
        await tracker.ensure_queue()
        executor = ConnectorExecutor(client, [Flaky()], hooks=tracker)
        await TenantScheduler(client, executor).ensure_queues()
        add_tenant(database_url, schema, "acme")
        add_integration(database_url, schema, "acme-crm", "acme", mode="auth")
        worker = (await executor.start(concurrency=1, poll_interval=0.05))[0]
        await executor.send_sync(
            "flaky", "items", tenant="acme", integration="acme-crm", config={"mode": "auth"}
        )
        await eventually(lambda: worker.failed == 1)
        await worker.drain()
        assert len(await tracker.incidents(status="open")) == 1
        async with Registry(
            database_url,
            schema=schema,
            connectors={"flaky": Flaky},
            on_resume=tracker.on_resume,
        ) as registry:
            info = await registry.resume("acme-crm", actor="support@example")
        assert info.status == "active"
        assert await tracker.incidents(status="open") == []
        [incident] = await tracker.incidents(status="resolved")
        assert incident["resolved_by"] == "support@example"
        notes = sorted(
            n.data["transition"] for n in (await client.list_jobs(queue=NOTIFY_QUEUE)).jobs
        )
        assert notes == ["opened", "resolved"]
