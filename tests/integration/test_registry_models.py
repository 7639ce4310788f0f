"""The SQLAlchemy models agree with the schema the SQL migrations build.

Two checks: the models' metadata against ``inspect()`` of a freshly migrated schema, and
the migrated schema against a schema built from the models by ``create_all`` (both read
back from Postgres, so defaults, check constraints and partial-index predicates are
compared in Postgres's own normalized spelling).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, create_engine, inspect, text
from sqlalchemy.dialects import postgresql

from patchbay.runtime.models import Base, sqlalchemy_url

TABLES = ("tenant", "integration", "integration_event", "incident")


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_engine(sqlalchemy_url(database_url))
    yield engine
    engine.dispose()


@pytest.fixture
def model_schema(engine: Engine) -> Iterator[str]:
    """A schema built from the models alone."""
    name = f"m_{uuid.uuid4().hex[:16]}"
    with engine.begin() as conn:
        conn.execute(text(f'create schema "{name}"'))
        Base.metadata.create_all(conn.execution_options(schema_translate_map={None: name}))
    yield name
    with engine.begin() as conn:
        conn.execute(text(f'drop schema "{name}" cascade'))


def _describe(conn: Connection, schema: str, table: str) -> dict[str, Any]:
    insp = inspect(conn)
    columns = {
        c["name"]: {
            "type": str(c["type"].compile(dialect=postgresql.dialect())),
            "nullable": c["nullable"],
            "default": c["default"],
            "identity": None if c.get("identity") is None else bool(c["identity"].get("always")),  # type: ignore[union-attr]
        }
        for c in insp.get_columns(table, schema=schema)
    }
    indexes = {
        i["name"]: {
            "columns": list(i["column_names"]),
            "unique": bool(i["unique"]),
            "where": (i.get("dialect_options") or {}).get("postgresql_where"),
        }
        for i in insp.get_indexes(table, schema=schema)
    }
    return {
        "columns": columns,
        "column_order": [c["name"] for c in insp.get_columns(table, schema=schema)],
        "primary_key": insp.get_pk_constraint(table, schema=schema)["constrained_columns"],
        "foreign_keys": sorted(
            (tuple(f["constrained_columns"]), f["referred_table"], tuple(f["referred_columns"]))
            for f in insp.get_foreign_keys(table, schema=schema)
        ),
        "indexes": indexes,
        "checks": sorted(
            (c["name"], c["sqltext"]) for c in insp.get_check_constraints(table, schema=schema)
        ),
    }


@pytest.mark.smoke
def test_models_match_the_migrated_schema(engine: Engine, schema: str) -> None:
    dialect = postgresql.dialect()
    with engine.connect() as conn:
        insp = inspect(conn)
        present = set(insp.get_table_names(schema=schema))
        assert set(TABLES) <= present
        assert set(Base.metadata.tables) == set(TABLES)
        for name in TABLES:
            table = Base.metadata.tables[name]
            db_columns = {c["name"]: c for c in insp.get_columns(name, schema=schema)}
            assert [c.name for c in table.columns] == list(db_columns), name
            for column in table.columns:
                found = db_columns[column.name]
                where = f"{name}.{column.name}"
                assert str(column.type.compile(dialect=dialect)) == str(
                    found["type"].compile(dialect=dialect)
                ), where
                assert column.nullable == found["nullable"], where
                assert (column.server_default is not None or column.identity is not None) == (
                    found["default"] is not None or found.get("identity") is not None
                ), where
            pk = insp.get_pk_constraint(name, schema=schema)["constrained_columns"]
            assert [c.name for c in table.primary_key.columns] == pk, name
            db_indexes = {i["name"]: i for i in insp.get_indexes(name, schema=schema)}
            assert {i.name for i in table.indexes} == set(db_indexes), name
            for index in table.indexes:
                found_index = db_indexes[str(index.name)]
                assert [c.name for c in index.columns] == found_index["column_names"], index.name
                assert bool(index.unique) == bool(found_index["unique"]), index.name
            db_fks = {
                (tuple(f["constrained_columns"]), f["referred_table"], tuple(f["referred_columns"]))
                for f in insp.get_foreign_keys(name, schema=schema)
            }
            model_fks = {
                (
                    tuple(c.name for c in fk.columns),
                    fk.referred_table.name,
                    tuple(e.column.name for e in fk.elements),
                )
                for fk in table.foreign_key_constraints
            }
            assert model_fks == db_fks, name


def test_a_schema_built_from_the_models_equals_the_migrated_one(
    engine: Engine, schema: str, model_schema: str
) -> None:
    with engine.connect() as conn:
        for name in TABLES:
            migrated = _describe(conn, schema, name)
            modelled = _describe(conn, model_schema, name)
            assert modelled == migrated, name


def test_urls_are_converted_to_the_psycopg_driver() -> None:
    assert sqlalchemy_url("postgresql://u@h:5/db").drivername == "postgresql+psycopg"
    assert sqlalchemy_url("postgres://u@h/db").drivername == "postgresql+psycopg"
    assert sqlalchemy_url("postgresql+psycopg://u@h/db").drivername == "postgresql+psycopg"
    socket = sqlalchemy_url("postgresql://postgres:@/postgres?host=/tmp/pg")
    assert socket.query == {"host": "/tmp/pg"}
    with pytest.raises(ValueError):
        sqlalchemy_url("host=localhost dbname=x")
