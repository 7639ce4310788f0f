"""Write docs/configuration.md from the daemon's settings model (DaemonSettings).

Usage (from the repository root, in the project's virtual environment):
    python scripts/config_reference.py          # rewrite docs/configuration.md
    python scripts/config_reference.py --check  # exit 1 if the file is out of date

The settings model is the one source: each field's environment variable, type, default,
bounds and description come from it, so the reference cannot drift from the code (a test
runs ``--check``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from patchbay.runtime.settings import DaemonSettings

REPO = Path(__file__).resolve().parents[1]
TARGET = REPO / "docs" / "configuration.md"

HEADER = """# Configuration reference

Generated from `patchbay.runtime.settings.DaemonSettings` by
`scripts/config_reference.py`; do not edit by hand (a test checks it is current).

`patchbay run` reads each setting from the environment variable `PATCHBAY_<NAME>`, then
from the JSON file given with `--config FILE` (keys are the setting names below), then
from the command line (`--database-url`, `--schema`, `--dev`). Lists and mappings are
given as JSON in the environment (`PATCHBAY_NOTIFY_EMAIL_TO='["ops@example.com"]'`). A
value out of range or of the wrong type stops the daemon at start with a message naming
the setting.

| setting | environment | type | default | bounds | what it does |
|---|---|---|---|---|---|
"""


def _type(info: FieldInfo) -> str:
    if get_origin(info.annotation) is Literal:
        return " or ".join(f"`{value}`" for value in get_args(info.annotation))
    text = str(info.annotation).replace("typing.", "")
    for prefix in ("<class '", "'>"):
        text = text.replace(prefix, "")
    return text.replace("|", "or")


def _default(info: FieldInfo) -> str:
    if info.default_factory is not None:
        value: Any = info.default_factory()  # type: ignore[call-arg]
    elif info.default is PydanticUndefined:
        return "required"
    else:
        value = info.default
    if value is None:
        return "unset"
    return f"`{json.dumps(value)}`" if not isinstance(value, str) else f"`{value}`"


def _bounds(info: FieldInfo) -> str:
    parts = []
    for item in info.metadata:
        if isinstance(item, Ge):
            parts.append(f">= {item.ge}")
        elif isinstance(item, Gt):
            parts.append(f"> {item.gt}")
        elif isinstance(item, Le):
            parts.append(f"<= {item.le}")
        elif isinstance(item, Lt):
            parts.append(f"< {item.lt}")
    return ", ".join(parts)


def render() -> str:
    rows = []
    for name, info in DaemonSettings.model_fields.items():
        env = info.alias or f"PATCHBAY_{name.upper()}"
        description = (info.description or "").replace("|", "\\|").replace("\n", " ")
        rows.append(
            f"| `{name}` | `{env}` | {_type(info)} | {_default(info)} | {_bounds(info)} "
            f"| {description} |"
        )
    return HEADER + "\n".join(rows) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not TARGET.exists() or TARGET.read_text("utf-8") != text:
            print(f"{TARGET} is out of date: run python scripts/config_reference.py")
            return 1
        return 0
    TARGET.write_text(text, "utf-8")
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
