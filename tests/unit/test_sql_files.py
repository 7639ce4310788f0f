"""The queue room's SQL lives in ``sql/*.sql`` as named statements: each file parses, names
are ``table_verb_qualifier`` with the file's table first, and only ``{schema}`` is ever
substituted into the text (identifiers never come from input)."""

from __future__ import annotations

import re
import string
from importlib import resources
from pathlib import Path

import pytest

from patchbay.queue._sql import Statements, parse_named_statements

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
SQL_DIR = Path(str(resources.files("patchbay.queue") / "sql"))
SQL_FILES = sorted(SQL_DIR.glob("*.sql"))
NAME = re.compile(r"^_?[a-z]+(?:_[a-z0-9]+)+$")


def _statements(path: Path) -> dict[str, str]:
    return parse_named_statements(path.read_text("utf-8"))


def test_there_are_sql_files() -> None:
    assert {p.stem for p in SQL_FILES} >= {"job", "queue"}


@pytest.mark.parametrize("path", SQL_FILES, ids=lambda p: p.name)
def test_file_parses_into_named_statements(path: Path) -> None:
    text = path.read_text("utf-8")
    statements = _statements(path)
    assert statements, f"{path.name} has no named statements"
    # Nothing may precede the first name line except comments, or it would be lost.
    head = text.split("-- name:", 1)[0]
    assert all(not line.strip() or line.startswith("--") for line in head.splitlines())
    for name, body in statements.items():
        assert body, f"{name} is empty"
        code = re.sub(r"--[^\n]*", "", body)
        assert code.strip(), f"{name} is only comments"
        assert ";" not in code, f"{name} holds more than one statement"
        assert text.count(f"-- name: {name}\n") == 1


def _tables() -> set[str]:
    text = "\n".join(p.read_text("utf-8") for p in MIGRATIONS.glob("*.sql"))
    return set(re.findall(r"create table (?:if not exists )?(\w+)", text, re.IGNORECASE))


@pytest.mark.parametrize("path", SQL_FILES, ids=lambda p: p.name)
def test_statement_names_are_table_verb_qualifier(path: Path) -> None:
    tables = _tables()
    assert {"job", "queue"} <= tables
    table_words = {word for table in tables for word in table.split("_")}
    for name in _statements(path):
        # A leading "_" marks a fragment that other statements include; same naming.
        assert NAME.match(name), f"{name} is not lowercase table_verb_qualifier"
        bare = name.lstrip("_")
        if path.stem in tables:
            # A file named after a table holds that table's statements only.
            assert bare.startswith(f"{path.stem}_"), f"{name} in {path.name}: wrong table"
        else:
            # A concern's file: each statement names the table (or its subject) first.
            assert bare.split("_")[0] in table_words, f"{name}: first word is no table"


@pytest.mark.parametrize("path", SQL_FILES, ids=lambda p: p.name)
def test_only_the_schema_and_fragments_are_substituted(path: Path) -> None:
    fragments = {n for p in SQL_FILES for n in _statements(p) if n.startswith("_")}
    for name, body in _statements(path).items():
        fields = {f for _, f, _, _ in string.Formatter().parse(body) if f is not None}
        assert fields <= {"schema"} | fragments, f"{name} formats {fields - {'schema'}}"
        # Parameters are psycopg named placeholders, never positional or %-formatting.
        stripped = re.sub(r"%\(\w+\)s", "", body)
        assert "%" not in stripped, f"{name} has a stray % placeholder"


def test_statement_names_are_unique_across_files() -> None:
    seen: dict[str, str] = {}
    for path in SQL_FILES:
        for name in _statements(path):
            assert name not in seen, f"{name} in both {seen[name]} and {path.name}"
            seen[name] = path.name


def test_parse_rejects_duplicate_names() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        parse_named_statements("-- name: job_get\nselect 1;\n-- name: job_get\nselect 2;\n")


def test_schema_is_quoted_as_an_identifier() -> None:
    rendered = Statements("some_schema")
    public = {n for p in SQL_FILES for n in _statements(p) if not n.startswith("_")}
    assert public <= set(rendered.names())
    body = rendered["job_get"].decode()
    assert '"some_schema".job' in body
    assert "{schema}" not in body
