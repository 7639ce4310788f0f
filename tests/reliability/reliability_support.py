"""Shared machinery of the reliability tests: sizes, worker processes, run logs, and a
throwaway Postgres cluster a test may stop, restart and crash.

Sizes: the short version runs by default (CI); ``PATCHBAY_RELIABILITY=long`` selects the
issue's full numbers. :func:`pick` chooses between them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from patchbay.queue import QueueClient, migrate_sync

HERE = Path(__file__).resolve().parent
LONG = os.environ.get("PATCHBAY_RELIABILITY", "short").strip().lower() == "long"
SIZE = "long" if LONG else "short"
PG_BIN = Path(os.environ.get("PATCHBAY_PG_BIN", "/usr/lib/postgresql/15/bin"))


def pick(short: Any, long: Any) -> Any:
    """The short figure, or the long one under ``PATCHBAY_RELIABILITY=long``."""
    return long if LONG else short


def query(url: str, schema: str, text: str, params: Any = None) -> list[tuple[Any, ...]]:
    """Run ``text`` (``{s}`` is the schema) on a new connection; return its rows."""
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(sql.SQL(text).format(s=sql.Identifier(schema)), params)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100) by nearest rank, or None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


# -- worker processes ------------------------------------------------------------------


class WorkerProcess:
    """One ``worker_process.py`` subprocess with its own QueueClient."""

    def __init__(self, workdir: Path, **options: Any) -> None:
        self.name = options.pop("name", f"w{uuid.uuid4().hex[:6]}")
        self.runs_dir = workdir
        self.status_file = workdir / f"status-{self.name}.json"
        self.log_file = workdir / f"log-{self.name}.txt"
        options.update(runs_dir=str(workdir), status_file=str(self.status_file))
        options.setdefault("application_name", f"reliability-{self.name}")
        self.options = options
        with open(self.log_file, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(HERE / "worker_process.py"), json.dumps(options)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=HERE,
            )
        self.pid = self.proc.pid
        self.killed_at: float | None = None

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        os.kill(self.pid, sig)

    def kill(self) -> float:
        """SIGKILL; returns the time of the kill (after the process is gone)."""
        os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.killed_at = time.time()
        return self.killed_at

    def status(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.status_file.read_text()))
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def log_lines(self) -> list[str]:
        return self.log_file.read_text(errors="replace").splitlines()

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM and wait; returns the exit code (SIGKILL after ``timeout``)."""
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGCONT)
                os.kill(self.pid, signal.SIGTERM)
            try:
                return self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def wait_for(predicate: Any, within: float, what: str, step: float = 0.05) -> float:
    """Poll ``predicate`` until true; returns the seconds waited, or fails after ``within``."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > within:
            raise AssertionError(f"{what}: not reached within {within}s")
        time.sleep(step)
    return time.monotonic() - start


@dataclass
class Run:
    """One handler call as the worker logged it."""

    job: str
    attempt: int
    pid: int
    start: float
    end: float | None = None


@dataclass
class Runs:
    """Every handler call of a test, by job."""

    by_job: dict[str, list[Run]] = field(default_factory=lambda: defaultdict(list))

    @classmethod
    def read(cls, workdir: Path) -> Runs:
        calls: dict[tuple[str, int, int], Run] = {}
        for path in sorted(workdir.glob("runs-*.jsonl")):
            for line in path.read_text().splitlines():
                if not line.strip():
                    continue
                ev = json.loads(line)
                key = (ev["job"], ev["attempt"], ev["pid"])
                if ev["ev"] == "start":
                    calls[key] = Run(ev["job"], ev["attempt"], ev["pid"], ev["t"])
                elif key in calls:
                    calls[key].end = ev["t"]
        runs = cls()
        for run in sorted(calls.values(), key=lambda r: r.start):
            runs.by_job[run.job].append(run)
        return runs

    def all(self) -> list[Run]:
        return [r for runs in self.by_job.values() for r in runs]


# -- a Postgres cluster the test owns ----------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres() -> list[str]:
    """Postgres refuses to run as root: run its binaries as the ``postgres`` user then."""
    if os.geteuid() != 0:
        return []
    runuser = shutil.which("runuser")
    if runuser is None:
        raise RuntimeError("running as root and runuser is missing: cannot start Postgres")
    return [runuser, "-u", "postgres", "--"]


class PgCluster:
    """A throwaway cluster (``initdb`` in a temp dir, a free port) a test may break.

    fsync is off: the tests crash Postgres (``-m immediate``), never the machine, and
    committed transactions survive a process crash without it (WAL is in the page cache).
    """

    def __init__(self) -> None:
        if not (PG_BIN / "initdb").exists():
            raise RuntimeError(f"no PostgreSQL binaries in {PG_BIN} (set PATCHBAY_PG_BIN)")
        self.dir = Path(tempfile.mkdtemp(prefix="patchbay-pg-"))
        self.data = self.dir / "data"
        self.logfile = self.dir / "postgres.log"
        self.port = 0
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run(
            "initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
            "--no-sync", "--no-instructions",
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres?connect_timeout=5"

    def _run(self, tool: str, *args: str, timeout: float = 120) -> None:
        cmd = [*_as_postgres(), str(PG_BIN / tool), *args]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(
                f"{tool} failed ({result.returncode}): {result.stdout}{result.stderr}\n"
                f"{self.log_tail()}"
            )

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def start(self) -> float:
        """Start (on a new free port the first time); returns when it accepts connections."""
        for attempt in range(5):
            if not self.port or attempt:
                self.port = free_port()
            options = (
                f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
                " -c full_page_writes=off -c max_connections=200 -c log_min_messages=warning"
            )
            try:
                self._run("pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-o",
                          options, "-w", "-t", "60", "start")  # fmt: skip
                return time.time()
            except RuntimeError:
                if attempt == 4:
                    raise
        raise AssertionError("unreachable")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self, mode: str) -> float:
        """``pg_ctl restart -m <mode>``; returns the time it accepts connections again."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-m", mode,
                  "-w", "-t", "60", "restart")  # fmt: skip
        return time.time()

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


def new_schema(url: str) -> str:
    name = f"r_{uuid.uuid4().hex[:16]}"
    migrate_sync(url, name)
    return name


def drop_schema(url: str, name: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(name)))


def create_queue(url: str, schema: str, name: str, **settings: Any) -> None:
    """Create a queue (callable from sync and async tests: it runs in a thread)."""

    async def create() -> None:
        async with QueueClient(url, schema=schema, maintenance=False) as client:
            await client.create_queue(name, **settings)

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, create()).result()


def job_counts(url: str, schema: str, queue: str) -> dict[str, int]:
    """Jobs of ``queue`` by state."""
    text = "select state::text, count(*) from {s}.job where queue = %s group by 1"
    rows = query(url, schema, text, (queue,))
    return {state: int(n) for state, n in rows}
