"""The checkout's layout: rooms share the ``patchbay`` namespace, nothing shadows the
standard library, and imports point one way (runtime -> connectors -> queue, secrets)."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ROOMS = ("queue", "secrets", "connectors", "runtime")
VENV_BIN = Path(sys.executable).parent


@pytest.mark.smoke
def test_stdlib_queue_and_secrets_are_not_shadowed_from_the_repository_root() -> None:
    probe = (
        "import json, queue, secrets, sys;"
        "print(json.dumps({'queue': queue.__file__, 'secrets': secrets.__file__,"
        " 'Queue': hasattr(queue, 'Queue'), 'token_hex': hasattr(secrets, 'token_hex'),"
        " 'path0': sys.path[0]}))"
    )
    # cwd=REPO and -c put the repository root first on sys.path, as a user's shell would.
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    found = json.loads(out.stdout)
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    assert found["path0"] == ""  # the repository root really was searched first
    for name in ("queue", "secrets"):
        assert found[name] is not None, f"{name} resolved to a namespace package"
        assert Path(found[name]).resolve().parent == stdlib, found[name]
    assert found["Queue"] and found["token_hex"]


def test_no_top_level_package_named_like_a_stdlib_module() -> None:
    for name in ("queue", "secrets"):
        assert not (REPO / name / "__init__.py").exists()
        assert not (REPO / f"{name}.py").exists()


def test_rooms_share_the_patchbay_namespace() -> None:
    # An __init__.py in any room's patchbay/ would hide the other rooms' subpackages.
    for room in ROOMS:
        assert (REPO / room / "patchbay" / room / "__init__.py").is_file()
        assert not (REPO / room / "patchbay" / "__init__.py").exists(), room
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import patchbay.queue, patchbay.secrets, patchbay.connectors, patchbay.runtime;"
            "import json, patchbay; print(json.dumps(list(patchbay.__path__)))",
        ],
        cwd=REPO / "tests",
        capture_output=True,
        text=True,
        check=True,
    )
    portions = {Path(p).resolve() for p in json.loads(out.stdout)}
    assert {(REPO / room / "patchbay").resolve() for room in ROOMS} <= portions


def test_import_layers_contract_holds() -> None:
    result = subprocess.run(
        [str(VENV_BIN / "lint-imports"), "--no-cache"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout, result.stdout
