"""Master-key rotation re-wraps data keys only, is resumable, reports progress, and is
safe to run twice at once."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from psycopg import sql

from patchbay.secrets import (
    LocalKeyProvider,
    RotationProgress,
    UnknownMasterKey,
    Vault,
    generate_master_key,
)

OLD = generate_master_key("k-old")
NEW = generate_master_key("k-new")
TENANTS = [f"tenant-{i:02d}" for i in range(7)]


def rows(url: str, schema: str, query: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        conn.execute(sql.SQL("set search_path to {}").format(sql.Identifier(schema)))
        return [tuple(r) for r in conn.execute(query.encode())]


async def _seed(url: str, schema: str) -> None:
    async with Vault(url, schema=schema, keys=LocalKeyProvider([OLD])) as vault:
        for tenant in TENANTS:
            await vault.put(tenant, "api/token", f"value-of-{tenant}")
            await vault.put(tenant, "api/token", f"value2-of-{tenant}")


class Interrupted(Exception):
    pass


async def test_rotation_rewraps_data_keys_only_and_resumes(database_url: str, schema: str) -> None:
    await _seed(database_url, schema)
    values_before = rows(
        database_url, schema, "select tenant, name, version, ciphertext from secret_version"
    )
    keys_before = dict(rows(database_url, schema, "select tenant, wrapped_key from data_key"))
    seen: list[RotationProgress] = []

    def crash_after_first_batch(progress: RotationProgress) -> None:
        seen.append(progress)
        raise Interrupted  # as if the process died right after the first commit

    both = LocalKeyProvider([NEW, OLD])
    async with Vault(database_url, schema=schema, keys=both) as vault:
        with pytest.raises(Interrupted):
            await vault.rotate_master_key(batch_size=3, progress=crash_after_first_batch)
        assert seen == [RotationProgress("k-new", 3, 7, 0)]
        assert await vault.key_usage() == {"k-new": 3, "k-old": 4}

        resumed: list[RotationProgress] = []
        report = await vault.rotate_master_key(batch_size=3, progress=resumed.append)
        assert [(p.done, p.total) for p in resumed] == [(3, 4), (4, 4)]
        assert (report.rewrapped, report.remaining, report.complete) == (4, 0, True)
        assert report.usage == {"k-new": 7}
        again = await vault.rotate_master_key()
        assert (again.rewrapped, again.complete) == (0, True)

    # Values were not re-encrypted: every ciphertext is byte for byte the same.
    values_after = rows(
        database_url, schema, "select tenant, name, version, ciphertext from secret_version"
    )
    assert sorted(values_after) == sorted(values_before)
    # Every data key was re-wrapped: new bytes, new key id, a rewrapped_at stamp.
    keys_after = rows(
        database_url,
        schema,
        "select tenant, wrapped_key, master_key_id, rewrapped_at from data_key",
    )
    assert len(keys_after) == len(TENANTS)
    for tenant, wrapped, key_id, rewrapped_at in keys_after:
        assert wrapped != keys_before[tenant]
        assert key_id == "k-new" and rewrapped_at is not None

    # The old key can go: the new one alone decrypts everything; the old one alone cannot.
    async with Vault(database_url, schema=schema, keys=LocalKeyProvider([NEW])) as vault:
        for tenant in TENANTS:
            assert (await vault.get(tenant, "api/token", 1)).value == f"value-of-{tenant}"
        await vault.put("newcomer", "t", "v")
        assert await vault.key_usage() == {"k-new": 8}
    async with Vault(database_url, schema=schema, keys=LocalKeyProvider([OLD])) as vault:
        with pytest.raises(UnknownMasterKey):
            await vault.get(TENANTS[0], "api/token")


async def test_two_rotations_at_once_share_the_work(database_url: str, schema: str) -> None:
    await _seed(database_url, schema)
    both = LocalKeyProvider([NEW, OLD])
    async with (
        Vault(database_url, schema=schema, keys=both) as a,
        Vault(database_url, schema=schema, keys=both) as b,
    ):
        reports = await asyncio.gather(
            a.rotate_master_key(batch_size=1), b.rotate_master_key(batch_size=1)
        )
        assert sum(r.rewrapped for r in reports) == len(TENANTS)
        assert await a.key_usage() == {"k-new": len(TENANTS)}
        for tenant in TENANTS:
            assert (await b.get(tenant, "api/token")).value == f"value2-of-{tenant}"


async def test_undecryptable_data_keys_are_reported_and_left_alone(
    database_url: str, schema: str
) -> None:
    await _seed(database_url, schema)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("update {}.data_key set master_key_id = 'lost' where tenant = %s").format(
                sql.Identifier(schema)
            ),
            (TENANTS[2],),
        )
    async with Vault(database_url, schema=schema, keys=LocalKeyProvider([NEW, OLD])) as vault:
        report = await vault.rotate_master_key(batch_size=2)
        assert report.rewrapped == len(TENANTS) - 1
        assert not report.complete and report.remaining == 1
        assert [t for t, _ in report.failed] == [TENANTS[2]]
        assert "'lost'" in report.failed[0][1]
        assert report.usage == {"k-new": len(TENANTS) - 1, "lost": 1}
        assert report.to_json()["complete"] is False
