"""Registry: tenants (add, get, list, disable), their limits and sync schedule; bad input
gets a typed error and writes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from psycopg import sql

from patchbay.queue import FrozenClock, InvalidInput
from patchbay.runtime import (
    InvalidCron,
    InvalidId,
    InvalidLimits,
    Registry,
    RegistryError,
    TenantExists,
    TenantNotFound,
)


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
    async with Registry(database_url, schema=schema, connectors={}) as r:
        yield r


@pytest.mark.smoke
async def test_add_get_list_disable(registry: Registry) -> None:
    acme = await registry.add_tenant(
        "acme",
        name="Acme Corp",
        max_concurrent=4,
        starts_per_interval=100,
        start_interval_s=30,
        fairness_weight=3,
        sync_schedule="*/10  * * * *",
    )
    assert acme.id == "acme" and acme.name == "Acme Corp" and acme.status == "active"
    assert (acme.max_concurrent, acme.starts_per_interval) == (4, 100)
    assert (acme.start_interval_s, acme.fairness_weight) == (30.0, 3)
    assert acme.sync_schedule == "*/10 * * * *"
    globex = await registry.add_tenant("globex")
    assert globex.name == "globex"
    assert (globex.max_concurrent, globex.starts_per_interval) == (None, None)
    assert (globex.start_interval_s, globex.fairness_weight, globex.sync_schedule) == (
        60.0,
        1,
        None,
    )

    assert await registry.get_tenant("acme") == acme
    assert [t.id for t in await registry.list_tenants()] == ["acme", "globex"]

    disabled = await registry.disable_tenant("globex")
    assert disabled.status == "disabled"
    assert disabled.updated_at >= globex.updated_at
    again = await registry.disable_tenant("globex")
    assert again == disabled
    assert [t.id for t in await registry.list_tenants(status="active")] == ["acme"]
    assert [t.id for t in await registry.list_tenants(status="disabled")] == ["globex"]
    assert acme.to_json()["sync_schedule"] == "*/10 * * * *"
    assert isinstance(acme.to_json()["created_at"], str)


async def test_timestamps_come_from_the_clock(database_url: str, schema: str) -> None:
    moment = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    clock = FrozenClock(moment)
    async with Registry(database_url, schema=schema, connectors={}, clock=clock) as registry:
        tenant = await registry.add_tenant("acme")
        assert tenant.created_at == moment and tenant.updated_at == moment
        clock.advance(60)
        disabled = await registry.disable_tenant("acme")
        assert disabled.created_at == moment
        assert (disabled.updated_at - moment).total_seconds() == 60


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"max_concurrent": 0}, InvalidLimits, "max_concurrent"),
        ({"max_concurrent": 1.5}, InvalidLimits, "max_concurrent"),
        ({"starts_per_interval": -1}, InvalidLimits, "starts_per_interval"),
        ({"starts_per_interval": True}, InvalidLimits, "starts_per_interval"),
        ({"start_interval_s": 0}, InvalidLimits, "start_interval_s"),
        ({"start_interval_s": float("nan")}, InvalidLimits, "start_interval_s"),
        ({"fairness_weight": 0}, InvalidLimits, "fairness_weight"),
        ({"fairness_weight": 1001}, InvalidLimits, "fairness_weight"),
        ({"sync_schedule": "* * *"}, InvalidCron, "3 field"),
        ({"sync_schedule": "61 * * * *"}, InvalidCron, "not a valid cron"),
        ({"sync_schedule": "H * * * *"}, InvalidCron, "hashed"),
        ({"sync_schedule": ""}, InvalidCron, "cron expression"),
        ({"sync_schedule": "@every-minute"}, InvalidCron, "field"),
        ({"name": ""}, InvalidInput, "name"),
    ],
)
async def test_bad_tenant_input_is_refused_and_writes_nothing(
    registry: Registry,
    database_url: str,
    schema: str,
    options: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    with pytest.raises(error, match=message) as info:
        await registry.add_tenant("acme", **options)
    assert isinstance(info.value, InvalidInput) and isinstance(info.value, ValueError)
    assert isinstance(info.value, RegistryError)
    assert count(database_url, schema, "tenant") == 0


async def test_cron_aliases_are_accepted(registry: Registry) -> None:
    tenant = await registry.add_tenant("acme", sync_schedule="@Hourly")
    assert tenant.sync_schedule == "@hourly"


@pytest.mark.parametrize("tenant_id", ["", "-acme", "a b", "x" * 101, "acme/eu", 7])
async def test_invalid_tenant_ids(
    registry: Registry, database_url: str, schema: str, tenant_id: Any
) -> None:
    with pytest.raises(InvalidId, match="tenant"):
        await registry.add_tenant(tenant_id)
    assert count(database_url, schema, "tenant") == 0


async def test_duplicate_tenant_is_refused(
    registry: Registry, database_url: str, schema: str
) -> None:
    first = await registry.add_tenant("acme", name="Acme")
    with pytest.raises(TenantExists, match="'acme' exists already"):
        await registry.add_tenant("acme", name="Other", fairness_weight=5)
    assert count(database_url, schema, "tenant") == 1
    assert await registry.get_tenant("acme") == first


async def test_unknown_tenant(registry: Registry) -> None:
    with pytest.raises(TenantNotFound, match="nobody") as info:
        await registry.get_tenant("nobody")
    assert isinstance(info.value, LookupError)
    with pytest.raises(TenantNotFound):
        await registry.disable_tenant("nobody")
    with pytest.raises(InvalidInput, match="status"):
        await registry.list_tenants(status="paused")
