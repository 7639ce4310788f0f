"""docs/configuration.md is generated from the settings model and kept current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_configuration_reference_is_current() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "config_reference.py"), "--check"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_setting_is_in_the_reference_with_its_variable() -> None:
    from patchbay.runtime.settings import DaemonSettings

    text = (REPO / "docs" / "configuration.md").read_text("utf-8")
    for name, info in DaemonSettings.model_fields.items():
        assert info.description, f"setting {name} has no description"
        assert f"| `{name}` | `{info.alias or 'PATCHBAY_' + name.upper()}` |" in text
