"""With no database URL, the ``patchbay`` command starts a real embedded Postgres in
``$PATCHBAY_HOME/postgres``, says where it is, and reuses it on the next run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

PATCHBAY = str(Path(sys.executable).parent / "patchbay")


@pytest.fixture
def home() -> Iterator[Path]:
    # Short: the server's Unix socket lives in its data folder, and socket paths are
    # limited to about 100 bytes.
    folder = Path(tempfile.mkdtemp(prefix="pbh-"))
    yield folder
    pid_file = folder / "postgres" / "postmaster.pid"
    if pid_file.exists():
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, signal.SIGINT)  # the server this test started: fast shutdown
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_without_a_url_an_embedded_postgres_is_started_and_reused(home: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PATCHBAY_")}
    env["PATCHBAY_HOME"] = str(home)
    folder = (home / "postgres").resolve()

    def patchbay(*args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [PATCHBAY, *args], capture_output=True, text=True, env=env, timeout=120, cwd=home
        )
        assert result.returncode == 0, result.stderr
        return result

    first = patchbay("run", "--demo", "queue", "--duration", "1")
    assert f"using the embedded Postgres in {folder}" in first.stderr
    assert "done: sent" in first.stdout
    pid = (folder / "postmaster.pid").read_text().split()[0]

    second = patchbay("queues", "--json")
    assert f"using the embedded Postgres in {folder}" in second.stderr
    (stats,) = json.loads(second.stdout)
    assert stats["queue"] == "example.greetings" and stats["completed"] >= 1  # same data
    assert (folder / "postmaster.pid").read_text().split()[0] == pid  # same server
