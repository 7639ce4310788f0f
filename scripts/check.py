"""Run every check the project has: lint, format, types, import layers, tests.

Usage (from the repository root, in the project's virtual environment):
    python scripts/check.py            # everything, the full test suite
    python scripts/check.py --smoke    # lint + the smoke subset of the tests
Extra arguments after ``--`` go to pytest.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(title: str, *cmd: str) -> None:
    print(f"==> {title}: {' '.join(cmd)}", flush=True)
    result = subprocess.run(cmd, cwd=REPO)
    if result.returncode != 0:
        print(f"FAILED: {title} (exit {result.returncode})", flush=True)
        sys.exit(result.returncode)


def main(argv: list[str]) -> None:
    smoke = "--smoke" in argv
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    # The example connector plugin: tests find it through its entry point, which exists
    # only once the package is installed (editable, so edits need no reinstall).
    pip = [str(BIN / "python"), "-m", "pip", "install", "--quiet", "--no-deps"]
    run("example plugin", *pip, "-e", "examples/contacts")
    run("ruff check", str(BIN / "ruff"), "check", ".")
    run("ruff format", str(BIN / "ruff"), "format", "--check", ".")
    run("mypy --strict", str(BIN / "mypy"))
    run("import layers", str(BIN / "lint-imports"), "--no-cache")
    pytest = [str(BIN / "python"), "-m", "pytest"]
    workers = os.environ.get("PATCHBAY_TEST_WORKERS", "2")
    if workers != "0":
        pytest += ["-n", workers]
    if smoke:
        pytest += ["-m", "smoke"]
    run("tests", *pytest, *extra)


if __name__ == "__main__":
    main(sys.argv[1:])
