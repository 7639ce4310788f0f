"""``patchbay connectors list|run|check`` as a user runs them: the real command in a
subprocess, the example plugin installed, the fake contacts API serving over HTTP. Also
the fake API's own command, which the example's README demo starts."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from patchbay_example_contacts.fake_api import FakeContactsApi

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PATCHBAY = str(BIN / "patchbay")
TOKEN = "tok_cli_51c3d9e8a0"
REF = "secret://local/contacts/token"


@pytest.fixture
def api() -> Iterator[FakeContactsApi]:
    with FakeContactsApi(contacts=60, tokens={TOKEN}, page_size=25) as server:
        yield server


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A user's shell: no database settings (these commands need none)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PATCHBAY_")}
    clean["PATCHBAY_HOME"] = str(tmp_path / "home")
    return clean


class Files:
    def __init__(self, folder: Path, api: FakeContactsApi) -> None:
        self.folder = folder
        self.config = self.write("config.json", {"base_url": api.url, "token": REF})
        self.secrets = self.write("secrets.json", {REF: TOKEN})

    def write(self, name: str, value: Any) -> Path:
        path = self.folder / name
        path.write_text(json.dumps(value), "utf-8")
        return path


@pytest.fixture
def files(tmp_path: Path, api: FakeContactsApi) -> Files:
    return Files(tmp_path, api)


def patchbay(
    env: dict[str, str], *args: str | Path, code: int = 0
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [PATCHBAY, *map(str, args)], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    if code:
        assert result.stdout == ""
    return result


def run_contacts(env: dict[str, str], files: Files, *extra: str | Path, code: int = 0) -> Any:
    return patchbay(
        env,
        *("connectors", "run", "contacts", "contacts"),
        *("--config", files.config, "--secrets", files.secrets),
        *extra,
        code=code,
    )


def test_list_shows_the_installed_plugin(env: dict[str, str]) -> None:
    listed = json.loads(patchbay(env, "connectors", "list", "--json").stdout)
    [contacts] = [c for c in listed if c["name"] == "contacts"]
    assert contacts["version"] == "0.2.0"
    assert contacts["class"] == "patchbay_example_contacts.connector:ContactsConnector"
    kinds = {j["name"]: (j["kind"], j["every"], j["window_s"]) for j in contacts["job_types"]}
    assert kinds == {
        "contacts": ("sync", "*/15 * * * *", None),
        "contacts_history": ("backfill", None, 86400.0),
    }
    schema = contacts["config_schema"]
    assert schema["properties"]["token"]["format"] == "secret-ref"
    assert schema["required"] == ["base_url", "token"]

    text = patchbay(env, "connectors", "list").stdout
    assert "contacts 0.2.0" in text
    assert "contacts_history  backfill" in text and "1d" in text
    assert "token         secret-ref" in text


def test_run_prints_records_and_state_then_resumes_from_a_state_file(
    env: dict[str, str], files: Files, api: FakeContactsApi
) -> None:
    state_file = files.folder / "state.json"
    first = json.loads(run_contacts(env, files, "--json", "--state-out", state_file).stdout)
    contacts = api.contacts()
    assert [r["id"] for r in first["records"]["contacts"]] == [c["id"] for c in contacts]
    last = {"updated_after": contacts[-1]["updated_at"], "after_id": contacts[-1]["id"]}
    assert first["state"] == last
    # One page of up to 100 (the config's default page size), one checkpoint after it and
    # one at the end.
    assert first["stats"] == {"records": {"contacts": 60}, "checkpoints": 2, "http_requests": 1}
    assert json.loads(state_file.read_text("utf-8")) == last

    new = api.add_contacts(2)
    second = run_contacts(env, files, "--state", state_file).stdout.splitlines()
    assert [json.loads(line.split("\t", 1)[1])["id"] for line in second[:2]] == [
        c["id"] for c in new
    ]
    assert all(line.startswith("contacts\t") for line in second[:2])
    assert second[2] == "2 record(s) (contacts: 2), 2 checkpoint(s), 1 HTTP request(s)"
    assert json.loads(second[3].removeprefix("state: "))["after_id"] == new[-1]["id"]
    assert api.log[-1].query["after_id"] == contacts[-1]["id"]


def test_run_a_backfill_over_a_range(env: dict[str, str], files: Files) -> None:
    result = patchbay(
        env,
        *("connectors", "run", "contacts", "contacts_history"),
        *("--config", files.config, "--secrets", files.secrets),
        *("--since", "2024-01-02", "--until", "2024-01-04T12:00:00+00:00", "--json"),
    )
    out = json.loads(result.stdout)
    stamps = [r["updated_at"] for r in out["records"]["contacts"]]
    assert stamps and all("2024-01-02" <= s < "2024-01-04T12" for s in stamps)
    assert out["stats"]["records"] == {"contacts": len(stamps)}

    needs_range = patchbay(
        env,
        *("connectors", "run", "contacts", "contacts_history"),
        *("--config", files.config, "--secrets", files.secrets),
        code=1,
    )
    assert "give --since and --until" in needs_range.stderr
    no_range = run_contacts(env, files, "--since", "2024-01-02", code=1)
    assert "only backfills take --since/--until" in no_range.stderr


def test_check_accepts_the_token_and_reports_a_revoked_one(
    env: dict[str, str], files: Files, api: FakeContactsApi
) -> None:
    base = ("connectors", "check", "contacts", "--config", files.config)
    ok = patchbay(env, *base, "--secrets", files.secrets)
    assert ok.stdout == "ok: contacts accepted the config and its credentials\n"
    api.revoke(TOKEN)
    failed = patchbay(env, *base, "--secrets", files.secrets, code=1)
    assert "AuthError" in failed.stderr and "401" in failed.stderr
    assert "Traceback" not in failed.stderr


def test_errors_are_one_clear_line_and_never_show_the_token(
    env: dict[str, str], files: Files, api: FakeContactsApi
) -> None:
    no_secret = patchbay(
        env, "connectors", "run", "contacts", "contacts", "--config", files.config, code=1
    )
    assert f"no value for {REF}: add it to the --secrets file" in no_secret.stderr

    api.fail(429, retry_after=30)
    limited = run_contacts(env, files, code=1)
    assert "rate limited by the provider" in limited.stderr and "30s" in limited.stderr

    api.revoke(TOKEN)
    revoked = run_contacts(env, files, code=1)
    assert "AuthError" in revoked.stderr

    pasted = files.write("pasted.json", {"base_url": api.url, "token": TOKEN})
    bad = patchbay(
        env,
        *("connectors", "run", "contacts", "contacts", "--config", pasted),
        *("--secrets", files.secrets),
        code=1,
    )
    assert "invalid config for contacts: token: Value error, must be a secret ref" in bad.stderr

    for result in (no_secret, limited, revoked, bad):
        assert TOKEN not in result.stderr
        assert "Traceback" not in result.stderr
    unknown = patchbay(env, "connectors", "run", "nope", "x", "--config", files.config, code=1)
    assert "no connector named 'nope'" in unknown.stderr
    no_job = patchbay(
        env, "connectors", "run", "contacts", "nope", "--config", files.config, code=1
    )
    assert "has no job type 'nope'" in no_job.stderr
    (files.folder / "broken.json").write_text("{", "utf-8")
    broken = patchbay(
        env,
        *("connectors", "run", "contacts", "contacts"),
        *("--config", files.folder / "broken.json"),
        code=1,
    )
    assert "is not valid JSON" in broken.stderr


LEAKY = """
from patchbay.connectors import sync
from patchbay_example_contacts import ContactsConnector


