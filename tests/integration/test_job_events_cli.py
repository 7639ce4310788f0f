"""The real ``patchbay`` command as a subprocess: ``jobs events``, ``queues events``,
``jobs redrive`` and the progress shown by ``jobs show`` (text and --json; errors exit 1
with the message on stderr)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import Eventually

from patchbay.queue import Job, QueueClient

PATCHBAY = str(Path(sys.executable).parent / "patchbay")


class Cli:
    def __init__(self, url: str, schema: str) -> None:
        self.url, self.schema = url, schema
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PATCHBAY_")}

    def __call__(self, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [PATCHBAY, "--database-url", self.url, "--schema", self.schema, *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=60,
        )
        assert result.returncode == code, result.stderr
        assert "Traceback" not in result.stderr
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--json").stdout)


@pytest.fixture
def cli(database_url: str, schema: str) -> Cli:
    return Cli(database_url, schema)


async def _flaky(job: Job) -> None:
    await job.progress({"step": job.attempt})
    if job.attempt == 1:
        raise PermissionError("401 Unauthorized")


async def test_jobs_events_prints_a_jobs_history(
    client: QueueClient, eventually: Eventually, cli: Cli
) -> None:
    await client.create_queue("q", events=True, retry_limit=1)
    job_id = await client.send("q", {"n": 1})
    worker = await client.work("q", _flaky)
    await eventually(lambda: worker.completed == 1)
    await worker.stop()

    events = cli.json("jobs", "events", str(job_id))
    assert [e["kind"] for e in events] == [
        "created",
        "started",
        "retrying",
        "started",
        "completed",
    ]
    assert events[2]["data"]["error"]["message"] == "401 Unauthorized"
    assert events[2]["from_state"] == "active" and events[2]["to_state"] == "retrying"
    assert all(e["job_id"] == str(job_id) for e in events)

    text = cli("jobs", "events", str(job_id)).stdout
    lines = text.splitlines()
    assert lines[0].split() == ["at", "kind", "from", "to", "attempt", "detail"]
    assert "builtins.PermissionError: 401 Unauthorized" in text
    assert len(lines) == 2 + 5

    shown = cli.json("jobs", "show", str(job_id))
    assert shown["progress"] == {"step": 2}
    assert "progress" in cli("jobs", "show", str(job_id)).stdout


async def test_queues_events_lists_a_queues_events(
    client: QueueClient, eventually: Eventually, cli: Cli
) -> None:
    await client.create_queue("q", events=True)
    first = await client.send("q", 1)
    second = await client.send("q", 2)
    events = cli.json("queues", "events", "q")
    assert [(e["job_id"], e["kind"]) for e in events] == [
        (str(first), "created"),
        (str(second), "created"),
    ]
    latest = cli.json("queues", "events", "q", "--limit", "1")
    assert [e["job_id"] for e in latest] == [str(second)]
    since = cli.json("queues", "events", "q", "--since", events[1]["at"])
    assert [e["job_id"] for e in since] == [str(second)]
    assert str(second) in cli("queues", "events", "q").stdout
    # Without an action, ``queues`` still prints the stats.
    assert "oldest_queued_s" in cli("queues").stdout


async def test_jobs_redrive_moves_dead_letters_back(
    client: QueueClient, eventually: Eventually, cli: Cli
) -> None:
    await client.create_queue("dlq")
    await client.create_queue("src", retry_limit=0, dead_letter="dlq")
    await client.send_many("src", [1, 2, 3])

    async def fail(job: Job) -> None:
        raise RuntimeError("down")

    worker = await client.work("src", fail)
    await eventually(lambda: worker.failed == 3)
    await worker.stop()
    first, *rest = (await client.list_jobs(queue="dlq")).jobs

    out = cli("jobs", "redrive", "dlq", "--id", str(first.id)).stdout
    assert out.strip() == "redrove 1 job(s) from dlq"
    assert cli.json("jobs", "redrive", "dlq") == {"queue": "dlq", "redriven": 2}
    assert {j.queue for j in [await client.get_job(j.id) for j in [first, *rest]]} == {"src"}


async def test_errors_exit_1_with_a_message(client: QueueClient, cli: Cli) -> None:
    await client.create_queue("q")
    missing = str(uuid.uuid4())
    assert "not found" in cli("jobs", "events", missing, code=1).stderr
    assert "does not exist" in cli("queues", "events", "nope", code=1).stderr
    assert "UTC offset" in cli("queues", "events", "q", "--since", "2030-01-01", code=1).stderr
    assert "ISO 8601" in cli("queues", "events", "q", "--since", "soon", code=1).stderr
    assert "not found" in cli("jobs", "redrive", "q", "--id", missing, code=1).stderr
    assert "does not exist" in cli("jobs", "redrive", "nope", code=1).stderr
