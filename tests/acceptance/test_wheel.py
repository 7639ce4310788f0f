"""One install gives every room and the ``patchbay`` command, as a built wheel in a clean
virtual environment: build it, install it in a fresh venv, run ``patchbay --help`` and
``patchbay migrate`` against the test database, and check the steps really applied.

Slow (about a minute: the build and the install fetch their dependencies), but part of the
full suite."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from patchbay.queue.migrate import applied_migrations, available_migrations

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def fresh_schema(database_url: str) -> Iterator[str]:
    name = f"whl_{uuid.uuid4().hex[:16]}"
    yield name
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(name)))


def run(*cmd: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_wheel_installs_in_a_fresh_venv_and_migrates(
    tmp_path: Path, database_url: str, fresh_schema: str
) -> None:
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "build", "--wheel", "--outdir", dist, REPO, cwd=tmp_path)
    (wheel,) = dist.glob("patchbay-*.whl")

    names = zipfile.ZipFile(wheel).namelist()
    assert not [n for n in names if n.split("/")[0] in ("queue", "secrets", "queue.py")]
    for room in ("queue", "secrets", "connectors", "runtime"):
        assert f"patchbay/{room}/__init__.py" in names
    assert "patchbay/__init__.py" not in names  # a namespace package, as in the checkout
    migrations = {m.version: m for m in available_migrations()}
    for m in migrations.values():
        assert f"patchbay/queue/_migrations/{m.version:04d}_{m.name}.sql" in names
    assert "patchbay/queue/sql/job.sql" in names

    venv = tmp_path / "venv"
    run("python3", "-m", "venv", venv, cwd=tmp_path)
    bin_dir = venv / "bin"
    run(bin_dir / "python", "-m", "pip", "install", "--quiet", wheel, cwd=tmp_path)

    # A user's shell: outside the checkout, no patchbay variables, a private data folder.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PATCHBAY_")}
    env.pop("PYTHONPATH", None)
    env["PATCHBAY_HOME"] = str(tmp_path / "home")
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()

    assert "migrate" in run(bin_dir / "patchbay", "--help", cwd=workdir, env=env)
    where = run(
        bin_dir / "python",
        "-c",
        "import patchbay.queue, patchbay.runtime, queue, secrets;"
        "print(patchbay.queue.__file__); print(queue.__file__); print(secrets.__file__)",
        cwd=workdir,
        env=env,
    ).splitlines()
    assert Path(where[0]).is_relative_to(venv)  # the wheel's copy, not the checkout
    assert all(not Path(p).is_relative_to(venv) for p in where[1:])  # the stdlib's

    out = run(
        bin_dir / "patchbay",
        "--database-url",
        database_url,
        "--schema",
        fresh_schema,
        "migrate",
        cwd=workdir,
        env=env,
    )
    assert out.splitlines() == [f"applied {v:04d}_{m.name}" for v, m in sorted(migrations.items())]
    recorded = applied_migrations(database_url, fresh_schema)
    assert recorded == [(m.version, m.name, m.checksum) for _, m in sorted(migrations.items())]
    with psycopg.connect(database_url) as conn:
        tables = {
            row[0]
            for row in conn.execute(
                "select table_name from information_schema.tables where table_schema = %s",
                (fresh_schema,),
            )
        }
    assert {"job", "queue", "schema_migration"} <= tables
