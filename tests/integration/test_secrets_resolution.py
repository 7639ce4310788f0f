"""Resolution of references: scoped to one tenant, cached briefly in memory, shared between
concurrent callers, and registered for redaction."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import psycopg
import pytest
from psycopg import sql

from patchbay.secrets import (
    REDACTED,
    CrossTenantReference,
    LocalKeyProvider,
    SecretNotFound,
    SecretRef,
    Vault,
    generate_master_key,
)

KEYS = LocalKeyProvider([generate_master_key("k1")])


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def vault(database_url: str, schema: str, clock: FakeClock) -> AsyncIterator[Vault]:
    async with Vault(database_url, schema=schema, keys=KEYS, cache_ttl=10, clock=clock) as v:
        await v.put("tenant-a", "crm/token", "a-token-value")
        await v.put("tenant-b", "crm/token", "b-token-value")
        yield v


@pytest.mark.smoke
async def test_a_tenant_can_never_resolve_another_tenants_reference(vault: Vault) -> None:
    a = vault.for_tenant("tenant-a")
    assert await a.resolve("secret://tenant-a/crm/token") == "a-token-value"
    for ref in ("secret://tenant-b/crm/token", "secret://tenant-b/crm/token@1"):
        with pytest.raises(CrossTenantReference, match="tenant-a") as info:
            await a.resolve(ref)
        assert "b-token-value" not in str(info.value)
        with pytest.raises(CrossTenantReference):
            await vault.resolve(ref, tenant="tenant-a")
    with pytest.raises(CrossTenantReference):
        await a.resolve(SecretRef("tenant-b", "crm/token"))
    with pytest.raises(CrossTenantReference):
        await a.resolve_refs({"auth": {"token": "secret://tenant-b/crm/token"}})
    # Refused before any lookup: the other tenant's row is never even read.
    reads: list[object] = []

    async def recording_get(*args: object, **kwargs: object) -> object:
        reads.append(args)
        raise AssertionError("a refused reference reached the database")

    vault.get = recording_get  # type: ignore[method-assign]
    vault.cache.clear()
    with pytest.raises(CrossTenantReference):
        await a.resolve("secret://tenant-b/crm/token")
    assert reads == []
    # Look-alike tenants are other tenants.
    with pytest.raises(CrossTenantReference):
        await vault.resolve("secret://tenant-a/crm/token", tenant="tenant-a2")


async def test_resolve_refs_replaces_every_reference_in_a_config(vault: Vault) -> None:
    await vault.put("tenant-a", "crm/client_id", "cid")
    config = {
        "base_url": "https://crm.example",
        "auth": {
            "token": "secret://tenant-a/crm/token",
            "client": "secret://tenant-a/crm/client_id",
        },
        "headers": ["secret://tenant-a/crm/token@1", 3, None],
        "pair": ("x", "secret://tenant-a/crm/token"),
    }
    resolved = await vault.for_tenant("tenant-a").resolve_refs(config)
    assert resolved == {
        "base_url": "https://crm.example",
        "auth": {"token": "a-token-value", "client": "cid"},
        "headers": ["a-token-value", 3, None],
        "pair": ("x", "a-token-value"),
    }
    assert config["auth"]["token"] == "secret://tenant-a/crm/token"  # input untouched


async def test_resolved_values_are_registered_for_redaction(database_url: str, schema: str) -> None:
    async with Vault(database_url, schema=schema, keys=KEYS) as writer:
        await writer.put("tenant-a", "t", "fresh-process-secret")
    async with Vault(database_url, schema=schema, keys=KEYS) as reader:
        assert reader.redactor("fresh-process-secret") == "fresh-process-secret"  # unknown yet
        await reader.resolve("secret://tenant-a/t", tenant="tenant-a")
        assert reader.redactor("x fresh-process-secret y") == f"x {REDACTED} y"


async def test_cache_serves_within_ttl_then_rereads(
    vault: Vault, database_url: str, schema: str, clock: FakeClock
) -> None:
    a = vault.for_tenant("tenant-a")
    assert await a.resolve("secret://tenant-a/crm/token") == "a-token-value"
    # Changed behind the vault's back (another process): the cache still serves...
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("delete from {}.secret where tenant = 'tenant-a'").format(
                sql.Identifier(schema)
            )
        )
    clock.now += 9.9
    assert await a.resolve("secret://tenant-a/crm/token") == "a-token-value"
    # ...until the TTL passes.
    clock.now += 0.1
    with pytest.raises(SecretNotFound):
        await a.resolve("secret://tenant-a/crm/token")
    assert vault.cache.hits == 1


async def test_a_put_in_this_process_is_seen_at_once(vault: Vault) -> None:
    a = vault.for_tenant("tenant-a")
    assert await a.resolve("secret://tenant-a/crm/token") == "a-token-value"
    await vault.put("tenant-a", "crm/token", "rotated-token")
    assert await a.resolve("secret://tenant-a/crm/token") == "rotated-token"
    assert await a.resolve("secret://tenant-a/crm/token@1") == "a-token-value"
    await vault.delete("tenant-a", "crm/token")
    with pytest.raises(SecretNotFound):
        await a.resolve("secret://tenant-a/crm/token")


async def test_concurrent_resolutions_share_one_read(vault: Vault) -> None:
    reads = 0
    original = vault.get

    async def counting_get(*args: object, **kwargs: object) -> object:
        nonlocal reads
        reads += 1
        return await original(*args, **kwargs)  # type: ignore[arg-type]

    vault.get = counting_get  # type: ignore[method-assign]
    values = await asyncio.gather(
        *(vault.resolve("secret://tenant-a/crm/token", tenant="tenant-a") for _ in range(50))
    )
    assert set(values) == {"a-token-value"} and reads == 1
    # One waiter cancelled does not cancel the read the others share.
    vault.cache.clear()
    first = asyncio.ensure_future(vault.resolve("secret://tenant-b/crm/token", tenant="tenant-b"))
    second = asyncio.ensure_future(vault.resolve("secret://tenant-b/crm/token", tenant="tenant-b"))
    await asyncio.sleep(0)
    first.cancel()
    assert await second == "b-token-value"
    assert reads == 2


async def test_cache_disabled_reads_every_time(database_url: str, schema: str) -> None:
    async with Vault(database_url, schema=schema, keys=KEYS, cache_ttl=0) as vault:
        await vault.put("tenant-a", "t", "v")
        for _ in range(3):
            assert await vault.resolve("secret://tenant-a/t", tenant="tenant-a") == "v"
        assert len(vault.cache) == 0
