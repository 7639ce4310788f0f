"""Several ``patchbay run`` processes on one Postgres cooperate, and SIGTERM drains one.

Three real daemons (subprocesses) run the example ``contacts`` connector against its fake
API (a real HTTP server in this process): each tenant's ``sync_all`` fire is enqueued
exactly once, every integration syncs, no job completes twice, the work spreads over the
daemons (the audit stream names the process that ran each sync), and the job a killed
process held is re-run once by the others after its lease expires (maintenance). Then a
daemon running a slow connector (a plugin installed for the subprocess only) is sent
SIGTERM: the sync that ends within the grace completes, the other goes back to the queue
without a spent attempt, and no job is left active.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from patchbay.connectors import ConnectorExecutor
from patchbay.queue import QueueClient
from patchbay.runtime.registry import Registry
from patchbay.secrets import LocalKeyProvider, Vault, format_master_key, generate_master_key

PATCHBAY = str(Path(sys.executable).parent / "patchbay")
TENANTS = ("acme", "globex", "initech", "umbrella")
PER_TENANT = 3
CONTACTS = 120

pytestmark = pytest.mark.skipif(not Path(PATCHBAY).exists(), reason="needs the project's .venv")


class Daemon:
    """A ``patchbay run`` subprocess whose output lines are collected as they come."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    @property
    def identity(self) -> str:
        """As :func:`patchbay.runtime.audit.worker_identity` names this process."""
        return f"{socket.gethostname()}:{self.proc.pid}"

    def wait_for(self, text: str, within: float) -> None:
        deadline = time.monotonic() + within
        while not any(text in line for line in self.lines):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"daemon never said {text!r}:\n{self.output}")
            time.sleep(0.05)

    def stop(self, within: float = 30) -> int:
        """SIGTERM, then the exit code (killed if it does not exit in time)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=within)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"daemon did not stop within {within}s:\n{self.output}") from None
        self._reader.join(timeout=5)
        return code


def _until(predicate: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within}s")
        time.sleep(0.2)


def _rows(url: str, schema: str, query: str, *args: Any) -> list[dict[str, Any]]:
    with psycopg.connect(url) as conn:
        cur = conn.cursor(row_factory=dict_row)
        cur.execute(sql.SQL(query).format(s=sql.Identifier(schema)), args)
        return cur.fetchall()


@pytest.fixture
def master_key() -> tuple[str, LocalKeyProvider]:
    key = generate_master_key("k1")
    return format_master_key(key), LocalKeyProvider([key])


def _env(master: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PATCHBAY_")}
    env.update(PATCHBAY_MASTER_KEYS=master, **extra)
    return env


# -- three daemons -----------------------------------------------------------------------------


async def _register(url: str, schema: str, keys: LocalKeyProvider, api_url: str) -> str:
    """Tenants (syncing every minute), their tokens in the vault, their integrations; and
    one job a daemon that died left active: its lease runs out 3 s after it was taken.
    Returns that job's id."""
    from patchbay_example_contacts.connector import ContactsConnector

    async with Vault(url, schema=schema, keys=keys) as vault:
        for tenant in TENANTS:
            await vault.put(tenant, "contacts-token", f"{tenant}-token")
    async with Registry(url, schema=schema, connectors={"contacts": ContactsConnector}) as reg:
        for tenant in TENANTS:
            await reg.add_tenant(tenant, sync_schedule="* * * * *")
            for n in range(1, PER_TENANT + 1):
                await reg.add_integration(
                    f"{tenant}-{n}",
                    tenant=tenant,
                    connector="contacts",
                    config={
                        "base_url": api_url,
                        "token": f"secret://{tenant}/contacts-token",
                        "page_size": 20,
                    },
                )
        # Paused: the scheduler leaves it alone; only the orphaned job syncs it.
        await reg.add_integration(
            "acme-orphan",
            tenant="acme",
            connector="contacts",
            config={"base_url": api_url, "token": "secret://acme/contacts-token"},
        )
        await reg.pause("acme-orphan")
        async with QueueClient(url, schema=schema, maintenance=False) as client:
            executor = ConnectorExecutor(client, [ContactsConnector()])
            await executor.ensure_queues()
            job_id = await executor.send_sync(
                "contacts",
                "contacts",
                tenant="acme",
                integration="acme-orphan",
                config=(await reg.get_integration("acme-orphan")).config,
                expire_in=3,
            )
    assert job_id is not None
    return str(job_id)