class Leaky(ContactsConnector):
    name = "leaky"

    @sync()
    async def contacts(self, ctx):
        token = await ctx.secret(ctx.config.token)
        ctx.log.warning("using token %s", token)
        raise RuntimeError(f"unexpected: {token}")
"""


def test_a_connector_that_leaks_its_token_is_scrubbed(
    env: dict[str, str], files: Files, tmp_path: Path
) -> None:
    (tmp_path / "leaky_connector.py").write_text(LEAKY, "utf-8")
    env["PYTHONPATH"] = str(tmp_path)
    result = patchbay(
        env,
        *("connectors", "run", "leaky_connector:Leaky", "contacts"),
        *("--config", files.config, "--secrets", files.secrets),
        code=1,
    )
    assert TOKEN not in result.stderr
    assert "using token [REDACTED]" in result.stderr
    assert "Traceback" in result.stderr  # an author's bug gets its traceback, scrubbed
    assert "the connector raised RuntimeError: unexpected: [REDACTED]" in result.stderr


def test_the_fake_api_command_serves_and_prints_its_url() -> None:
    command = [sys.executable, "-m", "patchbay_example_contacts.fake_api", "--port", "0"]
    process = subprocess.Popen(
        [*command, "--contacts", "5", "--token", "demo-token"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        body = httpx.get(
            f"{url}/v1/contacts", headers={"Authorization": "Bearer demo-token"}, timeout=10
        ).json()
        assert len(body["data"]) == 5
        assert httpx.get(f"{url}/_admin/stats", timeout=10).json()["requests"] == 1
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_example_readme_script_runs_as_written(
    database_url: str, schema: str, tmp_path: Path, env: dict[str, str]
) -> None:
    readme = (REPO / "examples" / "contacts" / "README.md").read_text("utf-8")
    [script] = re.findall(r"^```python\n(.*?)^```", readme, flags=re.MULTILINE | re.DOTALL)
    (tmp_path / "queue_demo.py").write_text(script, "utf-8")
    # As the README's fake API command serves it: 250 contacts over January, demo-token.
    with FakeContactsApi(contacts=250, tokens={"demo-token"}) as api:
        env.update(
            PATCHBAY_DATABASE_URL=database_url, PATCHBAY_SCHEMA=schema, CONTACTS_API_URL=api.url
        )
        result = subprocess.run(
            [sys.executable, "queue_demo.py"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "sync: {'contacts': 250}\nbackfill: 7 of 7 days\n"
    assert "demo-token" not in result.stderr
