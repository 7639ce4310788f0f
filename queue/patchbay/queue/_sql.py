"""Named SQL statements of the queue room, loaded once from ``sql/*.sql``.

Each statement starts with a ``-- name: table_verb_qualifier`` line; names starting with
``_`` are fragments that statements include as ``{_name}``. The schema is the only
identifier substituted, quoted by psycopg; the rendered statements are plain bytes, so
psycopg can cache and prepare them.
"""

from __future__ import annotations

import re
import string
from functools import cache
from importlib import resources

from psycopg import sql

_NAME_LINE = re.compile(r"^--\s*name:\s*(_?[a-z0-9_]+)\s*$", re.MULTILINE)


def parse_named_statements(text: str) -> dict[str, str]:
    """Split a .sql file into ``{name: statement}``; raises on duplicate names."""
    parts = _NAME_LINE.split(text)
    statements: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in statements:
            raise ValueError(f"duplicate SQL statement name {name!r}")
        # Whole-line comments are dropped: psycopg would read a "%" in them as a placeholder.
        lines = [line for line in body.splitlines() if not line.lstrip().startswith("--")]
        statements[name] = "\n".join(lines).strip().rstrip(";").strip()
    return statements


@cache
def _raw_statements(package: str) -> dict[str, str]:
    statements: dict[str, str] = {}
    folder = resources.files(package) / "sql"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".sql"):
            for name, body in parse_named_statements(entry.read_text("utf-8")).items():
                if name in statements:
                    raise ValueError(f"duplicate SQL statement name {name!r} in {entry.name}")
                statements[name] = body
    return statements


class Statements:
    """The named statements of one room, rendered for one schema."""

    def __init__(self, schema: str, package: str = "patchbay.queue") -> None:
        self.schema = schema
        ident = sql.Identifier(schema)
        raw = _raw_statements(package)
        # Fragments (names starting with "_") are spliced into statements as {_name}, and
        # may themselves include other fragments.
        fragments: dict[str, sql.Composed] = {}

        def fragment(name: str, within: tuple[str, ...] = ()) -> sql.Composed:
            if name in within:
                raise ValueError(f"SQL fragment {name!r} includes itself")
            if name not in fragments:
                body = raw[name]
                inner = {
                    field: fragment(field, (*within, name))
                    for _, field, _, _ in string.Formatter().parse(body)
                    if field and field.startswith("_")
                }
                fragments[name] = sql.SQL(body).format(schema=ident, **inner)
            return fragments[name]

        for name in raw:
            if name.startswith("_"):
                fragment(name)
        self._rendered: dict[str, bytes] = {
            name: sql.SQL(body).format(schema=ident, **fragments).as_bytes(None)
            for name, body in raw.items()
            if not name.startswith("_")
        }

    def __getitem__(self, name: str) -> bytes:
        return self._rendered[name]

    def names(self) -> list[str]:
        """All statement names, sorted."""
        return sorted(self._rendered)
