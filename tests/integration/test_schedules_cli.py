"""``patchbay schedules ...`` as a subprocess against the test's schema."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from patchbay.queue import QueueClient

PATCHBAY = Path(sys.executable).with_name("patchbay")


def run(database_url: str, schema: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(PATCHBAY), "--database-url", database_url, "--schema", schema, "schedules", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
async def cli_schema(database_url: str, schema: str) -> str:
    """The test's schema, with a queue "reports"."""
    async with QueueClient(database_url, schema=schema, maintenance=False) as client:
        await client.create_queue("reports")
    return schema


def test_add_list_preview_fires_remove(database_url: str, cli_schema: str) -> None:
    added = run(
        database_url,
        cli_schema,
        "add",
        "nightly",
        "30 2 * * *",
        "reports",
        "--data",
        '{"full": true}',
        "--tz",
        "Europe/Berlin",
        "--catch-up",
        "--options",
        '{"priority": 4, "retry_limit": 1}',
        "--json",
    )
    assert added.returncode == 0, added.stderr
    info = json.loads(added.stdout)
    assert info["name"] == "nightly"
    assert info["tz"] == "Europe/Berlin"
    assert info["catch_up"] is True
    assert info["data"] == {"full": True}
    assert info["options"] == {"priority": 4, "retry_limit": 1}

    listed = run(database_url, cli_schema, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [s["name"] for s in json.loads(listed.stdout)] == ["nightly"]

    table = run(database_url, cli_schema, "list")
    assert table.returncode == 0
    assert "nightly" in table.stdout and "30 2 * * *" in table.stdout

    preview = run(database_url, cli_schema, "preview", "nightly", "-n", "3", "--json")
    assert preview.returncode == 0, preview.stderr
    times = json.loads(preview.stdout)
    assert len(times) == 3
    assert all("T02:30:00+0" in t or "T03:00:00+02:00" in t for t in times)

    fires = run(database_url, cli_schema, "fires", "nightly", "--json")
    assert fires.returncode == 0, fires.stderr
    assert json.loads(fires.stdout) == []

    removed = run(database_url, cli_schema, "remove", "nightly")
    assert removed.returncode == 0, removed.stderr
    assert json.loads(run(database_url, cli_schema, "list", "--json").stdout) == []


def test_preview_of_an_expression(database_url: str, cli_schema: str) -> None:
    out = run(database_url, cli_schema, "preview", "--cron", "0 */6 * * *", "-n", "4")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split()
    assert len(lines) == 4
    assert all(
        line.endswith(("T00:00:00+00:00", "T06:00:00+00:00", "T12:00:00+00:00", "T18:00:00+00:00"))
        for line in lines
    )


BAD_INPUT = [
    (["add", "s", "* * * *", "reports"], "field"),
    (["add", "s", "* * * * *", "reports", "--tz", "Nowhere/Town"], "time zone"),
    (["add", "s", "* * * * *", "missing"], "does not exist"),
    (["add", "s", "* * * * *", "reports", "--data", "{nope"], "--data is not valid JSON"),
    (["add", "s", "* * * * *", "reports", "--options", "[1]"], "JSON object"),
    (["add", "s", "* * * * *", "reports", "--options", '{"colour": 1}'], "unknown"),
    (["add", "bad name", "* * * * *", "reports"], "schedule name"),
    (["remove", "ghost"], "does not exist"),
    (["preview", "ghost"], "does not exist"),
    (["preview"], "NAME or --cron"),
]


def test_bad_input_exits_1_with_the_reason_and_writes_nothing(
    database_url: str, cli_schema: str
) -> None:
    for args, message in BAD_INPUT:
        out = run(database_url, cli_schema, *args)
        assert out.returncode == 1, (args, out.stdout, out.stderr)
        assert message in out.stderr, (args, out.stderr)
    assert json.loads(run(database_url, cli_schema, "list", "--json").stdout) == []