HOLDER = """
import asyncio, sys
from patchbay.queue import QueueClient

async def main():
    async with QueueClient(sys.argv[1], schema=sys.argv[2], maintenance=False) as client:
        async def hold(job):
            print("holding", job.id, flush=True)
            await asyncio.Event().wait()
        await client.work("contacts.contacts", hold, concurrency=1, poll_interval=0.1)
        await asyncio.Event().wait()

asyncio.run(main())
"""


def _die_holding_a_job(url: str, schema: str, env: dict[str, str], job_id: str) -> None:
    """A worker process takes the job and is killed (kill -9) while running it."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, url, schema],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        assert holder.stdout is not None
        line = holder.stdout.readline()
        assert line.strip() == f"holding {job_id}", line
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.slow
def test_three_daemons_tick_once_share_the_work_and_rerun_a_dead_ones_job(
    database_url: str, schema: str, master_key: tuple[str, LocalKeyProvider], tmp_path: Path
) -> None:
    from patchbay_example_contacts.fake_api import FakeContactsApi

    master, keys = master_key
    env = _env(master)
    config = tmp_path / "patchbay.json"
    config.write_text(
        json.dumps(
            {
                "poll_interval": 0.2,
                "maintenance_interval": 0.5,
                "reconcile_interval": 1.0,
                "scheduler_tick": "* * * * *",
                "concurrency": 2,
                "shutdown_grace": 10,
                "notify_log": False,
                "audit_export_file": str(tmp_path / "audit.jsonl"),
            }
        )
    )
    tokens = {f"{t}-token" for t in TENANTS}
    with FakeContactsApi(contacts=CONTACTS, tokens=tokens, page_size=20) as api:
        orphan = asyncio.run(_register(database_url, schema, keys, api.url))
        _die_holding_a_job(database_url, schema, env, orphan)
        args = [PATCHBAY, "--database-url", database_url, "--schema", schema, "run"]
        daemons = [Daemon([*args, "--config", str(config)], env) for _ in range(3)]
        try:
            for daemon in daemons:
                daemon.wait_for("patchbay daemon running", within=60)
            names = [f"sync_all:{t}" for t in TENANTS]
            _until(
                lambda: len(_rows(database_url, schema, "select 1 from {s}.schedule")) == 4,
                within=10,
                what="every tenant scheduled",
            )
            # So the test need not wait for a minute boundary to see its first fire: the
            # schedules are made due now, as if created a minute ago (a fire already made
            # this minute is not made again). The second fire is the next boundary's.
            with psycopg.connect(database_url, autocommit=True) as conn:
                conn.execute(
                    sql.SQL(
                        "update {}.schedule set next_fire_at = date_trunc('minute', now()),"
                        " revision = revision + 1 where name = any(%s)"
                    ).format(sql.Identifier(schema)),
                    (names,),
                )

            def fired_twice() -> bool:
                fires = _rows(
                    database_url,
                    schema,
                    "select schedule, count(*) as n from {s}.schedule_fire"
                    " where job_id is not null group by schedule",
                )
                return len(fires) == 4 and all(f["n"] >= 2 for f in fires)

            _until(fired_twice, within=100, what="two fires of every tenant's schedule")
            # No third fire while the test winds down (the daemons' reconciling leaves
            # next_fire_at alone: the crons did not change).
            with psycopg.connect(database_url, autocommit=True) as conn:
                conn.execute(
                    sql.SQL(
                        "update {}.schedule set next_fire_at = now() + interval '1 day',"
                        " revision = revision + 1 where name = any(%s)"
                    ).format(sql.Identifier(schema)),
                    (names,),
                )

            def all_done() -> bool:
                busy = _rows(
                    database_url,
                    schema,
                    "select 1 from {s}.job where state in ('queued', 'retrying', 'active')"
                    " and queue in ('integration.sync_all', 'contacts.contacts')",
                )
                return not busy

            _until(all_done, within=60, what="every fan-out and sync finished")

            def exported() -> bool:
                return _stream_keys(database_url, schema) <= _file_keys(tmp_path / "audit.jsonl")

            _until(exported, within=30, what="the audit stream exported to the file")
        finally:
            codes = [daemon.stop() for daemon in daemons]
    outputs = [d.output for d in daemons]
    assert codes == [0, 0, 0], outputs
    assert all(out.rstrip().endswith("stopped") for out in outputs), outputs

    # Each fire of each tenant's schedule was enqueued once: one row per fire time, each
    # with its own sync_all job, and no sync_all job that is not a fire's.
    fires = _rows(
        database_url,
        schema,
        "select schedule, fire_at, job_id from {s}.schedule_fire where schedule like 'sync_all:%%'",
    )
    fanouts = _rows(
        database_url,
        schema,
        "select id, data, state::text as state, attempt, output from {s}.job"
        " where queue = 'integration.sync_all'",
    )
    assert all(f["job_id"] is not None for f in fires)
    assert sorted(str(f["job_id"]) for f in fires) == sorted(str(j["id"]) for j in fanouts)
    for tenant in TENANTS:
        mine = [f for f in fires if f["schedule"] == f"sync_all:{tenant}"]
        assert len(mine) >= 2 and len({f["fire_at"] for f in mine}) == len(mine)
        assert len([j for j in fanouts if j["data"]["tenant"] == tenant]) == len(mine)
    assert {(j["state"], j["attempt"]) for j in fanouts} == {("completed", 1)}

    # Every integration synced, each sync job ran once and completed once.
    syncs = _rows(
        database_url,
        schema,
        "select id, data ->> 'integration' as integration, state::text as state, attempt"
        " from {s}.job where queue = 'contacts.contacts'",
    )
    synced = _rows(
        database_url,
        schema,
        "select integration_id, data from {s}.integration_event where kind = 'synced'",
    )
    assert {s["state"] for s in syncs} == {"completed"}
    assert sorted(e["data"]["job_id"] for e in synced) == sorted(str(s["id"]) for s in syncs)
    scheduled = [s for s in syncs if s["integration"] != "acme-orphan"]
    assert {s["attempt"] for s in scheduled} == {1}
    assert sum(j["output"]["sent"] for j in fanouts) == len(scheduled)
    expected = {f"{t}-{n}" for t in TENANTS for n in range(1, PER_TENANT + 1)}
    assert {s["integration"] for s in scheduled} == expected
    # A sync per integration per fire (each fire found every integration due again).
    per_tenant_fires = {
        t: len([f for f in fires if f["schedule"] == f"sync_all:{t}"]) for t in TENANTS
    }
    for integration in expected:
        runs = [s for s in scheduled if s["integration"] == integration]
        assert len(runs) == per_tenant_fires[integration.rsplit("-", 1)[0]], integration
    records = _rows(
        database_url,
        schema,
        "select integration_id, count(*) as n from {s}.connector_record group by integration_id",
    )
    assert {r["integration_id"]: r["n"] for r in records} == {
        i: CONTACTS for i in expected | {"acme-orphan"}
    }

    # The work spread over the daemons: syncs and fan-outs ran in more than one of them.
    identities = {d.identity for d in daemons}
    sync_workers = [e["data"]["worker"] for e in synced]
    assert set(sync_workers) <= identities
    assert len(set(sync_workers)) >= 2, sync_workers
    assert {j["output"]["worker"] for j in fanouts} <= identities

    # The dead process's job: its lease expired once (maintenance ran it once, in one of
    # the daemons), and it was re-run once, to completion.
    orphan_job = next(s for s in syncs if s["integration"] == "acme-orphan")
    assert str(orphan_job["id"]) == orphan and orphan_job["attempt"] == 2
    lost = _rows(
        database_url,
        schema,
        "select kind, data from {s}.job_event where job_id = %s::uuid and kind <> 'created'",
        orphan,
    )
    assert [e["kind"] for e in lost] == ["retrying"]
    assert "lease expired" in lost[0]["data"]["error"]["message"]

    # The three daemons exported the audit stream to one file, one at a time: every entry
    # is there (the expiry above among them), each line a whole entry.
    lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    assert _stream_keys(database_url, schema) <= {json.loads(line)["key"] for line in lines}
    kinds = {json.loads(line)["kind"] for line in lines}
    assert {"created", "paused", "synced", "retrying"} <= kinds


def _stream_keys(url: str, schema: str) -> set[str]:
    """The audit stream's entries now: lifecycle events, and job events of integrations'
    jobs."""
    events = _rows(url, schema, "select id from {s}.integration_event")
    jobs = _rows(
        url,
        schema,
        "select e.id from {s}.job_event e join {s}.job j on j.id = e.job_id"
        " where j.data ? 'integration'",
    )
    return {f"integration:{r['id']}" for r in events} | {f"job:{r['id']}" for r in jobs}


def _file_keys(path: Path) -> set[str]:
    if not path.exists():
        return set()
    return {json.loads(line)["key"] for line in path.read_text().splitlines() if line.strip()}


# -- SIGTERM drains ----------------------------------------------------------------------------

SLOW_PLUGIN = """
import asyncio

