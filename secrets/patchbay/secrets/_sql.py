"""Named SQL statements of the secrets room, loaded once from ``sql/*.sql``.

Each statement starts with a ``-- name: table_verb_qualifier`` line. The schema is the only
identifier substituted, quoted by psycopg; the rendered statements are plain bytes, so
psycopg can cache and prepare them. (The queue room has its own loader: rooms do not import
each other.)
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

from psycopg import sql

from .errors import InvalidName

_NAME_LINE = re.compile(r"^--\s*name:\s*([a-z0-9_]+)\s*$", re.MULTILINE)
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def validate_schema_name(name: object) -> str:
    """Return ``name`` if it is a valid schema name (lower-case SQL identifier)."""
    if not isinstance(name, str) or not _SCHEMA_NAME.match(name):
        raise InvalidName(
            f"invalid schema name {name!r}: use a lower-case identifier "
            "(letters, digits, '_'; at most 63 characters)"
        )
    return name


def parse_named_statements(text: str) -> dict[str, str]:
    """Split a .sql file into ``{name: statement}``; raises on duplicate names."""
    parts = _NAME_LINE.split(text)
    statements: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in statements:
            raise ValueError(f"duplicate SQL statement name {name!r}")
        statements[name] = body.strip().rstrip(";").strip()
    return statements


@cache
def _raw_statements() -> dict[str, str]:
    statements: dict[str, str] = {}
    folder = resources.files("patchbay.secrets") / "sql"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".sql"):
            for name, body in parse_named_statements(entry.read_text("utf-8")).items():
                if name in statements:
                    raise ValueError(f"duplicate SQL statement name {name!r} in {entry.name}")
                statements[name] = body
    return statements


@cache
def statements_for(schema: str) -> Statements:
    """The statements rendered for ``schema`` (cached: rendering is per schema, not per
    vault)."""
    return Statements(schema)


class Statements:
    """The named statements of the secrets room, rendered for one schema."""

    def __init__(self, schema: str) -> None:
        self.schema = validate_schema_name(schema)
        ident = sql.Identifier(schema)
        self._rendered: dict[str, bytes] = {
            name: sql.SQL(body).format(schema=ident).as_bytes(None)
            for name, body in _raw_statements().items()
        }

    def __getitem__(self, name: str) -> bytes:
        return self._rendered[name]

    def names(self) -> list[str]:
        """All statement names, sorted."""
        return sorted(self._rendered)
