"""examples/poc runs the one-day evaluation end to end and tells what happened: a cron
fire fanning out a sync that fails once and is retried, a webhook sent in a business
transaction and retried, a revoked token turning the integration needs_attention with one
notification, and the audit stream read back and exported."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

POC = Path(__file__).resolve().parents[2] / "examples" / "poc" / "poc.py"


@pytest.mark.slow
def test_the_proof_of_concept_tells_the_whole_story(database_url: str, tmp_path: Path) -> None:
    schema = f"poc_{uuid.uuid4().hex[:12]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PATCHBAY_MASTER_KEY")}
    env |= {
        "PATCHBAY_HOME": str(tmp_path),
        "PATCHBAY_DATABASE_URL": database_url,
        "PATCHBAY_POC_SCHEMA": schema,
    }
    try:
        # Up to a minute waiting for the cron fire, then ~15 s of story.
        result = subprocess.run(
            [sys.executable, str(POC)],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=240,
        )
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(schema)))
    out = result.stdout
    assert result.returncode == 0, f"{out}\n{result.stderr}"
    assert re.search(r"scheduled sync: fired by cron, failed with 500, retried after \d", out)
    assert "active -> retrying  patchbay.connectors.errors.RequestFailed" in out
    assert "a transaction that rolled back sent nothing: 0 message(s)" in out
    assert re.search(r"attempt 1 at [\d:]+: HTTP 503; next attempt", out)
    assert re.search(r"attempt 2 at [\d:]+: HTTP 200", out)
    assert "signature valid: True" in out
    assert "acme-crm is now 'needs_attention'" in out
    assert "team chat received: [OPEN] integration acme-crm of tenant acme needs attention" in out
    assert " - revoked token: acme-crm needs_attention, 1 notification" in out
    entries = int(re.search(r"audit stream: (\d+) entries", out).group(1))  # type: ignore[union-attr]
    exported = int(re.search(r"audit export: (\d+) JSON lines", out).group(1))  # type: ignore[union-attr]
    assert entries >= 10 and exported >= entries
    # The token was put in the vault and referenced; its value never reached the output.
    assert "acme-token-" not in out and "acme-token-" not in result.stderr
