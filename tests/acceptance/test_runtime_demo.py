"""The README's main command runs the whole runtime demo: syncs, a revoked token, the
integration needing attention and the notification received."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

PATCHBAY = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "patchbay")


@pytest.fixture
def demo_schema(database_url: str) -> str:
    name = "demo_acceptance"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(name)))
    return name


@pytest.mark.skipif(not Path(PATCHBAY).exists(), reason="needs the project's .venv")
def test_runtime_demo_tells_the_story(database_url: str, demo_schema: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PATCHBAY_MASTER_KEY")}
    env["PATCHBAY_HOME"] = str(tmp_path)
    result = subprocess.run(
        [
            PATCHBAY,
            "--database-url",
            database_url,
            "--schema",
            demo_schema,
            "run",
            "--demo",
            "--duration",
            "20",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    out = result.stdout
    assert result.returncode == 0, result.stderr
    assert "acme: 2 sync job(s) sent" in out
    assert "records=300" in out
    assert (
        "notification received: [OPEN] integration globex-crm of tenant globex needs "
        "attention: AuthError" in out
    )
    assert "globex-crm   needs_attention" in out
    assert out.rstrip().endswith("done: 1 notification(s) received")
    # Development mode put its key file in PATCHBAY_HOME, and no token reached the output.
    assert (tmp_path / "master.keys").exists()
    assert "-token-" not in out and "-token-" not in result.stderr