from patchbay.connectors import Connector, ConnectorConfig, sync


class SlowConfig(ConnectorConfig):
    seconds: float = 1.0


class Slowpoke(Connector[SlowConfig]):
    name = "slowpoke"
    version = "1.0.0"
    config_model = SlowConfig

    @sync(every="0 0 1 1 *")
    async def items(self, ctx):
        await asyncio.sleep(ctx.config.seconds)
        ctx.emit("items", [{"id": "done"}])
"""


@pytest.fixture
def slow_plugin(tmp_path: Path) -> Iterator[Path]:
    """The ``slowpoke`` connector as an installed distribution on a folder of its own
    (found by the daemon through the ``patchbay.connectors`` entry point group)."""
    root = tmp_path / "plugins"
    root.mkdir()
    (root / "slowpoke_plugin.py").write_text(SLOW_PLUGIN)
    info = root / "slowpoke_plugin-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: slowpoke-plugin\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(
        "[patchbay.connectors]\nslowpoke = slowpoke_plugin:Slowpoke\n"
    )
    sys.path.insert(0, str(root))
    try:
        yield root
    finally:
        sys.path.remove(str(root))
        sys.modules.pop("slowpoke_plugin", None)


async def _enqueue_slow_syncs(url: str, schema: str) -> dict[str, str]:
    import slowpoke_plugin

    cls = slowpoke_plugin.Slowpoke
    async with Registry(url, schema=schema, connectors={"slowpoke": cls}) as registry:
        await registry.add_tenant("acme", sync_schedule="0 0 1 1 *")  # no fan-out meanwhile
        await registry.add_integration(
            "acme-quick", tenant="acme", connector="slowpoke", config={"seconds": 1.5}
        )
        await registry.add_integration(
            "acme-stuck", tenant="acme", connector="slowpoke", config={"seconds": 600}
        )
        async with QueueClient(url, schema=schema, maintenance=False) as client:
            executor = ConnectorExecutor(client, [cls()])
            jobs = {}
            for integration in ("acme-quick", "acme-stuck"):
                (job_id,) = await registry.sync_now(integration, executor)
                jobs[integration] = str(job_id)
    return jobs


def test_sigterm_lets_short_syncs_finish_and_puts_the_rest_back(
    database_url: str,
    schema: str,
    master_key: tuple[str, LocalKeyProvider],
    slow_plugin: Path,
    tmp_path: Path,
) -> None:
    config = tmp_path / "patchbay.json"
    config.write_text(json.dumps({"poll_interval": 0.1, "shutdown_grace": 4, "notify_log": False}))
    env = _env(master_key[0], PYTHONPATH=str(slow_plugin))
    daemon = Daemon(
        [
            PATCHBAY,
            "--database-url",
            database_url,
            "--schema",
            schema,
            "run",
            "--config",
            str(config),
        ],
        env,
    )
    try:
        daemon.wait_for("patchbay daemon running", within=60)
        assert "connectors contacts, slowpoke" in daemon.output
        jobs = asyncio.run(_enqueue_slow_syncs(database_url, schema))

        def both_running() -> bool:
            active = _rows(database_url, schema, "select id from {s}.job where state = 'active'")
            return len(active) == 2

        _until(both_running, within=30, what="both syncs running")
        started = time.monotonic()
        code = daemon.stop(within=30)
        took = time.monotonic() - started
    finally:
        if daemon.proc.poll() is None:
            daemon.stop()
    assert code == 0, daemon.output
    assert "stopping: letting running jobs finish" in daemon.output
    assert daemon.output.rstrip().endswith("stopped")
    assert took < 4 + 10  # the grace, and no more than a few seconds on top

    state = {
        row["integration"]: row
        for row in _rows(
            database_url,
            schema,
            "select data ->> 'integration' as integration, id, state::text as state, attempt,"
            " started_at from {s}.job where queue = 'slowpoke.items'",
        )
    }
    # The short sync ended within the grace: completed, its records written.
    assert str(state["acme-quick"]["id"]) == jobs["acme-quick"]
    assert (state["acme-quick"]["state"], state["acme-quick"]["attempt"]) == ("completed", 1)
    # The long one was cancelled at the end of the grace and put back, its attempt unspent
    # (waiting as 'retrying' on the stately queue, as released jobs of a keyed queue do).
    stuck = state["acme-stuck"]
    assert (stuck["state"], stuck["attempt"], stuck["started_at"]) == ("retrying", 0, None)
    assert not _rows(database_url, schema, "select 1 from {s}.job where state = 'active'")
    events = _rows(
        database_url,
        schema,
        "select integration_id, kind from {s}.integration_event where kind = 'synced'",
    )
    assert events == [{"integration_id": "acme-quick", "kind": "synced"}]
    # The interrupted sync counts as no failure: the integration is as it was.
    failures = _rows(
        database_url,
        schema,
        "select consecutive_failures, status from {s}.integration where id = 'acme-stuck'",
    )
    assert failures == [{"consecutive_failures": 0, "status": "active"}]
