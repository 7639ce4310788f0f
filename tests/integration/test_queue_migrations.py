"""Migrations: applied once each, recorded, idempotent, safe to run from many processes at
once; and every named statement is valid SQL against the migrated schema."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import pq, sql

from patchbay.queue import migrate, migrate_sync
from patchbay.queue._sql import Statements
from patchbay.queue.migrate import applied_migrations, available_migrations


@pytest.fixture
def fresh_schema(database_url: str) -> Iterator[str]:
    """A schema name nothing has created yet; dropped afterwards."""
    name = f"m_{uuid.uuid4().hex[:16]}"
    yield name
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(name)))


def snapshot(url: str, schema: str) -> dict[str, list[tuple[str, ...]]]:
    """Everything a migration could create or change in ``schema``."""
    queries = {
        "columns": "select table_name, column_name, data_type, column_default, is_nullable"
        " from information_schema.columns where table_schema = %s",
        "indexes": "select indexname, indexdef from pg_indexes where schemaname = %s",
        "constraints": "select conname, pg_get_constraintdef(c.oid) from pg_constraint c"
        " join pg_namespace n on n.oid = c.connamespace where n.nspname = %s",
        "functions": "select p.proname, pg_get_functiondef(p.oid) from pg_proc p"
        " join pg_namespace n on n.oid = p.pronamespace where n.nspname = %s",
        "types": "select t.typname from pg_type t join pg_namespace n"
        " on n.oid = t.typnamespace where n.nspname = %s",
    }
    with psycopg.connect(url) as conn:
        out = {
            key: sorted(tuple(str(v) for v in row) for row in conn.execute(query, (schema,)))
            for key, query in queries.items()
        }
        out["schema_migration"] = sorted(
            tuple(str(v) for v in row)
            for row in conn.execute(
                sql.SQL(
                    "select version, name, checksum, applied_at from {}.schema_migration"
                ).format(sql.Identifier(schema))
            )
        )
    return out


@pytest.mark.smoke
def test_migrate_applies_every_step_once_and_again_changes_nothing(
    database_url: str, fresh_schema: str
) -> None:
    available = available_migrations()
    assert available and [m.version for m in available] == sorted(m.version for m in available)
    applied = migrate_sync(database_url, fresh_schema)
    assert [m.version for m in applied] == [m.version for m in available]
    recorded = applied_migrations(database_url, fresh_schema)
    assert recorded == [(m.version, m.name, m.checksum) for m in available]
    before = snapshot(database_url, fresh_schema)
    assert before["columns"] and before["indexes"]
    assert migrate_sync(database_url, fresh_schema) == []
    assert snapshot(database_url, fresh_schema) == before


async def test_async_migrate_is_the_same(database_url: str, fresh_schema: str) -> None:
    first = await migrate(database_url, fresh_schema)
    assert len(first) == len(available_migrations())
    assert await migrate(database_url, fresh_schema) == []


def test_schemas_are_independent(database_url: str, fresh_schema: str, schema: str) -> None:
    migrate_sync(database_url, fresh_schema)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("insert into {}.queue (name) values ('only-here')").format(
                sql.Identifier(fresh_schema)
            )
        )
        row = conn.execute(
            sql.SQL("select count(*) from {}.queue").format(sql.Identifier(schema))
        ).fetchone()
    assert row == (0,)


_CONCURRENT = """
import json, sys
from patchbay.queue import migrate_sync
url, schema = sys.argv[1], sys.argv[2]
sys.stdin.readline()  # start together
print(json.dumps([m.version for m in migrate_sync(url, schema)]))
"""


def test_processes_migrating_at_once_all_succeed_and_apply_each_step_once(
    database_url: str, fresh_schema: str
) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CONCURRENT, database_url, fresh_schema],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [p.communicate(input="go\n", timeout=120) for p in procs]
    for proc, (_out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err
    applied = [json.loads(out) for out, _ in results]
    versions = [m.version for m in available_migrations()]
    # Exactly one process applied the steps; the others found them done.
    assert sorted(v for steps in applied for v in steps) == versions
    assert sum(1 for steps in applied if steps) == 1
    assert [v for v, _, _ in applied_migrations(database_url, fresh_schema)] == versions


def test_every_named_statement_is_valid_sql(database_url: str, schema: str) -> None:
    """Postgres parses and plans each statement (PREPARE) against the migrated schema."""
    statements = Statements(schema)
    with psycopg.connect(database_url, autocommit=True) as conn:
        for index, name in enumerate(statements.names()):
            if name.startswith("_"):
                continue  # fragments are checked as part of the statements using them
            # Each placeholder gets its own number: psycopg sends a type with each value,
            # so a parameter used in two differently typed places is fine in real calls.
            parts = re.split(r"%\(\w+\)s", statements[name].decode())
            query = parts[0] + "".join(f"${n}{part}" for n, part in enumerate(parts[1:], 1))
            result = conn.pgconn.prepare(f"check_{index}".encode(), query.encode())
            assert result.status == pq.ExecStatus.COMMAND_OK, (
                f"{name}: {(result.error_message or b'').decode()}"
            )
