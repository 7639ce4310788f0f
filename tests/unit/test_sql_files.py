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

SQL_DIR = Path(str(resources.files("patchbay.queue") / "sql"))
SQL_FILES = sorted(SQL_DIR.glob("*.sql"))
NAME = re.compile(r"^[a-z]+(?:_[a-z0-9]+)+$")
# A statement's second word says what it does.
VERBS = {
    "insert",
    "fetch",
    "complete",
    "fail",
    "release",
    "heartbeat",
    "find",
    "get",
    "list",
    "cancel",
    "requeue",
    "delete",
    "state",
    "update",
    "stats",
}


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


@pytest.mark.parametrize("path", SQL_FILES, ids=lambda p: p.name)
def test_statement_names_are_table_verb_qualifier(path: Path) -> None:
    for name in _statements(path):
        assert NAME.match(name), f"{name} is not lowercase table_verb_qualifier"
        table, verb, *_ = name.split("_")
        assert table == path.stem, f"{name} lives in {path.name} but names table {table!r}"
        assert verb in VERBS, f"{name}: unknown verb {verb!r}"


@pytest.mark.parametrize("path", SQL_FILES, ids=lambda p: p.name)
def test_only_the_schema_is_substituted(path: Path) -> None:
    for name, body in _statements(path).items():
        fields = {f for _, f, _, _ in string.Formatter().parse(body) if f is not None}
        assert fields <= {"schema"}, f"{name} formats {fields - {'schema'}}"
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
    assert set(rendered.names()) == {n for p in SQL_FILES for n in _statements(p)}
    body = rendered["job_get"].decode()
    assert '"some_schema".job' in body
    assert "{schema}" not in body
