"""The real ``patchbay`` command, run as a subprocess against the test database: migrate,
queues, jobs list|show|retry|cancel|resume|delete (text and --json), errors on stderr with a
non-zero exit, and the demo daemon."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from patchbay.queue import Job, JobState, QueueClient
from patchbay.queue.migrate import applied_migrations, available_migrations

PATCHBAY = str(Path(sys.executable).parent / "patchbay")


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a user's shell: no database variables, a private data folder (so
    nothing can start an embedded Postgres in the checkout by accident)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PATCHBAY_")}
    env["PATCHBAY_HOME"] = str(tmp_path / "home")
    return env


@pytest.fixture
def fresh_schema(database_url: str) -> Iterator[str]:
    name = f"cli_{uuid.uuid4().hex[:16]}"
    yield name
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(name)))


class Cli:
    def __init__(self, url: str, schema: str, env: dict[str, str]) -> None:
        self.url, self.schema, self.env = url, schema, env

    def __call__(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [PATCHBAY, "--database-url", self.url, "--schema", self.schema, *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=60,
        )
        if ok:
            assert result.returncode == 0, result.stderr
            assert "Traceback" not in result.stderr
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--json").stdout)

    def fails(self, *args: str, code: int = 1) -> str:
        result = self(*args, ok=False)
        assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
        assert result.stdout == ""
        assert "Traceback" not in result.stderr
        return result.stderr


@pytest.fixture
def cli(database_url: str, schema: str, cli_env: dict[str, str]) -> Cli:
    return Cli(database_url, schema, cli_env)


async def populate(url: str, schema: str) -> dict[str, uuid.UUID]:
    """A queue holding one job in each state the CLI acts on."""
    async with QueueClient(url, schema=schema) as client:
        await client.create_queue("mail", retry_limit=0)
        await client.create_queue("idle")
        failing = await client.send("mail", {"kind": "fail"})

        called = asyncio.Event()

        async def handler(job: Job) -> None:
            called.set()
            raise RuntimeError("smtp said no")

        worker = await client.work("mail", handler)
        await asyncio.wait_for(called.wait(), 10)
        await worker.stop()  # returns once the failure is written
        assert worker.failed == 1
        queued = await client.send("mail", {"kind": "queued"})
        deferred = await client.send("mail", {"kind": "later"}, start_after=3600)
        return {"failed": failing, "queued": queued, "deferred": deferred}


@pytest.mark.smoke
def test_migrate_applies_then_reports_up_to_date(
    database_url: str, fresh_schema: str, cli_env: dict[str, str]
) -> None:
    cli = Cli(database_url, fresh_schema, cli_env)
    first = cli("migrate")
    expected = [f"applied {m.version:04d}_{m.name}" for m in available_migrations()]
    assert first.stdout.splitlines() == expected
    assert len(applied_migrations(database_url, fresh_schema)) == len(expected)
    second = cli("migrate")
    assert second.stdout.strip() == f"schema {fresh_schema!r} is up to date"


def test_schema_from_the_environment(
    database_url: str, fresh_schema: str, cli_env: dict[str, str]
) -> None:
    env = {**cli_env, "PATCHBAY_DATABASE_URL": database_url, "PATCHBAY_SCHEMA": fresh_schema}
    result = subprocess.run(
        [PATCHBAY, "migrate"], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert applied_migrations(database_url, fresh_schema)


def test_queues_table_and_json(cli: Cli, database_url: str, schema: str) -> None:
    asyncio.run(populate(database_url, schema))
    stats = {row["queue"]: row for row in cli.json("queues")}
    assert set(stats) == {"idle", "mail"}
    mail = stats["mail"]
    assert (mail["queued"], mail["deferred"], mail["failed"], mail["active"]) == (1, 1, 1, 0)
    assert mail["oldest_queued_age"] >= 0
    assert stats["idle"]["oldest_queued_age"] is None
    lines = cli("queues").stdout.splitlines()
    assert lines[0].split() == [
        "queue",
        "queued",
        "deferred",
        "retrying",
        "active",
        "completed",
        "failed",
        "cancelled",
        "oldest_queued_s",
    ]
    mail_row = next(line.split() for line in lines if line.startswith("mail"))
    assert mail_row[1:8] == ["1", "1", "0", "0", "0", "1", "0"]


def test_jobs_list_filters_and_pages(cli: Cli, database_url: str, schema: str) -> None:
    ids = asyncio.run(populate(database_url, schema))
    everything = cli.json("jobs", "list")
    assert {j["id"] for j in everything["jobs"]} == {str(i) for i in ids.values()}
    assert everything["next_cursor"] is None
    failed = cli.json("jobs", "list", "--queue", "mail", "--state", "failed")
    assert [j["id"] for j in failed["jobs"]] == [str(ids["failed"])]
    first = cli.json("jobs", "list", "--limit", "2")
    assert len(first["jobs"]) == 2 and first["next_cursor"]
    rest = cli.json("jobs", "list", "--limit", "2", "--cursor", first["next_cursor"])
    paged = [j["id"] for j in first["jobs"] + rest["jobs"]]
    assert sorted(paged) == sorted(str(i) for i in ids.values())
    text = cli("jobs", "list", "--state", "queued").stdout
    assert str(ids["queued"]) in text and str(ids["failed"]) not in text
    assert "next page: --cursor" in cli("jobs", "list", "--limit", "1").stdout


def test_jobs_show_text_and_json(cli: Cli, database_url: str, schema: str) -> None:
    ids = asyncio.run(populate(database_url, schema))
    doc = cli.json("jobs", "show", str(ids["failed"]))
    assert doc["id"] == str(ids["failed"]) and doc["state"] == "failed"
    assert doc["data"] == {"kind": "fail"}
    assert doc["error"]["type"] == "builtins.RuntimeError"
    assert doc["error"]["message"] == "smtp said no"
    text = cli("jobs", "show", str(ids["failed"])).stdout
    assert "builtins.RuntimeError: smtp said no" in text
    assert "Traceback (most recent call last)" in text  # the handler's, stored with the job


def test_jobs_retry_cancel_resume_delete(cli: Cli, database_url: str, schema: str) -> None:
    ids = asyncio.run(populate(database_url, schema))

    async def state(job_id: uuid.UUID) -> JobState | None:
        async with QueueClient(database_url, schema=schema) as client:
            try:
                return (await client.get_job(job_id)).state
            except LookupError:
                return None

    failed, queued = str(ids["failed"]), str(ids["queued"])
    assert cli.json("jobs", "retry", failed) == {"id": failed, "action": "retry", "ok": True}
    assert asyncio.run(state(ids["failed"])) is JobState.QUEUED
    assert cli("jobs", "cancel", queued).stdout.strip() == f"cancel: {queued}"
    assert asyncio.run(state(ids["queued"])) is JobState.CANCELLED
    assert cli.json("jobs", "resume", queued)["ok"] is True
    assert asyncio.run(state(ids["queued"])) is JobState.QUEUED
    assert cli.json("jobs", "delete", queued)["action"] == "delete"
    assert asyncio.run(state(ids["queued"])) is None


def test_errors_go_to_stderr_with_a_non_zero_exit(cli: Cli, database_url: str, schema: str) -> None:
    ids = asyncio.run(populate(database_url, schema))
    unknown = str(uuid.uuid4())
    for action in ("show", "retry", "cancel", "resume", "delete"):
        err = cli.fails("jobs", action, unknown)
        assert err.strip() == f"patchbay: error: job {unknown} not found"
    for action in ("show", "delete"):
        err = cli.fails("jobs", action, "not-a-job-id", "--json")
        assert err.startswith("patchbay: error: id must be a UUID")
    err = cli.fails("jobs", "retry", str(ids["queued"]))
    assert "cannot retry" in err and "queued" in err
    assert "unknown job state" in cli.fails("jobs", "list", "--state", "sleeping")
    assert "limit" in cli.fails("jobs", "list", "--limit", "0")
    assert "invalid cursor" in cli.fails("jobs", "list", "--cursor", "nonsense")
    # Usage errors are argparse's: exit 2.
    assert "usage:" in cli.fails("jobs", "show", code=2)
    assert "invalid choice" in cli.fails("frobnicate", code=2)


def test_database_errors_are_reported_without_a_traceback(
    database_url: str, fresh_schema: str, cli_env: dict[str, str]
) -> None:
    not_migrated = Cli(database_url, fresh_schema, cli_env)
    err = not_migrated.fails("queues")
    assert "patchbay migrate" in err
    err = not_migrated.fails("jobs", "show", str(uuid.uuid4()))
    assert "patchbay migrate" in err
    unreachable = Cli("postgresql://postgres@127.0.0.1:1/nowhere", fresh_schema, cli_env)
    assert unreachable.fails("migrate").startswith("patchbay: error:")
    assert "invalid schema name" in Cli(database_url, "Bad-Schema", cli_env).fails("queues")


def test_help_lists_the_commands(cli_env: dict[str, str]) -> None:
    out = subprocess.run(
        [PATCHBAY, "--help"], capture_output=True, text=True, env=cli_env, check=True
    ).stdout
    for command in ("migrate", "queues", "jobs", "run"):
        assert command in out
    jobs_help = subprocess.run(
        [PATCHBAY, "jobs", "--help"], capture_output=True, text=True, env=cli_env, check=True
    ).stdout
    for action in ("list", "show", "retry", "cancel", "resume", "delete"):
        assert action in jobs_help


def test_run_demo_prints_what_it_does(
    database_url: str, fresh_schema: str, cli_env: dict[str, str]
) -> None:
    result = Cli(database_url, fresh_schema, cli_env)("run", "--demo", "queue", "--duration", "3")
    lines = result.stdout.splitlines()
    sent = [line for line in lines if line.startswith("sent job ")]
    done = [line for line in lines if "done on attempt" in line]
    assert len(sent) >= 4, result.stdout
    assert done, result.stdout
    assert lines[-1].startswith("done: sent ")
    assert "embedded Postgres" not in result.stderr  # it used the URL it was given
    assert not (Path(cli_env["PATCHBAY_HOME"]) / "postgres").exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_run_demo_stops_gracefully_on_a_signal(
    database_url: str, fresh_schema: str, cli_env: dict[str, str], signum: signal.Signals
) -> None:
    proc = subprocess.Popen(
        [
            PATCHBAY,
            "--database-url",
            database_url,
            "--schema",
            fresh_schema,
            "run",
            "--demo",
            "queue",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    seen: list[str] = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        seen.append(line)
        if line.startswith("sent job "):
            break
    else:
        proc.kill()
        pytest.fail(f"the demo sent nothing: {seen}")
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "stopping: finishing running jobs" in out
    assert "Traceback" not in err

    async def active() -> int:
        async with QueueClient(database_url, schema=fresh_schema) as client:
            return sum(s.active for s in await client.stats())

    assert asyncio.run(active()) == 0  # nothing left holding a lease
