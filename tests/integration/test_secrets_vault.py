"""The vault against a real Postgres: versions, retention, listing, deleting, bad input
that writes nothing, concurrency, and the SQL itself."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import psycopg
import pytest
from psycopg import pq, sql

from patchbay.queue import migrate_sync
from patchbay.secrets import (
    MAX_VALUE_BYTES,
    InvalidName,
    InvalidOption,
    InvalidValue,
    LocalKeyProvider,
    NoMasterKey,
    SchemaNotMigrated,
    SecretNotFound,
    Vault,
    generate_master_key,
)
from patchbay.secrets._sql import Statements

TABLES = ("data_key", "master_key", "secret", "secret_version")


@pytest.fixture
def keys() -> LocalKeyProvider:
    return LocalKeyProvider([generate_master_key("k1")])


@pytest.fixture
async def vault(database_url: str, schema: str, keys: LocalKeyProvider) -> AsyncIterator[Vault]:
    async with Vault(database_url, schema=schema, keys=keys) as v:
        yield v


def dump(url: str, schema: str) -> dict[str, list[str]]:
    """Every row of the vault's tables, as text: to prove a failed call wrote nothing."""
    with psycopg.connect(url) as conn:
        return {
            table: sorted(
                str(r[0])
                for r in conn.execute(
                    sql.SQL("select t::text from {}.{} t").format(
                        sql.Identifier(schema), sql.Identifier(table)
                    )
                )
            )
            for table in TABLES
        }


@pytest.mark.smoke
async def test_put_creates_versions_and_get_decrypts_them(
    vault: Vault, database_url: str, schema: str
) -> None:
    first = await vault.put("acme", "hubspot/token", "tok-one")
    second = await vault.put("acme", "hubspot/token", "tok-two")
    assert (first.version, second.version) == (1, 2)
    assert str(second.ref) == "secret://acme/hubspot/token@2"
    latest = await vault.get("acme", "hubspot/token")
    assert (latest.version, latest.value) == (2, "tok-two")
    assert (await vault.get("acme", "hubspot/token", 1)).value == "tok-one"
    # Stored encrypted: no table holds the value in any readable form.
    rows = "\n".join("\n".join(v) for v in dump(database_url, schema).values())
    assert "tok-one" not in rows and "tok-two" not in rows
    assert b"tok-one".hex() not in rows


async def test_unicode_and_large_values_round_trip(vault: Vault) -> None:
    value = "pässwörd ✓ " + "x" * (MAX_VALUE_BYTES - 20)
    await vault.put("acme", "big", value)
    assert (await vault.get("acme", "big")).value == value


async def test_retention_keeps_the_newest_versions(database_url: str, schema: str) -> None:
    keys = LocalKeyProvider([generate_master_key("k1")])
    async with Vault(database_url, schema=schema, keys=keys, max_versions=3) as vault:
        pruned = [(await vault.put("acme", "t", f"v{i}")).pruned for i in range(1, 6)]
        assert pruned == [0, 0, 0, 1, 1]
        [info] = await vault.list_secrets("acme")
        assert info.versions == (3, 4, 5)
        with pytest.raises(SecretNotFound):
            await vault.get("acme", "t", 2)
        assert (await vault.get("acme", "t", 3)).value == "v3"


async def test_list_shows_metadata_never_values(vault: Vault) -> None:
    await vault.put("acme", "b/token", "value-b")
    await vault.put("acme", "a/token", "value-a")
    await vault.put("acme", "a/token", "value-a2")
    await vault.put("globex", "a/token", "value-g")
    everything = await vault.list_secrets()
    assert [(i.tenant, i.name, i.versions) for i in everything] == [
        ("acme", "a/token", (1, 2)),
        ("acme", "b/token", (1,)),
        ("globex", "a/token", (1,)),
    ]
    assert [i.name for i in await vault.list_secrets("acme", prefix="b/")] == ["b/token"]
    assert await vault.list_secrets("nobody") == []
    text = repr(everything) + repr([i.to_json() for i in everything])
    assert "value-" not in text
    assert everything[0].latest_version == 2
    assert everything[0].to_json()["ref"] == "secret://acme/a/token"


async def test_delete_a_version_or_the_whole_secret(vault: Vault) -> None:
    for value in ("v1", "v2", "v3"):
        await vault.put("acme", "t", value)
    await vault.delete("acme", "t", 3)
    assert (await vault.get("acme", "t")).value == "v2"  # latest is now 2
    with pytest.raises(SecretNotFound):
        await vault.delete("acme", "t", 3)
    await vault.delete("acme", "t")
    with pytest.raises(SecretNotFound):
        await vault.get("acme", "t")
    with pytest.raises(SecretNotFound):
        await vault.delete("acme", "t")
    # Removing the last version removes the secret.
    await vault.put("acme", "solo", "x")
    await vault.delete("acme", "solo", 1)
    assert await vault.list_secrets("acme") == []


