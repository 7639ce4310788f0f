"""Crypto-shredding: deleting a tenant's data key makes its secrets unrecoverable, even
from a copy of every ciphertext taken before (a backup), with every master key at hand."""

from __future__ import annotations

import asyncio
import itertools
import time

import psycopg
import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from psycopg import sql

from patchbay.secrets import (
    DecryptionFailed,
    KeyUnwrapFailed,
    LocalKeyProvider,
    SecretNotFound,
    Vault,
    generate_master_key,
)
from patchbay.secrets.crypto import data_key_context, decrypt_value

MASTER = generate_master_key("k1")


def fetch(url: str, schema: str, query: str, *params: object) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        conn.execute(sql.SQL("set search_path to {}").format(sql.Identifier(schema)))
        return [tuple(r) for r in conn.execute(query.encode(), params)]


async def _until_a_backend_waits_for_a_lock(url: str) -> None:
    # A connection of its own, in autocommit: pg_stat_activity is snapshotted per
    # transaction.
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as watcher:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            cur = await watcher.execute(
                "select count(*) from pg_stat_activity where wait_event_type = 'Lock'"
                " and query like '%%data_key%%'"
            )
            row = await cur.fetchone()
            if row and row[0]:
                return
            await asyncio.sleep(0.01)
    raise AssertionError("the shred never waited for the open put")


async def test_shredding_a_tenant_makes_its_secrets_unrecoverable(
    database_url: str, schema: str
) -> None:
    keys = LocalKeyProvider([MASTER])
    async with Vault(database_url, schema=schema, keys=keys) as vault:
        for name in ("crm/token", "billing/key"):
            await vault.put("doomed", name, f"doomed-{name}")
        await vault.put("survivor", "crm/token", "survivor-value")
        acme = vault.for_tenant("doomed")
        assert await acme.resolve("secret://doomed/crm/token") == "doomed-crm/token"  # cached

        # The "backup": every byte stored for the doomed tenant, taken before shredding.
        backup = fetch(
            database_url,
            schema,
            "select name, version, ciphertext from secret_version where tenant = 'doomed'",
        )
        [(doomed_wrapped,)] = fetch(
            database_url, schema, "select wrapped_key from data_key where tenant = 'doomed'"
        )
        assert len(backup) == 2

        report = await vault.shred_tenant("doomed")
        assert (report.data_keys, report.secrets, report.versions) == (1, 2, 2)

        # 1. Nothing of the tenant is left, and the cache forgot it at once.
        for table in ("data_key", "secret", "secret_version"):
            assert (
                fetch(database_url, schema, f"select 1 from {table} where tenant = 'doomed'") == []
            )
        with pytest.raises(SecretNotFound):
            await acme.resolve("secret://doomed/crm/token")

        # 2. No data key left in the database opens the backed-up ciphertexts, with every
        #    master key we hold: the only key that could is gone.
        remaining = fetch(
            database_url, schema, "select tenant, master_key_id, wrapped_key from data_key"
        )
        assert [r[0] for r in remaining] == ["survivor"]
        for (tenant, key_id, wrapped), (name, version, ciphertext) in itertools.product(
            remaining, backup
        ):
            data_key = await keys.unwrap(str(key_id), bytes(wrapped), data_key_context(str(tenant)))
            with pytest.raises(DecryptionFailed):
                decrypt_value(data_key, "doomed", str(name), int(version), bytes(ciphertext))  # type: ignore[call-overload]

        # 3. Restoring the ciphertexts under a fresh data key for the same tenant (what a
        #    new put creates) does not bring the values back either.
        await vault.put("doomed", "crm/token", "new-life")
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("set search_path to {}").format(sql.Identifier(schema)))
            conn.execute(
                b"insert into secret (tenant, name, last_version)"
                b" values ('doomed', 'billing/key', 1)"
            )
            for name, version, ciphertext in backup:
                conn.execute(
                    b"insert into secret_version (tenant, name, version, ciphertext)"
                    b" values ('doomed', %s, %s, %s) on conflict (tenant, name, version)"
                    b" do update set ciphertext = excluded.ciphertext",
                    (name, version, ciphertext),
                )
        for name in ("crm/token", "billing/key"):
            with pytest.raises(DecryptionFailed):
                await vault.get("doomed", name, 1)

        # 4. The old wrapped data key, were it kept somewhere, only unwraps for its own
        #    tenant; it is not in the database, so an attacker with the database and every
        #    master key still lacks it. (With it, the backup would open: that is the point
        #    of deleting it.)
        with pytest.raises(KeyUnwrapFailed):
            await keys.unwrap("k1", bytes(doomed_wrapped), data_key_context("survivor"))
        raw = await keys.unwrap("k1", bytes(doomed_wrapped), data_key_context("doomed"))
        assert AESGCM(raw)  # the backup's key was real: shredding, not corruption, locks it

        # Other tenants are untouched; shredding again is a no-op.
        assert (await vault.get("survivor", "crm/token")).value == "survivor-value"
        again = await vault.shred_tenant("doomed-nonexistent")
        assert (again.data_keys, again.secrets, again.versions) == (0, 0, 0)


async def test_shred_waits_for_a_concurrent_put_and_wins(database_url: str, schema: str) -> None:
    keys = LocalKeyProvider([MASTER])
    async with Vault(database_url, schema=schema, keys=keys) as vault:
        await vault.put("t1", "a", "v")
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            await vault.put("t1", "b", "v2", conn=conn)  # holds KEY SHARE on the data key
            task = asyncio.ensure_future(vault.shred_tenant("t1"))
            await _until_a_backend_waits_for_a_lock(database_url)
            assert not task.done()  # blocked by the open put
            await conn.commit()
        report = await task
        assert (report.secrets, report.versions) == (2, 2)
        assert await vault.list_secrets("t1") == []


def test_invalid_tag_is_what_a_foreign_key_gives() -> None:
    with pytest.raises(InvalidTag):
        AESGCM(AESGCM.generate_key(256)).decrypt(b"\0" * 12, b"\0" * 32, None)
