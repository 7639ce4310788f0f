"""``patchbay tenants ...`` and ``patchbay integrations ...`` as subprocesses, with a test
connector plugin installed for the subprocess only (a module and its dist-info on
PYTHONPATH, found through the ``patchbay.connectors`` entry point group)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from patchbay.secrets import format_master_key, generate_master_key

PATCHBAY = str(Path(sys.executable).parent / "patchbay")
TOKEN = "tok_live_5a4b3c2d1e0f"

PLUGIN = f"""
from datetime import timedelta

from patchbay.connectors import AuthError, Connector, ConnectorConfig, SecretField, backfill, sync


class RegTestConfig(ConnectorConfig):
    base_url: str
    token: SecretField


class RegTest(Connector[RegTestConfig]):
    name = "regtest"
    version = "2.0.0"
    config_model = RegTestConfig

    @sync(every="*/5 * * * *")
    async def items(self, ctx):
        pass

    @backfill(window=timedelta(days=1))
    async def history(self, ctx, window):
        pass

    async def check(self, ctx):
        if await ctx.secret(ctx.config.token) != TOKEN:
            raise AuthError("401 Unauthorized: the token was revoked")

TOKEN = {TOKEN!r}
"""


@pytest.fixture
def plugin_path(tmp_path: Path) -> Path:
    """A folder holding the ``regtest`` connector plugin as an installed distribution."""
    root = tmp_path / "plugins"
    root.mkdir()
    (root / "regtest_plugin.py").write_text(PLUGIN)
    info = root / "regtest_plugin-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: regtest-plugin\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(
        "[patchbay.connectors]\nregtest = regtest_plugin:RegTest\n"
    )
    return root


class Cli:
    def __init__(self, url: str, schema: str, env: dict[str, str]) -> None:
        self.url, self.schema, self.env = url, schema, env

    def __call__(
        self, *args: str, ok: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [PATCHBAY, "--database-url", self.url, "--schema", self.schema, *args],
            capture_output=True,
            text=True,
            env=self.env,
            input=stdin,
            timeout=60,
        )
        assert "Traceback" not in result.stderr, result.stderr
        if ok:
            assert result.returncode == 0, result.stderr
        else:
            assert result.returncode == 1, (result.stdout, result.stderr)
            assert result.stderr.startswith("patchbay: error: "), result.stderr
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--json").stdout)

    def count(self, table: str) -> int:
        with psycopg.connect(self.url) as conn:
            row = conn.execute(
                sql.SQL("select count(*) from {}.{}").format(
                    sql.Identifier(self.schema), sql.Identifier(table)
                )
            ).fetchone()
        assert row is not None
        return int(row[0])


@pytest.fixture
def cli(database_url: str, schema: str, plugin_path: Path, tmp_path: Path) -> Cli:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PATCHBAY_")}
    env["PATCHBAY_HOME"] = str(tmp_path / "home")
    env["PATCHBAY_MASTER_KEYS"] = format_master_key(generate_master_key("k1"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(plugin_path), env.get("PYTHONPATH")]))
    return Cli(database_url, schema, env)


CONFIG = {"base_url": "https://api.example.com", "token": "secret://acme/regtest/token"}


def test_tenants(cli: Cli) -> None:
    added = cli.json(
        "tenants",
        "add",
        "acme",
        "--name",
        "Acme Corp",
        "--max-concurrent",
        "5",
        "--starts-per-interval",
        "120",
        "--start-interval",
        "60",
        "--fairness-weight",
        "2",
        "--sync-schedule",
        "*/15 * * * *",
    )
    assert added["id"] == "acme" and added["name"] == "Acme Corp"
    assert (added["max_concurrent"], added["starts_per_interval"]) == (5, 120)
    assert (added["fairness_weight"], added["sync_schedule"]) == (2, "*/15 * * * *")

    text = cli("tenants", "add", "globex").stdout
    assert "added tenant globex" in text and "max concurrent unlimited" in text
    assert [t["id"] for t in cli.json("tenants", "list")] == ["acme", "globex"]
    table = cli("tenants", "list").stdout
    assert "Acme Corp" in table and "*/15 * * * *" in table

    cli("integrations", "add", "acme-crm", "--tenant", "acme", "--connector", "regtest",
        "--config-json", json.dumps(CONFIG))  # fmt: skip
    shown = cli.json("tenants", "show", "acme")
    assert shown["integrations"] == [{"id": "acme-crm", "connector": "regtest", "status": "active"}]
    assert "acme-crm" in cli("tenants", "show", "acme").stdout

    assert cli.json("tenants", "disable", "globex")["status"] == "disabled"
    assert [t["id"] for t in cli.json("tenants", "list", "--status", "active")] == ["acme"]

    # Bad input: a clear one-line error, exit 1, nothing written.
    for args, message in [
        (("tenants", "add", "acme"), "'acme' exists already"),
        (("tenants", "add", "x", "--fairness-weight", "0"), "fairness_weight"),
        (("tenants", "add", "x", "--sync-schedule", "every hour"), "field"),
        (("tenants", "add", "bad id"), "invalid tenant"),
        (("tenants", "show", "nobody"), "no tenant 'nobody'"),
        (("tenants", "disable", "nobody"), "no tenant 'nobody'"),
    ]:
        assert message in cli(*args, ok=False).stderr
    assert cli.count("tenant") == 2


def test_integrations(cli: Cli, tmp_path: Path) -> None:
    cli("tenants", "add", "acme")
    cli("secrets", "put", "acme", "regtest/token", stdin=TOKEN)
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(CONFIG))

    added = cli.json(
        "integrations",
        "add",
        "acme-crm",
        "--tenant",
        "acme",
        "--connector",
        "regtest",
        "--config",
        str(config_file),
        "--schedule",
        "@hourly",
        "--check",
        "--by",
        "ops",
    )
    assert added["config"] == CONFIG and added["schedule"] == "@hourly"
    assert added["status"] == "active"
    assert cli.json("integrations", "show", "acme-crm") == added
    shown = cli("integrations", "show", "acme-crm").stdout
    assert "regtest" in shown and "secret://acme/regtest/token" in shown
    assert [i["id"] for i in cli.json("integrations", "list", "--tenant", "acme")] == ["acme-crm"]
    assert cli.json("integrations", "list", "--status", "paused") == []

    assert (
        cli.json("integrations", "pause", "acme-crm", "--reason", "maintenance")["status"]
        == "paused"
    )
    assert "is paused" in cli("integrations", "pause", "acme-crm").stdout
    resumed = cli.json("integrations", "resume", "acme-crm", "--sync-now")
    assert resumed["status"] == "active" and len(resumed["jobs"]) == 1

    synced = cli.json("integrations", "sync-now", "acme-crm", "--full-refresh")
    assert synced["integration"] == "acme-crm" and len(synced["jobs"]) == 1
    backfill = cli.json(
        "integrations", "backfill", "acme-crm", "--since", "2024-01-01", "--until", "2024-01-03"
    )
    assert backfill["windows"] == 2
    with psycopg.connect(cli.url) as conn:
        jobs = conn.execute(
            sql.SQL(
                "select queue, group_key, fairness_key, data->>'tenant' from {}.job order by queue"
            ).format(sql.Identifier(cli.schema))
        ).fetchall()
    assert sorted(jobs) == sorted(
        [("regtest.history", None, None, "acme")] * 2
        + [("regtest.items", "acme-crm", "acme", "acme")] * 2
    )

    updated = cli.json(
        "integrations", "update", "acme-crm", "--config-json",
        json.dumps({**CONFIG, "base_url": "https://eu.example.com"}), "--clear-schedule",
    )  # fmt: skip
    assert updated["config"]["base_url"] == "https://eu.example.com"
    assert updated["schedule"] is None
    assert (
        cli.json("integrations", "disable", "acme-crm", "--reason", "churn")["status"] == "disabled"
    )

    events = cli.json("integrations", "events", "acme-crm")
    assert [e["kind"] for e in events] == [
        "created",
        "paused",
        "resumed",
        "sync_requested",
        "sync_requested",
        "backfill_started",
        "config_changed",
        "disabled",
    ]
    assert events[0]["data"] == {
        "connector": "regtest",
        "version": "2.0.0",
        "schedule": "@hourly",
        "checked": True,
        "by": "ops",
    }
    assert events[1]["data"] == {"from": "active", "reason": "maintenance"}
    later = cli.json("integrations", "events", "acme-crm", "--since-id", str(events[5]["id"]))
    assert [e["kind"] for e in later] == ["config_changed", "disabled"]
    table = cli("integrations", "events", "acme-crm", "--limit", "2").stdout
    assert "created" in table and "paused" in table and "resumed" not in table
    assert "disabled" in cli("integrations", "sync-now", "acme-crm", ok=False).stderr


def test_bad_integration_input_writes_nothing(cli: Cli, tmp_path: Path) -> None:
    cli("tenants", "add", "acme")
    cli("secrets", "put", "acme", "regtest/revoked", stdin="not-the-token")
    base = ["integrations", "add", "acme-crm", "--tenant", "acme"]
    bad_file = tmp_path / "bad.json"
    bad_file.write_text("{not json")
    cases = [
        (["--connector", "nope", "--config-json", json.dumps(CONFIG)], "no connector named 'nope'"),
        (
            ["--connector", "regtest", "--config-json", json.dumps({**CONFIG, "token": TOKEN})],
            "token: Value error, must be a secret reference",
        ),
        (
            ["--connector", "regtest", "--config-json", json.dumps({"token": CONFIG["token"]})],
            "base_url: Field required",
        ),
        (["--connector", "regtest", "--config-json", "[1]"], "must hold a JSON object"),
        (["--connector", "regtest", "--config", str(bad_file)], "is not valid JSON"),
        (
            ["--connector", "regtest", "--config", str(tmp_path / "missing.json")],
            "cannot read --config",
        ),
        (
            [
                "--connector",
                "regtest",
                "--config-json",
                json.dumps({**CONFIG, "token": "secret://acme/regtest/revoked"}),
                "--check",
            ],
            "check of connector 'regtest' failed: AuthError: 401 Unauthorized",
        ),
        (
            ["--connector", "regtest", "--config-json", json.dumps(CONFIG), "--schedule", "* *"],
            "field",
        ),
    ]
    for extra, message in cases:
        result = cli(*base, *extra, ok=False)
        assert message in result.stderr
        assert TOKEN not in result.stderr and TOKEN not in result.stdout
    result = cli(
        "integrations", "add", "acme-crm", "--tenant", "nobody", "--connector", "regtest",
        "--config-json", json.dumps(CONFIG), ok=False,
    )  # fmt: skip
    assert "no tenant 'nobody'" in result.stderr
    assert cli.count("integration") == 0
    assert cli.count("integration_event") == 0
    for args in (
        ("integrations", "show", "nope"),
        ("integrations", "pause", "nope"),
        ("integrations", "resume", "nope"),
        ("integrations", "events", "nope"),
        ("integrations", "sync-now", "nope"),
    ):
        assert "no integration 'nope'" in cli(*args, ok=False).stderr


@pytest.fixture
def unmigrated(database_url: str) -> Iterator[str]:
    name = f"cli_{uuid.uuid4().hex[:16]}"
    yield name
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(name)))


def test_an_unmigrated_schema_says_to_migrate(cli: Cli, unmigrated: str) -> None:
    cli.schema = unmigrated
    result = cli("tenants", "list", ok=False)
    assert "patchbay migrate" in result.stderr
