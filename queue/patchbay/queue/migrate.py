"""Schema migrations: the ordered plain-SQL files of ``migrations/``.

Guarantee: every step is applied exactly once per schema, in order, each in its own
transaction, recorded in ``<schema>.schema_migration``. Any number of processes may migrate
at once: a session advisory lock keyed on the schema serialises them, and the ones that
wait find the work done. A failing step is rolled back whole and raises
:class:`~patchbay.queue.errors.MigrationError`; the steps before it stay applied.

Files run with ``search_path`` set to the schema, so they name tables unqualified.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from .errors import MigrationError
from .settings import validate_schema_name

__all__ = ["Migration", "applied_migrations", "available_migrations", "migrate", "migrate_sync"]

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    """One migration file."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """SHA-256 of the file's text, recorded when applied."""
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()


def migrations_dir() -> Path:
    """Where the migration files are: the checkout's folder (editable install), else the
    copy packed into the wheel."""
    checkout = Path(__file__).resolve().parents[3] / "migrations"
    if (checkout / "0001_queue_core.sql").is_file():
        return checkout
    packaged = Path(__file__).parent / "_migrations"
    if packaged.is_dir():
        return packaged
    raise MigrationError(f"no migrations folder found (looked in {packaged} and {checkout})")


def available_migrations(folder: Path | None = None) -> list[Migration]:
    """The migration files, ordered by version; raises on duplicate versions. Gaps are
    allowed so rooms can reserve numbers."""
    folder = folder or migrations_dir()
    found: list[Migration] = []
    for path in sorted(folder.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if not match:
            raise MigrationError(f"migration file name {path.name!r} is not NNNN_name.sql")
        found.append(Migration(int(match[1]), match[2], path.read_text("utf-8")))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration versions in {folder}: {versions}")
    return found


def _lock_key(schema: str) -> int:
    digest = hashlib.sha256(f"patchbay.migrate:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def migrate_sync(conninfo: str, schema: str = "patchbay") -> list[Migration]:
    """Apply the pending migrations to ``schema``; returns the ones this call applied."""
    validate_schema_name(schema)
    ident = sql.Identifier(schema)
    applied_now: list[Migration] = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("select pg_advisory_lock(%s)", (_lock_key(schema),))
        try:
            conn.execute(sql.SQL("create schema if not exists {}").format(ident))
            conn.execute(
                sql.SQL(
                    "create table if not exists {}.schema_migration ("
                    " version integer primary key, name text not null,"
                    " checksum text not null, applied_at timestamptz not null default now())"
                ).format(ident)
            )
            done = {
                row[0]
                for row in conn.execute(
                    sql.SQL("select version from {}.schema_migration").format(ident)
                )
            }
            for migration in available_migrations():
                if migration.version in done:
                    continue
                try:
                    with conn.transaction():
                        conn.execute(sql.SQL("set local search_path to {}, public").format(ident))
                        conn.execute(migration.sql.encode("utf-8"))
                        conn.execute(
                            sql.SQL(
                                "insert into {}.schema_migration (version, name, checksum)"
                                " values (%s, %s, %s)"
                            ).format(ident),
                            (migration.version, migration.name, migration.checksum),
                        )
                except psycopg.Error as exc:
                    raise MigrationError(
                        f"migration {migration.version:04d}_{migration.name} failed and was "
                        f"rolled back: {exc}"
                    ) from exc
                applied_now.append(migration)
        finally:
            if not conn.closed:
                conn.execute("select pg_advisory_unlock(%s)", (_lock_key(schema),))
    return applied_now


async def migrate(conninfo: str, schema: str = "patchbay") -> list[Migration]:
    """Async wrapper of :func:`migrate_sync` (runs it in a thread)."""
    import asyncio

    return await asyncio.to_thread(migrate_sync, conninfo, schema)


def applied_migrations(conninfo: str, schema: str = "patchbay") -> list[tuple[int, str, str]]:
    """``(version, name, checksum)`` of the steps applied to ``schema``, in order."""
    validate_schema_name(schema)
    with psycopg.connect(conninfo) as conn:
        exists = conn.execute("select to_regclass(%s)", (f"{schema}.schema_migration",)).fetchone()
        if not exists or exists[0] is None:
            return []
        rows = conn.execute(
            sql.SQL(
                "select version, name, checksum from {}.schema_migration order by version"
            ).format(sql.Identifier(schema))
        ).fetchall()
    return [(int(v), str(n), str(c)) for v, n, c in rows]
