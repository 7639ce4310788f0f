"""``patchbay secrets ...`` as a user runs it: the real command in a subprocess, against the
test database. Values go in through stdin or a no-echo prompt and never come out."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from patchbay.secrets import (
    LocalKeyProvider,
    Vault,
    format_master_key,
    generate_master_key,
    parse_master_keys,
)

PATCHBAY = str(Path(sys.executable).parent / "patchbay")
K1 = format_master_key(generate_master_key("k1"))
K2 = format_master_key(generate_master_key("k2"))
VALUE = "xoxb-cli-Secret-Value-81"


class Cli:
    def __init__(self, url: str, schema: str, home: Path) -> None:
        self.base = [PATCHBAY, "--database-url", url, "--schema", schema, "secrets"]
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PATCHBAY_")}
        self.env["PATCHBAY_HOME"] = str(home)
        self.env["PATCHBAY_MASTER_KEYS"] = K1

    def __call__(
        self, *args: str, stdin: str = "", ok: bool = True, keys: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        env = dict(self.env)
        if keys is not None:
            env["PATCHBAY_MASTER_KEYS"] = keys
        if not env["PATCHBAY_MASTER_KEYS"]:
            del env["PATCHBAY_MASTER_KEYS"]
        result = subprocess.run(
            [*self.base, *args], input=stdin, capture_output=True, text=True, env=env, timeout=60
        )
        assert VALUE not in result.stdout + result.stderr, "a value was printed"
        assert (result.returncode == 0) == ok, result.stdout + result.stderr
        return result


@pytest.fixture
def cli(database_url: str, schema: str, tmp_path: Path) -> Cli:
    return Cli(database_url, schema, tmp_path / "home")


def test_put_from_stdin_list_and_delete(cli: Cli, database_url: str, schema: str) -> None:
    assert cli("put", "acme", "crm/token", stdin=VALUE + "\n").stdout == (
        "stored secret://acme/crm/token@1\n"
    )
    stored = json.loads(cli("put", "acme", "crm/token", "--json", stdin=VALUE + "2\r\n").stdout)
    assert stored["version"] == 2 and stored["ref"] == "secret://acme/crm/token@2"
    cli("put", "globex", "erp/key", stdin="other")

    listing = json.loads(cli("list", "--json").stdout)
    assert [(e["tenant"], e["name"], e["versions"]) for e in listing] == [
        ("acme", "crm/token", [1, 2]),
        ("globex", "erp/key", [1]),
    ]
    table = cli("list", "acme").stdout
    assert "crm/token" in table and "1,2" in table and "globex" not in table

    async def read() -> tuple[str, str]:
        keys = LocalKeyProvider(parse_master_keys(K1, source="test"))
        async with Vault(database_url, schema=schema, keys=keys) as vault:
            # Exactly what was piped, less one trailing newline (\n or \r\n).
            return (await vault.get("acme", "crm/token", 1)).value, (
                await vault.get("acme", "crm/token")
            ).value

    assert asyncio.run(read()) == (VALUE, VALUE + "2")

    assert cli("delete", "acme", "crm/token", "--version", "1").stdout.startswith("deleted")
    missing = cli("delete", "acme", "crm/token", "--version", "1", ok=False)
    assert "no secret secret://acme/crm/token@1" in missing.stderr
    cli("delete", "acme", "crm/token")
    assert [e["name"] for e in json.loads(cli("list", "--json").stdout)] == ["erp/key"]


def test_a_value_on_the_command_line_is_refused_without_echo(cli: Cli) -> None:
    result = cli("put", "acme", "crm/token", VALUE, ok=False)
    assert "refusing a secret value given as an argument" in result.stderr
    assert json.loads(cli("list", "--json").stdout) == []


def test_bad_input_is_an_error_and_writes_nothing(cli: Cli) -> None:
    assert "no value given" in cli("put", "acme", "t", stdin="", ok=False).stderr
    assert "invalid tenant" in cli("put", "ac me", "t", stdin="v", ok=False).stderr
    no_key = cli("put", "acme", "t", stdin=VALUE, keys="", ok=False)
    assert "PATCHBAY_MASTER_KEYS" in no_key.stderr and "Traceback" not in no_key.stderr
    bad_key = cli("put", "acme", "t", stdin=VALUE, keys="k1:tooshort", ok=False)
    assert "not valid base64" in bad_key.stderr or "32 bytes" in bad_key.stderr
    assert json.loads(cli("list", "--json").stdout) == []


def test_unmigrated_schema_says_to_migrate(database_url: str, tmp_path: Path) -> None:
    cli = Cli(database_url, "s_not_migrated_cli", tmp_path)
    assert "patchbay migrate" in cli("list", ok=False).stderr


def test_rotate_master_key_reports_progress_and_completion(
    cli: Cli, database_url: str, schema: str
) -> None:
    for tenant in ("t1", "t2", "t3"):
        cli("put", tenant, "token", stdin=f"{VALUE}-{tenant}")
    both = f"{K2},{K1}"
    result = cli("rotate-master-key", "--batch-size", "2", keys=both)
    assert "re-wrapped 2/3 data key(s) with k2" in result.stderr
    assert "re-wrapped 3/3 data key(s) with k2" in result.stderr
    assert "every data key is wrapped by k2; k1 may now be removed" in result.stdout
    report = json.loads(cli("rotate-master-key", "--json", keys=both).stdout)
    assert report == {
        "target_key_id": "k2",
        "rewrapped": 0,
        "remaining": 0,
        "complete": True,
        "failed": [],
        "usage": {"k2": 3},
    }

    async def read() -> str:
        keys = LocalKeyProvider(parse_master_keys(K2, source="test"))
        async with Vault(database_url, schema=schema, keys=keys) as vault:
            return (await vault.get("t2", "token")).value

    assert asyncio.run(read()) == f"{VALUE}-t2"
    # Only the old key configured: reading fails with a clear, typed message.
    assert "not configured" in cli("put", "t1", "token", stdin="x", keys=K1, ok=False).stderr


def test_shred_tenant_needs_confirmation(cli: Cli) -> None:
    cli("put", "doomed", "a", stdin="v1")
    cli("put", "doomed", "b", stdin="v2")
    cli("put", "kept", "a", stdin="v3")
    assert "--yes" in cli("shred-tenant", "doomed", ok=False).stderr
    assert len(json.loads(cli("list", "--json").stdout)) == 3
    report = json.loads(cli("shred-tenant", "doomed", "--yes", "--json").stdout)
    assert report == {"tenant": "doomed", "data_keys": 1, "secrets": 2, "versions": 2}
    assert [e["tenant"] for e in json.loads(cli("list", "--json").stdout)] == ["kept"]
    assert "nothing to shred" in cli("shred-tenant", "doomed", "--yes").stdout


def test_new_master_key_prints_a_usable_line(cli: Cli) -> None:
    result = cli("new-master-key", "--id", "k2025")
    [key] = parse_master_keys(result.stdout, source="output")
    assert key.id == "k2025" and len(key.material) == 32
    assert "rotate-master-key" in result.stderr
    assert "invalid master key id" in cli("new-master-key", "--id", "bad id", ok=False).stderr


def test_put_prompts_without_echo_on_a_terminal(cli: Cli, database_url: str, schema: str) -> None:
    pid, fd = pty.fork()
    if pid == 0:  # the child: the command, with the pty as its terminal
        os.execve(PATCHBAY, [*cli.base, "put", "acme", "typed"], cli.env)
    output = b""
    typed = False
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 1024)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
        if not typed and b"value of secret://acme/typed: " in output:
            os.write(fd, VALUE.encode() + b"\n")
            typed = True
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    text = output.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert typed and "stored secret://acme/typed@1" in text
    assert VALUE not in text  # not echoed

    async def read() -> str:
        keys = LocalKeyProvider(parse_master_keys(K1, source="test"))
        async with Vault(database_url, schema=schema, keys=keys) as vault:
            return (await vault.get("acme", "typed")).value

    assert asyncio.run(read()) == VALUE
