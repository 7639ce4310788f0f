"""scripts/local_stack.py runs compose.yaml's processes without a container engine: one
migration, then two ``patchbay run`` daemons on one database, stopped gracefully."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_local_stack_runs_two_daemons_on_one_database(
    database_url: str, tmp_path: Path
) -> None:
    schema = f"stack_{uuid.uuid4().hex[:12]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PATCHBAY_")}
    env |= {
        "PATCHBAY_DATABASE_URL": database_url,
        "PATCHBAY_SCHEMA": schema,
        "PATCHBAY_HOME": str(tmp_path),
    }
    try:
        result = subprocess.run(
            [sys.executable, str(REPO / "scripts" / "local_stack.py"), "--duration", "8"],
            capture_output=True,
            text=True,
            env=env,
            timeout=180,
        )
        with psycopg.connect(database_url) as conn:
            applied = conn.execute(
                sql.SQL("select count(*) from {}.schema_migration").format(sql.Identifier(schema))
            ).fetchone()
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(schema)))
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert applied is not None and applied[0] == len(list((REPO / "migrations").glob("*.sql")))
    for name in ("daemon-1", "daemon-2"):
        assert f"{name}  | patchbay daemon running" in out
        assert f"{name}  | stopped" in out
        assert f"stack     | {name} exited 0" in out
    # Both daemons shared the one development key file, created once.
    assert out.count("created master key file") <= 1
    assert (tmp_path / "master.keys").exists()
