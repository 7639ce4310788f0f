"""What a newcomer copies must work: every ```python block of README.md runs as written, the
examples run, and the README's two set-up commands are the ones CI runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text("utf-8")


def blocks(language: str, text: str = README) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def user_env(database_url: str, schema: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PATCHBAY_")}
    env.update(
        PATCHBAY_DATABASE_URL=database_url,
        PATCHBAY_SCHEMA=schema,
        PATCHBAY_HOME=str(tmp_path / "home"),
    )
    return env


def test_readme_python_blocks_run(database_url: str, schema: str, tmp_path: Path) -> None:
    code_blocks = blocks("python")
    assert len(code_blocks) >= 2
    env = user_env(database_url, schema, tmp_path)
    outputs: list[str] = []
    # In order, in one schema: later blocks build on what earlier ones set up.
    for index, code in enumerate(code_blocks):
        script = tmp_path / f"readme_block_{index}.py"
        script.write_text(code, "utf-8")
        result = subprocess.run(
            [sys.executable, str(script)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, f"README block {index} failed:\n{code}\n{result.stderr}"
        outputs.append(result.stdout)
    assert re.fullmatch(r"job [0-9a-f-]{36} handled\n", outputs[0])


@pytest.mark.parametrize("example", sorted((REPO / "examples").glob("*.py")), ids=lambda p: p.name)
def test_examples_run(database_url: str, schema: str, tmp_path: Path, example: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(example)],
        cwd=tmp_path,
        env=user_env(database_url, schema, tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    if example.name == "queue_basics.py":
        assert result.stdout.strip() == "resized 20 images; completed jobs in the queue: 20"


def test_readme_has_two_setup_commands_and_ci_runs_the_test_one_verbatim() -> None:
    setup = README.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    commands = [block.strip() for block in blocks("sh", setup)]
    assert len(commands) == 2, commands
    run_main, run_tests = commands
    assert "\n" not in run_main and "\n" not in run_tests
    assert "patchbay run" in run_main
    ci = (REPO / ".ci" / "run").read_text("utf-8")
    assert run_tests in ci.splitlines()


def test_readme_documents_the_cli_commands() -> None:
    for command in ("patchbay migrate", "patchbay queues", "patchbay jobs list", "jobs show"):
        assert command in README
    assert (REPO / "docs" / "job-states.md").is_file()


def test_job_states_doc_matches_the_code() -> None:
    from patchbay.queue import JobState

    doc = (REPO / "docs" / "job-states.md").read_text("utf-8")
    states_table = doc.split("## States", 1)[1].split("## Transitions", 1)[0]
    listed = set(re.findall(r"^\| `(\w+)` \|", states_table, flags=re.MULTILINE))
    assert listed == {s.value for s in JobState}
    enum = re.search(r"create type job_state as enum \(([^)]*)\)", _migrations())
    assert enum is not None
    assert set(re.findall(r"'(\w+)'", enum[1])) == listed
    # Every statement the page names exists, so the table cannot drift from the SQL.
    named = set(re.findall(r"`((?:job|queue)_[a-z_]+)`", doc))
    sql_names = set(
        re.findall(
            r"^-- name: (\w+)",
            "\n".join(p.read_text("utf-8") for p in _sql_files()),
            flags=re.MULTILINE,
        )
    )
    functions = set(re.findall(r"create function (\w+)", _migrations()))
    assert named, "no statements named"
    assert named - {"job_state"} <= sql_names | functions, named - sql_names - functions


def _migrations() -> str:
    return "\n".join(p.read_text("utf-8") for p in sorted((REPO / "migrations").glob("*.sql")))


def _sql_files() -> list[Path]:
    return sorted((REPO / "queue" / "patchbay" / "queue" / "sql").glob("*.sql"))