async def test_missing_secret_and_version_are_typed(vault: Vault) -> None:
    with pytest.raises(SecretNotFound, match="patchbay secrets put acme nope"):
        await vault.get("acme", "nope")
    await vault.put("acme", "t", "v")
    with pytest.raises(SecretNotFound, match="version 7"):
        await vault.get("acme", "t", 7)


@pytest.mark.parametrize(
    ("tenant", "name", "value", "error"),
    [
        ("acme", "t", "", InvalidValue),
        ("acme", "t", b"bytes", InvalidValue),
        ("acme", "t", "x" * (MAX_VALUE_BYTES + 1), InvalidValue),
        ("acme", "t", "lone \ud800 surrogate", InvalidValue),
        ("ac me", "t", "v", InvalidName),
        ("acme", "bad name", "v", InvalidName),
        ("acme", "a//b", "v", InvalidName),
    ],
)
async def test_bad_input_raises_and_writes_nothing(
    vault: Vault, database_url: str, schema: str, tenant: str, name: str, value: object,
    error: type[Exception],
) -> None:  # fmt: skip
    await vault.put("acme", "t", "existing")
    before = dump(database_url, schema)
    with pytest.raises(error):
        await vault.put(tenant, name, value)  # type: ignore[arg-type]
    assert dump(database_url, schema) == before


async def test_without_master_key_put_fails_clearly_and_writes_nothing(
    database_url: str, schema: str
) -> None:
    before = dump(database_url, schema)
    async with Vault(database_url, schema=schema, keys=None) as vault:
        with pytest.raises(NoMasterKey, match="PATCHBAY_MASTER_KEYS"):
            await vault.put("acme", "t", "value")
        with pytest.raises(NoMasterKey):
            await vault.get("acme", "t")
        assert await vault.list_secrets() == []  # metadata still works
    assert dump(database_url, schema) == before


async def test_put_in_the_callers_transaction_rolls_back_with_it(
    vault: Vault, database_url: str, schema: str
) -> None:
    before = dump(database_url, schema)
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        await vault.put("acme", "t", "value", conn=conn)
        await conn.rollback()
    assert dump(database_url, schema) == before
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        await vault.put("acme", "t", "value", conn=conn)
        await conn.commit()
    assert (await vault.get("acme", "t")).value == "value"


async def test_concurrent_puts_get_distinct_versions(
    database_url: str, schema: str, keys: LocalKeyProvider
) -> None:
    async with (
        Vault(database_url, schema=schema, keys=keys, pool_max=4, max_versions=100) as a,
        Vault(database_url, schema=schema, keys=keys, pool_max=4, max_versions=100) as b,
    ):
        # Two vaults racing to create the new tenant's data key and to bump one counter.
        stored = await asyncio.gather(
            *((a if i % 2 else b).put("newco", "t", f"v{i}") for i in range(20))
        )
        assert sorted(s.version for s in stored) == list(range(1, 21))
        assert await a.key_usage() == {"k1": 1}
        for s in stored:
            assert (await a.get("newco", "t", s.version)).value == f"v{stored.index(s)}"


async def test_settings_are_validated(database_url: str) -> None:
    for bad in (
        {"cache_ttl": -1},
        {"cache_ttl": "30"},
        {"max_versions": 0},
        {"pool_max": 0},
        {"cache_max_entries": True},
    ):
        with pytest.raises(InvalidOption):
            Vault(database_url, **bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidOption):
        Vault()
    with pytest.raises(InvalidName):
        Vault(database_url, schema="Bad-Schema")


async def test_unmigrated_schema_is_reported(database_url: str, keys: LocalKeyProvider) -> None:
    async with Vault(database_url, schema="s_never_migrated_here", keys=keys) as vault:
        with pytest.raises(SchemaNotMigrated, match="patchbay migrate"):
            await vault.list_secrets()


def test_migration_is_idempotent_and_every_statement_prepares(
    database_url: str, schema: str
) -> None:
    assert migrate_sync(database_url, schema) == []
    statements = Statements(schema)
    with psycopg.connect(database_url) as conn:
        for index, name in enumerate(statements.names()):
            assert name.split("_")[0] in {"secret", "data", "master"}, name
            parts = re.split(r"%\(\w+\)s", statements[name].decode())
            query = parts[0] + "".join(f"${n}{part}" for n, part in enumerate(parts[1:], 1))
            result = conn.pgconn.prepare(f"secrets_check_{index}".encode(), query.encode())
            assert result.status == pq.ExecStatus.COMMAND_OK, (
                f"{name}: {(result.error_message or b'').decode()}"
            )
