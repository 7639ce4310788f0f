"""Every way stored data or configuration can be wrong gives a typed error, never a wrong
value, never a value in a message, and writes nothing: tampered ciphertext, ciphertext
copied to another row, a wrong or unknown master key, malformed references, missing
secrets."""

from __future__ import annotations

from collections.abc import AsyncIterator

import psycopg
import pytest
from psycopg import sql

from patchbay.secrets import (
    DecryptionFailed,
    InvalidReference,
    LocalKeyProvider,
    MasterKey,
    SecretNotFound,
    SecretsError,
    UnknownMasterKey,
    Vault,
    WrongMasterKey,
    generate_master_key,
)

TABLES = ("data_key", "master_key", "secret", "secret_version")
VALUE = "sk_live_7Hq2mVx9"
K1 = generate_master_key("k1")


def dump(url: str, schema: str) -> dict[str, list[str]]:
    with psycopg.connect(url) as conn:
        return {
            t: sorted(
                str(r[0])
                for r in conn.execute(
                    sql.SQL("select x::text from {}.{} x").format(
                        sql.Identifier(schema), sql.Identifier(t)
                    )
                )
            )
            for t in TABLES
        }


def run(url: str, schema: str, statement: str, *params: object) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"set search_path to {schema}")
        conn.execute(statement.encode(), params)


@pytest.fixture
async def vault(database_url: str, schema: str) -> AsyncIterator[Vault]:
    async with Vault(database_url, schema=schema, keys=LocalKeyProvider([K1]), cache_ttl=0) as v:
        await v.put("acme", "token", VALUE)
        await v.put("globex", "token", "globex-value")
        yield v


async def expect(
    error: type[SecretsError], call: object, url: str, schema: str, match: str | None = None
) -> SecretsError:
    """Await ``call``, expecting ``error``; check it leaks no value and wrote nothing."""
    before = dump(url, schema)
    with pytest.raises(error, match=match) as info:
        await call  # type: ignore[misc]
    assert VALUE not in str(info.value) and VALUE not in repr(info.value)
    assert dump(url, schema) == before
    return info.value


@pytest.mark.parametrize("offset", [1, 5, 13, 20, -1])
async def test_tampered_ciphertext_fails_authentication(
    vault: Vault, database_url: str, schema: str, offset: int
) -> None:
    run(
        database_url,
        schema,
        "update secret_version set ciphertext = set_byte(ciphertext, %s,"
        " get_byte(ciphertext, %s) # 1) where tenant = 'acme'",
        offset if offset >= 0 else len(VALUE) + 28,
        offset if offset >= 0 else len(VALUE) + 28,
    )
    await expect(DecryptionFailed, vault.get("acme", "token"), database_url, schema, "altered")


async def test_truncated_ciphertext_fails(vault: Vault, database_url: str, schema: str) -> None:
    run(database_url, schema, "update secret_version set ciphertext = '\\x01'::bytea")
    await expect(DecryptionFailed, vault.get("acme", "token"), database_url, schema)


async def test_ciphertext_copied_to_another_row_does_not_decrypt(
    vault: Vault, database_url: str, schema: str
) -> None:
    await vault.put("acme", "other", "decoy")
    await vault.put("acme", "token", "second")
    # Same tenant, another name; same name, another version; another tenant.
    run(
        database_url,
        schema,
        "update secret_version set ciphertext = (select ciphertext from secret_version"
        " where tenant = 'acme' and name = 'token' and version = 1)"
        " where (tenant, name) in (('acme', 'other'), ('globex', 'token'))"
        " or (tenant, name, version) = ('acme', 'token', 2)",
    )
    for call in (
        vault.get("acme", "other"),
        vault.get("acme", "token", 2),
        vault.get("globex", "token"),
    ):
        await expect(DecryptionFailed, call, database_url, schema)
    assert (await vault.get("acme", "token", 1)).value == VALUE  # the original still works


async def test_data_key_moved_to_another_tenant_does_not_unwrap(
    vault: Vault, database_url: str, schema: str
) -> None:
    run(
        database_url,
        schema,
        "update data_key set wrapped_key = (select wrapped_key from data_key"
        " where tenant = 'acme') where tenant = 'globex'",
    )
    await expect(DecryptionFailed, vault.get("globex", "token"), database_url, schema)


async def test_tampered_wrapped_key_is_told_apart_from_a_wrong_key(
    vault: Vault, database_url: str, schema: str
) -> None:
    run(
        database_url,
        schema,
        "update data_key set wrapped_key = set_byte(wrapped_key, 20,"
        " get_byte(wrapped_key, 20) # 255) where tenant = 'acme'",
    )
    await expect(
        DecryptionFailed, vault.get("acme", "token"), database_url, schema, "data key was altered"
    )


async def test_wrong_master_key_material_is_refused_for_reads_and_writes(
    vault: Vault, database_url: str, schema: str
) -> None:
    impostor = LocalKeyProvider([MasterKey("k1", generate_master_key().material)])
    async with Vault(database_url, schema=schema, keys=impostor, cache_ttl=0) as wrong:
        await expect(WrongMasterKey, wrong.get("acme", "token"), database_url, schema, "'k1'")
        await expect(WrongMasterKey, wrong.put("acme", "token", "new"), database_url, schema)
        # A new tenant: nothing to unwrap, but the id's recorded fingerprint differs.
        await expect(WrongMasterKey, wrong.put("initech", "t", "new"), database_url, schema)
        await expect(WrongMasterKey, wrong.check_master_keys(), database_url, schema)
        await expect(WrongMasterKey, wrong.rotate_master_key(), database_url, schema)


async def test_unknown_master_key_id(vault: Vault, database_url: str, schema: str) -> None:
    only_new = LocalKeyProvider([generate_master_key("k2")])
    async with Vault(database_url, schema=schema, keys=only_new, cache_ttl=0) as other:
        error = await expect(UnknownMasterKey, other.get("acme", "token"), database_url, schema)
        assert "'k1'" in str(error) and "k2" in str(error)
        await expect(UnknownMasterKey, other.put("acme", "token", "x"), database_url, schema)
    run(database_url, schema, "update data_key set master_key_id = 'ghost' where tenant = 'acme'")
    await expect(UnknownMasterKey, vault.get("acme", "token"), database_url, schema, "ghost")


@pytest.mark.parametrize(
    "ref", ["secret://acme", "secret://acme/tok en", "acme/token", "secret://acme/token@0", ""]
)
async def test_malformed_reference(vault: Vault, database_url: str, schema: str, ref: str) -> None:
    await expect(
        InvalidReference, vault.resolve(ref, tenant="acme"), database_url, schema, "secret://"
    )


async def test_missing_secret_and_version(vault: Vault, database_url: str, schema: str) -> None:
    await expect(
        SecretNotFound, vault.resolve("secret://acme/nope", tenant="acme"), database_url, schema
    )
    await expect(
        SecretNotFound, vault.resolve("secret://acme/token@9", tenant="acme"), database_url, schema
    )
    await expect(
        SecretNotFound,
        vault.resolve("secret://nobody/token", tenant="nobody"),
        database_url,
        schema,
    )
